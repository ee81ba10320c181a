"""Binary codes: lookup-free quantization (LFQ; Yu et al. 2023, MAGVIT-v2) and binary spherical
quantization (BSQ; Zhao et al. 2024).

Each group of the latent is projected to ``bits`` channels and each channel keeps only its sign,
so a token is a ``bits``-bit integer and the implicit codebook holds ``2 ** bits`` codes that need
no lookup and cannot die. BSQ (``spherical=True``) first puts the projection on the unit sphere,
so codes are the corners of a hypercube scaled to unit norm; LFQ (``spherical=False``) keeps
values of +-1. Both learn to use their codes through an entropy term: each vector's code should
be certain (low per-vector entropy) while the batch spreads over the codes (high entropy of the
mean). Both factorise over bits, so they cost O(bits), not O(2 ** bits).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from codec.quantization.base import BaseQuantizer, QuantizedResult, check_group_split
from codec.quantization.distributed import is_distributed
from codec.quantization.stats import codebook_stats

MAX_BITS = 24  # the code histograms hold 2 ** bits counts per codebook


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of Bernoulli(p), elementwise."""
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(p * p.log() + (1 - p) * (1 - p).log())


def mean_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over every rank, differentiable (each rank's batch is one part of the
    codebook's usage, so the entropy of the mean must see them all)."""
    if not is_distributed():
        return tensor
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(tensor) / dist.get_world_size()


class BinarySphericalQuantizer(BaseQuantizer):
    """``groups`` x ``bits``-bit binary codes per frame; BSQ when ``spherical``, else LFQ."""

    powers: torch.Tensor

    def __init__(
        self,
        dim: int,
        bits: int = 10,
        groups: int = 1,
        spherical: bool = True,
        commitment_weight: float = 0.25,
        entropy_weight: float = 0.1,
        diversity_weight: float = 1.0,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if not 1 <= bits <= MAX_BITS:
            raise ValueError(f"bits={bits} must lie between 1 and {MAX_BITS}")
        check_group_split(dim, groups)
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} must be positive")
        self.dim, self.bits, self.groups, self.layers = dim, bits, groups, 1
        self.spherical = spherical
        self.codebook_size = 2**bits
        self.commitment_weight = commitment_weight
        self.entropy_weight = entropy_weight
        self.diversity_weight = diversity_weight
        self.temperature = temperature
        self.code_scale = bits**-0.5 if spherical else 1.0
        self.in_proj = nn.Conv1d(dim, groups * bits, 1, groups=groups)
        self.out_proj = nn.Conv1d(groups * bits, dim, 1, groups=groups)
        self.register_buffer("powers", 2 ** torch.arange(bits), persistent=False)

    def facts(self) -> dict:
        return {**super().facts(), "bits": self.bits, "spherical": self.spherical}

    def codebook_shapes(self) -> list[tuple[int, int]]:
        return [(self.codebook_size, self.bits)] * self.groups

    def _project(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent [B, dim, T] -> [B, G, T, bits], on the unit sphere for BSQ."""
        z = rearrange(self.in_proj(latent), "b (g w) t -> b g t w", g=self.groups)
        return F.normalize(z, dim=-1) if self.spherical else z

    def _codes(self, z: torch.Tensor) -> torch.Tensor:
        return ((z.detach() > 0).long() * self.powers).sum(-1)

    def _out(self, values: torch.Tensor) -> torch.Tensor:
        return self.out_proj(rearrange(values, "b g t w -> b (g w) t"))

    def _entropy_loss(self, z: torch.Tensor) -> torch.Tensor:
        """Per-vector entropy minus ``diversity_weight`` x the entropy of the batch's mean code
        distribution, both factorised over bits (the soft assignment to the nearer sign)."""
        p_one = torch.sigmoid(4 * z * self.code_scale / self.temperature)
        per_vector = binary_entropy(p_one).sum(-1).mean()
        mean_p = mean_over_ranks(rearrange(p_one, "b g t w -> (b t) g w").mean(0))
        return per_vector - self.diversity_weight * binary_entropy(mean_p).sum(-1).mean()

    def forward(self, latent: torch.Tensor, n_layers: int | None = None) -> QuantizedResult:
        self.check_layers(n_layers)
        with torch.autocast(device_type=latent.device.type, enabled=False):
            z = self._project(latent.float())
            hard = torch.where(z > 0, self.code_scale, -self.code_scale)
            commitment = (z - hard).pow(2).mean()
            entropy = self._entropy_loss(z) if self.training else z.new_zeros(())
            quantized = self._out(z + (hard - z).detach())
        codes = self._codes(z)
        losses = {
            "commitment": commitment,
            "entropy": entropy,
            "codebook": z.new_zeros(()),
            "total": self.commitment_weight * commitment + self.entropy_weight * entropy,
        }
        return QuantizedResult(quantized, codes, losses, codebook_stats(codes, self.codebook_size))

    @torch.no_grad()
    def encode(self, latent: torch.Tensor, n_layers: int | None = None) -> torch.Tensor:
        self.check_layers(n_layers)
        return self._codes(self._project(latent.float()))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.dim() != 3 or codes.shape[1] != self.groups:
            raise ValueError(f"codes must have shape [B, groups={self.groups}, T]; got {tuple(codes.shape)}")
        bits = torch.div(codes.unsqueeze(-1), self.powers, rounding_mode="floor") % 2
        return self._out((bits.float() * 2 - 1) * self.code_scale)
