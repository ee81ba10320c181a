"""HiFi-GAN's multi-period discriminator: the waveform folded into [T/p, p] images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from codec.discriminators.base import DiscriminatorOutput, maybe_weight_norm, run_conv_stack


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, channels: Sequence[int], kernel_size: int, stride: int, weight_norm: bool) -> None:
        super().__init__()
        self.period = period
        layers = []
        width = 1
        for i, out in enumerate(channels):
            step = stride if i < len(channels) - 1 else 1
            layers.append(
                maybe_weight_norm(
                    nn.Conv2d(width, out, (kernel_size, 1), (step, 1), padding=(kernel_size // 2, 0)), weight_norm
                )
            )
            width = out
        self.convs = nn.ModuleList(layers)
        self.post = maybe_weight_norm(nn.Conv2d(width, 1, (3, 1), padding=(1, 0)), weight_norm)
        self.activation = nn.LeakyReLU(0.1, inplace=True)  # on a fresh conv output: no copy, same gradient

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:
        x = F.pad(wav, (0, (-wav.shape[-1]) % self.period))
        x = rearrange(x, "b c (frames period) -> b c frames period", period=self.period)
        logits, features = run_conv_stack(x, self.convs, self.post, self.activation)
        return DiscriminatorOutput(logits.flatten(1, -1), features)


class MultiPeriodDiscriminator(nn.Module):
    """One :class:`PeriodDiscriminator` per prime period (HiFi-GAN: 2, 3, 5, 7, 11).

    ``channels`` defaults to a reduced HiFi-GAN stack, as HiFi-Codec does to match MS-STFT's size.
    """

    def __init__(
        self,
        periods: Sequence[int] = (2, 3, 5, 7, 11),
        channels: Sequence[int] = (16, 32, 64, 128, 128),
        kernel_size: int = 5,
        stride: int = 3,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        if not periods:
            raise ValueError("periods must list at least one period")
        self.periods, self.channels, self.kernel_size = [int(p) for p in periods], list(channels), kernel_size
        self.stride, self.weight_norm = stride, weight_norm
        self.subs = nn.ModuleList(
            PeriodDiscriminator(int(p), list(channels), kernel_size, stride, weight_norm) for p in periods
        )
        self.num_outputs = len(self.subs)

    def forward(self, wav: torch.Tensor) -> list[DiscriminatorOutput]:
        return [sub(wav) for sub in self.subs]
