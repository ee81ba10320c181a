"""Finite scalar quantization (FSQ; Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE
Made Simple").

Each group of the latent is projected to ``len(levels)`` channels, each channel is bounded to
``levels[i]`` values and rounded (straight-through), and the rounded vector is projected back.
There is no codebook to learn, so nothing can collapse or go dead; the implicit codebook holds
``prod(levels)`` codes, and a token is the mixed-radix index of the rounded vector.

With ``layers`` above 1 it is residual FSQ: layer ``l`` quantizes what the layers before it left,
scaled up by ``(levels - 1) ** l`` so that its finer grid covers the previous layer's step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from einops import rearrange
from torch import nn

from codec.quantization.base import BaseQuantizer, QuantizedResult, check_group_split
from codec.quantization.stats import codebook_stats

# Keeps tanh's output strictly inside the outermost levels, so rounding never lands outside.
BOUND_EPSILON = 1e-3


class FiniteScalarQuantizer(BaseQuantizer):
    """``groups`` independent FSQ quantizers over equal channel slices of a ``dim``-channel latent,
    each ``layers`` deep (residual FSQ when ``layers > 1``)."""

    level_counts: torch.Tensor
    half_width: torch.Tensor
    basis: torch.Tensor
    scales: torch.Tensor

    def __init__(self, dim: int, levels: Sequence[int] = (8, 5, 5, 5), groups: int = 1, layers: int = 1) -> None:
        super().__init__()
        levels = [int(level) for level in levels]
        if not levels or any(level < 2 for level in levels):
            raise ValueError(f"levels={levels} must be a non-empty list of integers of at least 2")
        check_group_split(dim, groups)
        if layers < 1:
            raise ValueError(f"layers={layers} must be at least 1")
        self.dim = dim
        self.levels = levels
        self.groups = groups
        self.layers = layers
        self.codebook_size = math.prod(levels)
        width = len(levels)
        self.in_proj = nn.Conv1d(dim, groups * width, 1, groups=groups)
        self.out_proj = nn.Conv1d(groups * width, dim, 1, groups=groups)
        levels_tensor = torch.tensor(levels, dtype=torch.float32)
        basis = torch.cumprod(torch.tensor([1] + levels[:-1], dtype=torch.long), dim=0)
        self.register_buffer("level_counts", levels_tensor, persistent=False)
        self.register_buffer("half_width", torch.div(levels_tensor, 2, rounding_mode="floor"), persistent=False)
        self.register_buffer("basis", basis, persistent=False)
        depth = torch.arange(layers, dtype=torch.float32).unsqueeze(1)
        self.register_buffer("scales", (levels_tensor - 1) ** -depth, persistent=False)  # [layers, width]

    def facts(self) -> dict:
        return {**super().facts(), "levels": [int(v) for v in self.level_counts]}

    def codebook_shapes(self) -> list[tuple[int, int]]:
        """Each group's and layer's implicit codebook: every combination of levels, one value per channel."""
        return [(math.prod(int(v) for v in self.level_counts), len(self.level_counts))] * (self.groups * self.layers)

    # -- scalar quantization ------------------------------------------------------------------
    def _bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash [..., width] so that rounding gives ``levels[i]`` integer values per channel,
        centred on 0 (even levels are shifted by half a step)."""
        half_range = (self.level_counts - 1) * (1 - BOUND_EPSILON) / 2
        offset = torch.where(self.level_counts % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_range)
        return torch.tanh(z + shift) * half_range - offset

    def _round(self, z: torch.Tensor) -> torch.Tensor:
        """[..., width] -> rounded levels, with a straight-through gradient."""
        bounded = self._bound(z)
        return bounded + (torch.round(bounded) - bounded).detach()

    def _to_codes(self, rounded: torch.Tensor) -> torch.Tensor:
        digits = (rounded.detach() + self.half_width).round().long()
        return (digits * self.basis).sum(dim=-1)

    def _quantize(self, latent: torch.Tensor, n_layers: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent [B, dim, T] -> (quantized latent [B, dim, T], codes [B, G * n_layers, T], group-major)."""
        residual = rearrange(self.in_proj(latent), "b (g w) t -> b g t w", g=self.groups)
        total = torch.zeros_like(residual)
        codes = []
        for layer in range(n_layers):
            scale = self.scales[layer]
            rounded = self._round(residual / scale)
            quantized = rounded / self.half_width * scale
            total = total + quantized
            residual = residual - quantized.detach()
            codes.append(self._to_codes(rounded))
        return self._project_out(total), rearrange(torch.stack(codes, dim=2), "b g l t -> b (g l) t")

    def _project_out(self, normalized: torch.Tensor) -> torch.Tensor:
        return self.out_proj(rearrange(normalized, "b g t w -> b (g w) t"))

    # -- contract -------------------------------------------------------------------------------
    def forward(self, latent: torch.Tensor, n_layers: int | None = None) -> QuantizedResult:
        n_layers = self.check_layers(n_layers)
        with torch.autocast(device_type=latent.device.type, enabled=False):
            quantized, codes = self._quantize(latent.float(), n_layers)
        zero = latent.new_zeros((), dtype=torch.float32)
        losses = {"commitment": zero, "codebook": zero, "total": zero}
        return QuantizedResult(quantized, codes, losses, codebook_stats(codes, self.codebook_size))

    @torch.no_grad()
    def encode(self, latent: torch.Tensor, n_layers: int | None = None) -> torch.Tensor:
        return self._quantize(latent.float(), self.check_layers(n_layers))[1]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.dim() != 3 or codes.shape[1] % self.groups:
            raise ValueError(
                f"codes must have shape [B, groups*n, T] with groups={self.groups}; got {tuple(codes.shape)}"
            )
        n_layers = self.check_layers(codes.shape[1] // self.groups)
        layered = rearrange(codes, "b (g l) t -> b g l t", g=self.groups)
        digits = torch.div(layered.unsqueeze(-1), self.basis, rounding_mode="floor") % self.level_counts.long()
        normalized = (digits.float() - self.half_width) / self.half_width * self.scales[:n_layers, None, :]
        return self._project_out(normalized.sum(dim=2))
