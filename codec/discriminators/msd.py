"""HiFi-GAN / MelGAN multi-scale discriminator on progressively average-pooled waveforms."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from codec.discriminators.base import DiscriminatorOutput, maybe_weight_norm, run_conv_stack

# HiFi-GAN's layer shapes (kernel, stride, max groups); channel widths come from config.
_LAYOUT = ((15, 1, 1), (41, 2, 4), (41, 2, 16), (41, 4, 16), (41, 4, 16), (41, 1, 16), (5, 1, 1))


class ScaleDiscriminator(nn.Module):
    def __init__(self, channels: Sequence[int], weight_norm: bool) -> None:
        super().__init__()
        if len(channels) != len(_LAYOUT):
            raise ValueError(f"channels must list {len(_LAYOUT)} widths (one per MSD layer); got {list(channels)}")
        layers = []
        width = 1
        for out, (kernel, stride, max_groups) in zip(channels, _LAYOUT):
            groups = math.gcd(math.gcd(width, out), max_groups)
            layers.append(
                maybe_weight_norm(
                    nn.Conv1d(width, out, kernel, stride, groups=groups, padding=kernel // 2), weight_norm
                )
            )
            width = out
        self.convs = nn.ModuleList(layers)
        self.post = maybe_weight_norm(nn.Conv1d(width, 1, 3, padding=1), weight_norm)
        self.activation = nn.LeakyReLU(0.1, inplace=True)  # on a fresh conv output: no copy, same gradient

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:
        x = wav
        logits, features = run_conv_stack(x, self.convs, self.post, self.activation)
        return DiscriminatorOutput(logits.flatten(1, -1), features)


class MultiScaleDiscriminator(nn.Module):
    """``scales`` waveform discriminators, each seeing the previous input pooled by 2."""

    def __init__(
        self,
        scales: int = 3,
        channels: Sequence[int] = (16, 32, 64, 128, 128, 128, 128),
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        if scales < 1:
            raise ValueError(f"scales={scales} must be at least 1")
        self.scales, self.channels, self.weight_norm = scales, list(channels), weight_norm
        self.subs = nn.ModuleList(ScaleDiscriminator(list(channels), weight_norm) for _ in range(scales))
        self.pool = nn.AvgPool1d(4, 2, padding=2)
        self.num_outputs = scales

    def forward(self, wav: torch.Tensor) -> list[DiscriminatorOutput]:
        outputs = []
        x = wav
        for i, sub in enumerate(self.subs):
            if i:
                x = self.pool(x)
            outputs.append(sub(x))
        return outputs
