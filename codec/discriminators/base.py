"""The contract every discriminator follows and the container that mixes several."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class DiscriminatorOutput(NamedTuple):
    """One sub-discriminator's verdict: logits and the intermediate feature maps."""

    logits: torch.Tensor
    features: list[torch.Tensor]


def maybe_weight_norm(module: nn.Module, enabled: bool) -> nn.Module:
    return weight_norm(module) if enabled else module


def complex_spectrogram(wav: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """[B, 1, T] -> [B, 2, frames, bins]: real and imaginary STFT parts as channels."""
    window = torch.hann_window(n_fft, device=wav.device, dtype=wav.dtype)
    spec = torch.stft(wav.squeeze(1), n_fft, hop_length, window=window, center=True, pad_mode="constant", normalized=True, return_complex=True)
    return torch.view_as_real(spec).permute(0, 3, 2, 1)


def run_conv_stack(x: torch.Tensor, convs: nn.ModuleList, post: nn.Module, activation: nn.Module) -> DiscriminatorOutput:
    """Activated convs then a final conv; every intermediate map is a feature for feature matching."""
    features = []
    for conv in convs:
        x = activation(conv(x))
        features.append(x)
    logits = post(x)
    features.append(logits)
    return DiscriminatorOutput(logits, features)


class MultiDiscriminator(nn.Module):
    """Runs every selected discriminator; each returns a list of :class:`DiscriminatorOutput`."""

    def __init__(self, discriminators: dict[str, nn.Module]) -> None:
        super().__init__()
        if not discriminators:
            raise ValueError("discriminator: at least one discriminator must be selected")
        self.discriminators = nn.ModuleDict(discriminators)

    def names(self) -> list[str]:
        """A name per sub-discriminator, in output order, for logging."""
        names = []
        for name, disc in self.discriminators.items():
            names += [f"{name}_{i}" for i in range(disc.num_outputs)]
        return names

    def forward(self, wav: torch.Tensor) -> list[DiscriminatorOutput]:
        outputs: list[DiscriminatorOutput] = []
        for disc in self.discriminators.values():
            outputs.extend(disc(wav))
        return outputs
