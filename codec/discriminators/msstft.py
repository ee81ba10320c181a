"""EnCodec's multi-scale STFT discriminator on the complex spectrum."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from codec.discriminators.base import DiscriminatorOutput, maybe_weight_norm, run_conv_stack, spectrogram_image
from codec.spectral import SpectrumBank


class STFTDiscriminator(nn.Module):
    """2D convs over (time, frequency) with time dilations and frequency stride 2."""

    def __init__(
        self,
        n_fft: int,
        filters: int,
        filters_scale: int,
        max_filters: int,
        dilations: Sequence[int],
        weight_norm: bool,
    ) -> None:
        super().__init__()
        self.n_fft = n_fft
        kernel = (3, 9)
        pad = (1, 4)
        layers = [maybe_weight_norm(nn.Conv2d(2, filters, kernel, padding=pad), weight_norm)]
        width = filters
        for i, dilation in enumerate(dilations):
            out = min(filters * filters_scale ** (i + 1), max_filters)
            layers.append(
                maybe_weight_norm(
                    nn.Conv2d(width, out, kernel, stride=(1, 2), dilation=(dilation, 1), padding=(dilation, 4)),
                    weight_norm,
                )
            )
            width = out
        layers.append(maybe_weight_norm(nn.Conv2d(width, width, (3, 3), padding=(1, 1)), weight_norm))
        self.convs = nn.ModuleList(layers)
        self.post = maybe_weight_norm(nn.Conv2d(width, 1, (3, 3), padding=(1, 1)), weight_norm)
        self.activation = nn.LeakyReLU(0.2, inplace=True)  # on a fresh conv output: no copy, same gradient

    def forward(self, wav: torch.Tensor, spectra: SpectrumBank | None = None) -> DiscriminatorOutput:
        x = spectrogram_image(wav, self.n_fft, spectra)
        return run_conv_stack(x, self.convs, self.post, self.activation)


class MultiScaleSTFTDiscriminator(nn.Module):
    """One :class:`STFTDiscriminator` per window length (EnCodec: 2048 ... 128)."""

    def __init__(
        self,
        windows: Sequence[int] = (2048, 1024, 512, 256, 128),
        filters: int = 32,
        filters_scale: int = 1,
        max_filters: int = 1024,
        dilations: Sequence[int] = (1, 2, 4),
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        if not windows:
            raise ValueError("windows must list at least one STFT window length")
        self.windows, self.filters, self.filters_scale = [int(w) for w in windows], filters, filters_scale
        self.max_filters, self.dilations, self.weight_norm = max_filters, list(dilations), weight_norm
        self.subs = nn.ModuleList(
            STFTDiscriminator(int(w), filters, filters_scale, max_filters, list(dilations), weight_norm)
            for w in windows
        )
        self.num_outputs = len(self.subs)
        self.stft_windows = tuple(sub.n_fft for sub in self.subs)

    def forward(self, wav: torch.Tensor, spectra: SpectrumBank | None = None) -> list[DiscriminatorOutput]:
        return [sub(wav, spectra) for sub in self.subs]
