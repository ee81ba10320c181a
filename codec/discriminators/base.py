"""The contract every discriminator follows and the container that mixes several."""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import torch
from einops import rearrange
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from codec.spectral import SpectrumBank, spectrum


class DiscriminatorOutput(NamedTuple):
    """One sub-discriminator's verdict: logits and the intermediate feature maps."""

    logits: torch.Tensor
    features: list[torch.Tensor]


def maybe_weight_norm(module: nn.Module, enabled: bool) -> nn.Module:
    return weight_norm(module) if enabled else module


def spectrogram_image(wav: torch.Tensor, n_fft: int, spectra: SpectrumBank | None) -> torch.Tensor:
    """[B, 1, T] -> [B, 2, frames, bins]: real and imaginary STFT parts as channels, scaled by
    ``n_fft ** -0.5`` (an orthonormal STFT); taken from ``spectra`` when it holds ``n_fft``."""
    spec = spectrum(wav, n_fft, spectra)
    return rearrange(torch.view_as_real(spec), "b bins frames part -> b part frames bins") * n_fft**-0.5


def run_conv_stack(
    x: torch.Tensor, convs: nn.ModuleList, post: nn.Module, activation: nn.Module
) -> DiscriminatorOutput:
    """Activated convs then a final conv; every intermediate map is a feature for feature matching."""
    features = []
    for conv in convs:
        x = activation(conv(x))
        features.append(x)
    logits = post(x)
    features.append(logits)
    return DiscriminatorOutput(logits, features)


class MultiDiscriminator(nn.Module):
    """Runs every selected discriminator; each returns a list of :class:`DiscriminatorOutput`.

    A discriminator that lists the STFT window lengths it reads in an ``stft_windows`` attribute
    is called as ``disc(wav, spectra)`` with the step's shared spectra; others as ``disc(wav)``.
    """

    def __init__(self, discriminators: dict[str, nn.Module]) -> None:
        super().__init__()
        if not discriminators:
            raise ValueError("discriminator: at least one discriminator must be selected")
        self.discriminators = nn.ModuleDict(discriminators)

    def names(self) -> list[str]:
        """A name per sub-discriminator, in output order, for logging."""
        names = []
        for name, disc in self.discriminators.items():
            outputs: int = cast(Any, disc).num_outputs  # every sub-discriminator declares its output count
            names += [f"{name}_{i}" for i in range(outputs)]
        return names

    def stft_windows(self) -> set[int]:
        """Every STFT window length the selected discriminators read."""
        return {int(n) for disc in self.discriminators.values() for n in getattr(disc, "stft_windows", ())}

    def forward(self, wav: torch.Tensor, spectra: SpectrumBank | None = None) -> list[DiscriminatorOutput]:
        outputs: list[DiscriminatorOutput] = []
        for disc in self.discriminators.values():
            outputs.extend(disc(wav, spectra) if getattr(disc, "stft_windows", None) else disc(wav))
        return outputs
