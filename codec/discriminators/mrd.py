"""DAC's multi-band multi-resolution STFT discriminator: separate conv stacks per frequency band."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from codec.discriminators.base import DiscriminatorOutput, maybe_weight_norm, spectrogram_image
from codec.spectral import SpectrumBank

DEFAULT_BANDS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))


class BandSplitSTFTDiscriminator(nn.Module):
    def __init__(self, n_fft: int, bands: Sequence[Sequence[float]], channels: int, weight_norm: bool) -> None:
        super().__init__()
        self.n_fft = n_fft
        bins = n_fft // 2 + 1
        self.band_edges = [(int(lo * bins), int(hi * bins)) for lo, hi in bands]
        if any(hi <= lo for lo, hi in self.band_edges):
            raise ValueError(
                f"bands={list(bands)} must be increasing fractions that give each band at least one bin at "
                f"n_fft={n_fft}"
            )

        def stack() -> nn.ModuleList:
            return nn.ModuleList(
                [
                    maybe_weight_norm(nn.Conv2d(2, channels, (3, 9), padding=(1, 4)), weight_norm),
                    maybe_weight_norm(nn.Conv2d(channels, channels, (3, 9), (1, 2), padding=(1, 4)), weight_norm),
                    maybe_weight_norm(nn.Conv2d(channels, channels, (3, 9), (1, 2), padding=(1, 4)), weight_norm),
                    maybe_weight_norm(nn.Conv2d(channels, channels, (3, 9), (1, 2), padding=(1, 4)), weight_norm),
                    maybe_weight_norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1)), weight_norm),
                ]
            )

        self.band_convs = nn.ModuleList(stack() for _ in self.band_edges)
        self.post = maybe_weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)), weight_norm)
        self.activation = nn.LeakyReLU(0.1, inplace=True)  # on a fresh conv output: no copy, same gradient

    def forward(self, wav: torch.Tensor, spectra: SpectrumBank | None = None) -> DiscriminatorOutput:
        spec = spectrogram_image(wav, self.n_fft, spectra)
        features, band_outputs = [], []
        for (lo, hi), convs in zip(self.band_edges, self.band_convs):
            x = spec[..., lo:hi]
            for conv in cast(nn.ModuleList, convs):
                x = self.activation(conv(x))
                features.append(x)
            band_outputs.append(x)
        logits = self.post(torch.cat(band_outputs, dim=-1))
        features.append(logits)
        return DiscriminatorOutput(logits, features)


class MultiBandMultiResolutionDiscriminator(nn.Module):
    """One band-split STFT discriminator per window length (DAC: 2048, 1024, 512)."""

    def __init__(
        self,
        windows: Sequence[int] = (2048, 1024, 512),
        bands: Sequence[Sequence[float]] = DEFAULT_BANDS,
        channels: int = 32,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        if not windows:
            raise ValueError("windows must list at least one STFT window length")
        self.windows, self.bands, self.channels, self.weight_norm = (
            [int(w) for w in windows],
            [list(b) for b in bands],
            channels,
            weight_norm,
        )
        self.subs = nn.ModuleList(BandSplitSTFTDiscriminator(int(w), bands, channels, weight_norm) for w in windows)
        self.num_outputs = len(self.subs)
        self.stft_windows = tuple(sub.n_fft for sub in self.subs)

    def forward(self, wav: torch.Tensor, spectra: SpectrumBank | None = None) -> list[DiscriminatorOutput]:
        return [sub(wav, spectra) for sub in self.subs]
