"""One vector-quantization codebook with an EMA, a gradient or a SimVQ update rule.

The same class covers EnCodec/SoundStream codebooks (EMA, k-means init, dead-code
replacement), DAC's "improved VQ" (factorized low-dimensional lookup on L2-normalised
vectors, learned by gradient) and SimVQ (Zhu et al. 2024: the codes are a frozen random basis
times one learned linear map, so every code moves with each update and none is left behind).

Dead codes are defined relative to a code's fair share, so the rule means the same at any batch
size: a code whose usage EMA falls below ``dead_code_threshold`` times (vectors per step /
codebook size) is re-drawn from the batch. (EnCodec's absolute "fewer than 2 assignments per step"
assumed about 4.7 expected assignments per code, i.e. a fraction of about 0.4; at a demo's 100
frames per step for 256 codes that absolute rule re-drew nearly every code every step.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm

from codec.quantization.distributed import all_reduce_sum_, broadcast_
from codec.quantization.kmeans import kmeans

RULES = ("ema", "gradient", "simvq")


@dataclass
class CodebookOutput:
    """What one codebook returns for a residual [B, D, T]."""

    quantized: torch.Tensor  # [B, D, T], the code vectors; gradient only to the output projection
    codes: torch.Tensor  # [B, T] int64
    commitment: torch.Tensor  # [B] per-item mean squared error, gradient to the encoder
    codebook: torch.Tensor  # [B] per-item codebook loss (zeros for the EMA rule)
    replaced: torch.Tensor  # [] codes re-drawn as dead this step


def _checked_lookup_dim(
    dim: int, codebook_size: int, codebook_dim: int | None, rule: str, decay: float, dead_code_threshold: float
) -> int:
    """The dimension codes are looked up in, after refusing settings that cannot work (naming them)."""
    if rule not in RULES:
        raise ValueError(f"rule={rule!r} is unknown; choose one of {RULES}")
    if codebook_size < 2:
        raise ValueError(f"codebook_size={codebook_size} must be at least 2")
    lookup_dim = dim if codebook_dim is None else int(codebook_dim)
    if lookup_dim > dim or lookup_dim < 1:
        raise ValueError(f"codebook_dim={codebook_dim} must be between 1 and the group dimension {dim}")
    if not 0.0 < decay < 1.0:
        raise ValueError(f"decay={decay} must lie in (0, 1)")
    if not 0.0 <= dead_code_threshold < 1.0:
        raise ValueError(
            f"dead_code_threshold={dead_code_threshold} must lie in [0, 1): it is a fraction of the mean code "
            "usage, and at 1 or more even a uniformly used codebook counts as dead"
        )
    return lookup_dim


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantizer of ``dim``-dimensional vectors with ``codebook_size`` codes.

    With ``codebook_dim`` set below ``dim`` the lookup happens after a learned 1x1 projection
    to ``codebook_dim`` and is projected back afterwards (DAC's factorized codes).
    """

    embed: torch.Tensor
    embed_sum: torch.Tensor
    cluster_size: torch.Tensor
    initialized: torch.Tensor

    def __init__(
        self,
        dim: int,
        codebook_size: int = 1024,
        codebook_dim: int | None = None,
        l2_normalize: bool = False,
        rule: str = "ema",
        decay: float = 0.99,
        epsilon: float = 1e-5,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        dead_code_threshold: float = 0.4,
    ) -> None:
        super().__init__()
        lookup_dim = _checked_lookup_dim(dim, codebook_size, codebook_dim, rule, decay, dead_code_threshold)
        if rule == "simvq" and (kmeans_init or dead_code_threshold > 0):
            raise ValueError(
                f"rule='simvq' keeps its random basis: set kmeans_init=false and dead_code_threshold=0 "
                f"(got kmeans_init={kmeans_init}, dead_code_threshold={dead_code_threshold}); codebook_rule=simvq does"
            )
        self.dim = dim
        self.codebook_size = codebook_size
        self.codebook_dim = lookup_dim
        self.l2_normalize = l2_normalize
        self.rule = rule
        self.decay = decay
        self.epsilon = epsilon
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters
        self.dead_code_threshold = dead_code_threshold

        projected = lookup_dim != dim
        self.in_proj: nn.Module = weight_norm(nn.Conv1d(dim, lookup_dim, 1)) if projected else nn.Identity()
        self.out_proj: nn.Module = weight_norm(nn.Conv1d(lookup_dim, dim, 1)) if projected else nn.Identity()

        initial = torch.zeros(codebook_size, lookup_dim) if kmeans_init else torch.randn(codebook_size, lookup_dim)
        # SimVQ: the basis stays as drawn (scaled to the unit-variance latents' size); the map learns.
        self.code_map: nn.Module = nn.Linear(lookup_dim, lookup_dim, bias=False) if rule == "simvq" else nn.Identity()
        if rule == "gradient":
            self.embed = nn.Parameter(initial)
        elif rule == "simvq":
            self.register_buffer("embed", torch.randn(codebook_size, lookup_dim) * lookup_dim**-0.5)
        else:
            self.register_buffer("embed", initial)
            self.register_buffer("embed_sum", initial.clone())
        # EMA of per-code usage counts drives dead-code replacement for both rules.
        self.register_buffer("cluster_size", torch.zeros(codebook_size) if kmeans_init else torch.ones(codebook_size))
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self._initialized_cache = not kmeans_init

    # -- lookup ---------------------------------------------------------------------------
    def codebook_vectors(self) -> torch.Tensor:
        """The vectors codes index, in the lookup space ([K, codebook_dim])."""
        vectors = self.code_map(self.embed)
        return F.normalize(vectors, dim=-1) if self.l2_normalize else vectors

    def _lookup_space(self, residual: torch.Tensor) -> torch.Tensor:
        """[B, D, T] -> lookup vectors [B, T, codebook_dim]."""
        z = rearrange(self.in_proj(residual), "b d t -> b t d")
        return F.normalize(z, dim=-1) if self.l2_normalize else z

    def nearest(self, vectors: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each vector [..., codebook_dim]."""
        codebook = self.codebook_vectors()
        flat = vectors.reshape(-1, self.codebook_dim)
        distances = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.t() + codebook.pow(2).sum(1)
        return distances.argmin(dim=1).view(vectors.shape[:-1])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, T] -> quantized vectors [B, D, T], exactly as an eval-mode forward."""
        return self.out_proj(rearrange(F.embedding(codes, self.codebook_vectors()), "b t d -> b d t"))

    def encode(self, residual: torch.Tensor) -> torch.Tensor:
        return self.nearest(self._lookup_space(residual))

    # -- forward --------------------------------------------------------------------------
    def forward(self, residual: torch.Tensor, item_weights: torch.Tensor | None = None) -> CodebookOutput:
        """Quantize ``residual`` [B, D, T]; ``item_weights`` [B] (0 or 1) masks dropped items."""
        batch, _, frames = residual.shape
        z = self._lookup_space(residual)
        if item_weights is None:
            item_weights = torch.ones(batch, device=residual.device, dtype=z.dtype)
        vector_weights = item_weights.to(z.dtype).repeat_interleave(frames)

        if self.training and not self._is_initialized():
            self._initialize(z.reshape(-1, self.codebook_dim).detach(), vector_weights)

        codes = self.nearest(z)
        zero = torch.zeros((), device=z.device, dtype=z.dtype)
        if not self.training:
            quantized = self.decode(codes)
            commit = (z - F.embedding(codes, self.codebook_vectors())).pow(2).mean(dim=(1, 2))
            return CodebookOutput(quantized, codes, commit, torch.zeros_like(commit), zero)

        z_q = F.embedding(codes, self.codebook_vectors())
        commitment = (z - z_q.detach()).pow(2).mean(dim=(1, 2))
        if self.rule != "ema":  # gradient and SimVQ codes learn from the codebook loss
            codebook_loss = (z_q - z.detach()).pow(2).mean(dim=(1, 2))
        else:
            codebook_loss = torch.zeros_like(commitment)
        replaced = self._update(z.reshape(-1, self.codebook_dim).detach(), codes.reshape(-1), vector_weights)
        # The encoder's gradient comes from the residual quantizer's one straight-through estimate
        # over the summed layers; here only the output projection learns from the reconstruction.
        quantized = self.out_proj(rearrange(z_q.detach(), "b t d -> b d t"))
        return CodebookOutput(quantized, codes, commitment, codebook_loss, replaced)

    # -- learning rule --------------------------------------------------------------------
    def _is_initialized(self) -> bool:
        if not self._initialized_cache:
            self._initialized_cache = bool(self.initialized)
        return self._initialized_cache

    @torch.no_grad()
    def _initialize(self, vectors: torch.Tensor, weights: torch.Tensor) -> None:
        """k-means on the first batch; rank 0's result is broadcast so all ranks agree."""
        active = vectors[weights > 0] if bool((weights > 0).any()) else vectors
        centroids = kmeans(active, self.codebook_size, self.kmeans_iters)
        assignment = torch.cdist(active, centroids).argmin(dim=1)
        sizes = torch.bincount(assignment, minlength=self.codebook_size).to(vectors.dtype)
        broadcast_(centroids)
        broadcast_(sizes)
        self.embed.data.copy_(centroids)
        self.cluster_size.copy_(sizes)
        if self.rule == "ema":
            self.embed_sum.copy_(centroids * sizes.unsqueeze(1))
        self.initialized.fill_(True)
        self._initialized_cache = True

    @torch.no_grad()
    def _update(self, vectors: torch.Tensor, codes: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """EMA statistics (reduced across ranks), EMA codebook update and dead-code replacement;
        returns the number of codes replaced (a device scalar, no host sync)."""
        counts = torch.zeros(self.codebook_size, device=vectors.device, dtype=vectors.dtype).index_add_(
            0, codes, weights
        )
        all_reduce_sum_(counts)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self.rule == "ema":
            sums = torch.zeros_like(self.embed_sum).index_add_(0, codes, vectors * weights.unsqueeze(1))
            all_reduce_sum_(sums)
            self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            total = self.cluster_size.sum()
            smoothed = (self.cluster_size + self.epsilon) / (total + self.codebook_size * self.epsilon) * total
            self.embed.copy_(self.embed_sum / smoothed.unsqueeze(1))
        if self.dead_code_threshold > 0:
            return self._replace_dead_codes(vectors, weights, counts.sum() / self.codebook_size)
        return torch.zeros((), device=vectors.device)

    @torch.no_grad()
    def _replace_dead_codes(
        self, vectors: torch.Tensor, weights: torch.Tensor, mean_usage: torch.Tensor
    ) -> torch.Tensor:
        """Move codes whose usage EMA fell below ``dead_code_threshold`` x the mean usage onto
        random batch vectors. The mean usage is this step's fair share (vectors seen on all ranks
        / codebook size), which re-drawn codes cannot inflate.

        A re-drawn code restarts at a random point of its grace period (usage between the
        threshold and the mean, log-uniform), so codes that stay unused are re-drawn spread out
        in time, about 1 / (grace steps) of them per step, never in synchronized waves.
        Done with ``torch.where`` over the whole codebook so no host sync is needed.
        """
        dead_codes = self.cluster_size < self.dead_code_threshold * mean_usage
        dead = rearrange(dead_codes, "k -> k 1")
        # Dropped items get a tiny weight instead of zero so sampling never fails.
        picks = torch.multinomial(weights + 1e-6, self.codebook_size, replacement=True)
        samples = broadcast_(vectors[picks].contiguous())
        phase = broadcast_(torch.rand(self.codebook_size, device=vectors.device))  # rank 0's draw on every rank
        restart = mean_usage * self.dead_code_threshold ** (1.0 - phase)
        self.embed.data.copy_(torch.where(dead, samples, self.embed.data))
        if self.rule == "ema":
            self.embed_sum.copy_(torch.where(dead, samples * rearrange(restart, "k -> k 1"), self.embed_sum))
        self.cluster_size.copy_(torch.where(dead_codes, restart, self.cluster_size))
        return dead_codes.sum().float()

    def churn_per_step(self, vectors_per_step: int) -> float:
        """Expected fraction of a uniformly used codebook re-drawn as dead per step.

        Each code is picked at rate lam = vectors_per_step / codebook_size per step; starting from
        the mean usage, its EMA falls below the threshold after k = ln(threshold) / ln(decay)
        steps without a pick, which happens at about lam * exp(-lam * k) per step.
        """
        if self.dead_code_threshold <= 0:
            return 0.0
        rate = vectors_per_step / self.codebook_size
        grace_steps = math.log(self.dead_code_threshold) / math.log(self.decay)
        return min(1.0, rate * math.exp(-rate * grace_steps))
