"""Group-residual vector quantization (HiFi-Codec, Algorithm 1).

The latent's channels are split into ``groups`` equal parts and each part is quantized by its
own residual VQ of ``layers`` codebooks. ``groups=1`` is plain RVQ (EnCodec, SoundStream);
``groups=1, layers=1`` is a single VQ.

Code order: ``codes[:, g * layers + l]`` is group ``g``'s residual layer ``l`` (group-major).
"""

from __future__ import annotations

from typing import cast

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from codec.quantization.base import BaseQuantizer, QuantizedResult
from codec.quantization.codebook import VectorQuantizer
from codec.quantization.stats import codebook_stats

DROPOUT_MODES = ("item", "batch")
GRADIENT_ESTIMATORS = ("ste", "rotation")
# A configuration that re-draws more than this fraction of a uniformly used codebook per step churns.
MAX_CHURN_PER_STEP = 0.01


def _checked_group_dim(
    dim: int, groups: int, layers: int, codebook_dim: int | None, dropout_prob: float, dropout_mode: str
) -> int:
    """Each group's share of the latent, after refusing a layout that cannot be built (naming the argument)."""
    if groups < 1 or layers < 1:
        raise ValueError(f"groups={groups} and layers={layers} must both be at least 1")
    if dim % groups:
        raise ValueError(f"groups={groups} does not divide dim={dim} (the encoder's latent dimension)")
    group_dim = dim // groups
    if codebook_dim is not None and codebook_dim > group_dim:
        raise ValueError(f"codebook_dim={codebook_dim} is above the group dimension dim/groups={group_dim}")
    if not 0.0 <= dropout_prob <= 1.0:
        raise ValueError(f"dropout_prob={dropout_prob} must lie in [0, 1]")
    if dropout_mode not in DROPOUT_MODES:
        raise ValueError(f"dropout_mode={dropout_mode!r} is unknown; choose one of {DROPOUT_MODES}")
    return group_dim


class GroupResidualVQ(BaseQuantizer):
    """G groups x L residual layers of :class:`VectorQuantizer`.

    Gradients follow the paper's eq. 4 and AudioCraft: each layer quantizes the residual
    ``r_l = z - sum_{j<l} q_j.detach()``, so every layer's commitment loss reaches the encoder
    with an identity Jacobian, and the decoder's gradient reaches the encoder through one
    straight-through estimate over the sum of the layers (not one per layer, which would be
    cancelled by the subtraction or multiplied by L).

    Loss terms (summed over groups and layers): ``commitment`` pulls the encoder towards its
    codes, ``codebook`` pulls codes towards the encoder (gradient rule only) and
    ``total = codebook + commitment_weight * commitment``.
    """

    def __init__(
        self,
        dim: int,
        groups: int = 2,
        layers: int = 2,
        codebook_size: int = 1024,
        codebook_dim: int | None = None,
        l2_normalize: bool = False,
        rule: str = "ema",
        decay: float = 0.99,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        dead_code_threshold: float = 0.4,
        commitment_weight: float = 1.0,
        dropout_prob: float = 0.0,
        dropout_mode: str = "item",
        gradient_estimator: str = "ste",
    ) -> None:
        super().__init__()
        group_dim = _checked_group_dim(dim, groups, layers, codebook_dim, dropout_prob, dropout_mode)
        if gradient_estimator not in GRADIENT_ESTIMATORS:
            raise ValueError(
                f"gradient_estimator={gradient_estimator!r} is unknown; choose one of {GRADIENT_ESTIMATORS}"
            )
        self.dim, self.groups, self.layers, self.group_dim = dim, groups, layers, group_dim
        self.codebook_size, self.codebook_dim, self.l2_normalize = codebook_size, codebook_dim, l2_normalize
        self.rule, self.decay, self.kmeans_init, self.kmeans_iters = rule, decay, kmeans_init, kmeans_iters
        self.dead_code_threshold, self.commitment_weight = dead_code_threshold, commitment_weight
        self.dropout_prob, self.dropout_mode, self.gradient_estimator = dropout_prob, dropout_mode, gradient_estimator
        codebook = dict(
            codebook_size=codebook_size, codebook_dim=codebook_dim, l2_normalize=l2_normalize, rule=rule,
            decay=decay, kmeans_init=kmeans_init, kmeans_iters=kmeans_iters, dead_code_threshold=dead_code_threshold,
        )  # fmt: skip
        self.codebooks = nn.ModuleList(VectorQuantizer(group_dim, **codebook) for _ in range(groups * layers))  # type: ignore[arg-type]

    @property
    def skips_codebooks_in_training(self) -> bool:
        return self.dropout_prob > 0 and self.layers > 1

    def check_training_scale(self, vectors_per_step: int) -> None:
        """Refuse a dead-code threshold that would re-draw live codes every step at this batch."""
        churn = self.codebook(0, 0).churn_per_step(vectors_per_step)
        if churn > MAX_CHURN_PER_STEP:
            raise ValueError(
                f"quantizer.dead_code_threshold={self.dead_code_threshold} churns: with "
                f"quantizer.codebook_size={self.codebook_size} "
                f"codes sharing {vectors_per_step} latent frames per step "
                f"({vectors_per_step / self.codebook_size:.2f} per code), about "
                f"{100 * churn:.1f}% of even uniformly used codes would be re-drawn every step (at most "
                f"{100 * MAX_CHURN_PER_STEP:g}% is allowed). "
                "Lower quantizer.dead_code_threshold (a fraction of the mean code usage; 0 turns replacement off) "
                "or quantizer.codebook_size, "
                f"or feed more frames per step"
            )

    def facts(self) -> dict:
        built = cast(VectorQuantizer, self.codebooks[0])
        return {
            **super().facts(),
            "gradient_estimator": self.gradient_estimator,
            # Read off the built codebook: a learned rule holds a Parameter, EMA a buffer.
            "rule": learning_rule(built),
            "codebook_dim": built.codebook_dim if built.codebook_dim != self.group_dim else None,
            "dead_code_threshold": self.dead_code_threshold,
        }

    def codebook_shapes(self) -> list[tuple[int, int]]:
        return [(int(book.embed.shape[0]), int(book.embed.shape[1])) for book in self.codebooks]  # type: ignore[index]

    def codebook(self, group: int, layer: int) -> VectorQuantizer:
        return cast(VectorQuantizer, self.codebooks[group * self.layers + layer])

    def _active_layers(self, batch: int, device: torch.device) -> torch.Tensor | None:
        """Residual layers each item uses this step under quantizer dropout (None: all)."""
        if not self.training or self.dropout_prob == 0.0 or self.layers == 1:
            return None
        if self.dropout_mode == "batch":
            if float(torch.rand(())) >= self.dropout_prob:
                return None
            count = torch.randint(1, self.layers + 1, ())
            return count.repeat(batch).to(device)
        dropped = torch.rand(batch) < self.dropout_prob
        counts = torch.where(dropped, torch.randint(1, self.layers + 1, (batch,)), torch.full((batch,), self.layers))
        return counts.to(device)

    def forward(self, latent: torch.Tensor, n_layers: int | None = None) -> QuantizedResult:
        """Quantize ``latent`` [B, dim, T] with the first ``n_layers`` layers of each group."""
        n_layers = self.check_layers(n_layers)
        with torch.autocast(device_type=latent.device.type, enabled=False):
            return self._forward(latent.float(), n_layers)

    def _forward(self, latent: torch.Tensor, n_layers: int) -> QuantizedResult:
        batch = latent.shape[0]
        active_layers = self._active_layers(batch, latent.device)
        quantized_groups, all_codes, commitments, codebook_losses, replaced = [], [], [], [], []
        for group, chunk in enumerate(latent.split(self.group_dim, dim=1)):
            residual = chunk
            quantized = torch.zeros_like(chunk)
            for layer in range(n_layers):
                weights = None if active_layers is None else (active_layers > layer).to(latent.dtype)
                out = self.codebook(group, layer)(residual, weights)
                if weights is None:
                    layer_out, codes = out.quantized, out.codes
                    commitments.append(out.commitment.mean())
                    codebook_losses.append(out.codebook.mean())
                else:
                    layer_out = out.quantized * rearrange(weights, "b -> b 1 1")
                    codes = torch.where(rearrange(weights, "b -> b 1") > 0, out.codes, torch.full_like(out.codes, -1))
                    denominator = weights.sum().clamp_min(1.0)
                    commitments.append((out.commitment * weights).sum() / denominator)
                    codebook_losses.append((out.codebook * weights).sum() / denominator)
                quantized = quantized + layer_out
                # Detached, so the next layer's residual keeps an identity path to the encoder.
                residual = residual - layer_out.detach()
                all_codes.append(codes)
                replaced.append(out.replaced)
            if self.training:
                # One gradient estimate for the sum, plus a zero-valued term through which factorized
                # codebooks' output projections learn.
                quantized = self._to_encoder(chunk, quantized) + (quantized - quantized.detach())
            quantized_groups.append(quantized)
        codes = torch.stack(all_codes, dim=1)
        per_codebook_commitment = torch.stack(commitments)
        commitment = per_codebook_commitment.sum()
        codebook_loss = torch.stack(codebook_losses).sum()
        losses = {
            "commitment": commitment,
            "codebook": codebook_loss,
            "total": codebook_loss + self.commitment_weight * commitment,
            "commitment_per_codebook": per_codebook_commitment,
        }
        stats = codebook_stats(codes, self.codebook_size)
        stats["replaced"] = torch.stack(replaced)
        stats["replaced_fraction"] = stats["replaced"] / self.codebook_size
        return QuantizedResult(torch.cat(quantized_groups, dim=1), codes, losses, stats)

    def _to_encoder(self, latent: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
        """The quantized value with a gradient path to ``latent`` [B, D, T]: straight through
        (identity), or the rotation trick (the rotation and rescaling that take each frame's latent
        onto its quantized vector, held constant, so the gradient keeps its angle to the code)."""
        if self.gradient_estimator == "ste":
            return latent + (quantized - latent).detach()
        return rearrange(
            rotate_onto(rearrange(latent, "b d t -> b t d"), rearrange(quantized, "b d t -> b t d")), "b t d -> b d t"
        )

    @torch.no_grad()
    def encode(self, latent: torch.Tensor, n_layers: int | None = None) -> torch.Tensor:
        """Latent [B, dim, T] -> codes [B, G * n_layers, T] (group-major)."""
        n_layers = self.check_layers(n_layers)
        codes = []
        for group, chunk in enumerate(latent.float().split(self.group_dim, dim=1)):
            residual = chunk
            for layer in range(n_layers):
                book = self.codebook(group, layer)
                layer_codes = book.encode(residual)
                residual = residual - book.decode(layer_codes)
                codes.append(layer_codes)
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, G * n, T] with n <= layers -> quantized latent [B, dim, T]."""
        if codes.dim() != 3 or codes.shape[1] % self.groups:
            raise ValueError(
                f"codes must have shape [B, groups*n, T] with groups={self.groups}; got {tuple(codes.shape)}"
            )
        n_layers = self.check_layers(codes.shape[1] // self.groups)
        groups: list[torch.Tensor] = []
        for group in range(self.groups):
            quantized: torch.Tensor | None = None
            for layer in range(n_layers):
                vectors = self.codebook(group, layer).decode(codes[:, group * n_layers + layer])
                quantized = vectors if quantized is None else quantized + vectors
            assert quantized is not None  # check_layers allows no zero-layer decode
            groups.append(quantized)
        return torch.cat(groups, dim=1)


def learning_rule(codebook: VectorQuantizer) -> str:
    """The rule a built codebook learns by, read off its tensors: SimVQ has a learned code map,
    the gradient rule a codebook Parameter, EMA a buffer."""
    if isinstance(codebook.code_map, nn.Linear):
        return "simvq"
    return "gradient" if isinstance(codebook.embed, nn.Parameter) else "ema"


def rotate_onto(vectors: torch.Tensor, targets: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The rotation trick (Fifty et al. 2024): ``targets`` [..., D] in value, with the gradient of
    ``vectors`` passed through the rotation R that maps each vector's direction onto its target's
    and the norm ratio, both held constant: R = I - 2 w w^T + 2 v u^T, u = vector direction,
    v = target direction, w = (u + v) / |u + v|."""
    target = targets.detach()
    norms = vectors.norm(dim=-1, keepdim=True).clamp_min(eps)
    target_norms = target.norm(dim=-1, keepdim=True)
    u = (vectors / norms).detach()
    v = target / target_norms.clamp_min(eps)
    w = F.normalize(u + v, dim=-1, eps=eps)
    rotated = vectors - 2 * (vectors * w).sum(-1, keepdim=True) * w + 2 * (vectors * u).sum(-1, keepdim=True) * v
    return rotated * (target_norms / norms).detach()
