"""The quantizer contract: what the codec, trainer, evaluator, ``codec info`` and inference may
rely on, and nothing more (in the spirit of AudioCraft's ``BaseQuantizer``/``QuantizedResult``).

A new quantizer is one subclass of :class:`BaseQuantizer` plus one YAML file under
``conf/quantizer/`` whose ``_target_`` names the class by its module path.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


def check_group_split(dim: int, groups: int) -> int:
    """Each group's share of a ``dim``-channel latent, refusing a split that does not divide it."""
    if groups < 1 or dim % groups:
        raise ValueError(f"groups={groups} must be at least 1 and divide dim={dim} (the encoder's latent dimension)")
    return dim // groups


@dataclass
class QuantizedResult:
    """What a quantizer returns for a latent [B, dim, T].

    - ``quantized``: the latent the decoder receives [B, dim, T]; in training it carries the
      straight-through gradient to the encoder.
    - ``codes``: integer codes [B, N, T] (N codebooks in use; -1 marks a codebook an item skipped).
    - ``losses``: scalar loss terms; ``total`` is what the generator objective adds (weighted by
      ``loss.weights.quantizer``). Others (``commitment``, ...) are reported.
    - ``stats``: per-codebook health, each a tensor [N] (usage, perplexity, codes replaced, ...).
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    losses: dict[str, torch.Tensor]
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


class BaseQuantizer(nn.Module, ABC):
    """A quantizer of ``dim``-channel latents into ``num_codebooks`` integer streams.

    Every codebook holds ``codebook_size`` codes, so each token carries log2(codebook_size) bits.
    Quantizers with residual depth accept ``n_layers`` (1..``layers``) to encode at a lower
    bitrate; the others have ``layers == 1``.
    """

    dim: int
    groups: int = 1
    layers: int = 1
    codebook_size: int

    @property
    def num_codebooks(self) -> int:
        return self.groups * self.layers

    def codebooks_in_use(self, n_layers: int | None = None) -> int:
        """Codebooks (tokens per frame) when encoding with the first ``n_layers`` layers."""
        return self.groups * self.check_layers(n_layers)

    def bits_per_frame(self, n_layers: int | None = None) -> float:
        return self.codebooks_in_use(n_layers) * math.log2(self.codebook_size)

    def check_layers(self, n_layers: int | None) -> int:
        if n_layers is None:
            return self.layers
        if not 1 <= int(n_layers) <= self.layers:
            raise ValueError(f"n_layers={n_layers} must lie between 1 and layers={self.layers}")
        return int(n_layers)

    @property
    def skips_codebooks_in_training(self) -> bool:
        """Whether a training step may leave some codebooks' parameters unused (DDP needs to know)."""
        return False

    def check_training_scale(self, vectors_per_step: int) -> None:
        """Refuse (``ValueError`` naming the key) a setting that cannot work at this many latent
        frames per step, e.g. a dead-code threshold no code can reach. Default: anything goes."""

    def facts(self) -> dict[str, Any]:
        """What ``codec info`` and the run record report about this quantizer."""
        return {
            "quantizer": type(self).__name__,
            "groups": self.groups,
            "layers": self.layers,
            "codebooks": self.num_codebooks,
            "codebook_size": self.codebook_size,
            "bits_per_frame": self.bits_per_frame(),
        }

    def semantic_view(self, latent: torch.Tensor, group: int, n_layers: int) -> torch.Tensor:
        """What ``group``'s first ``n_layers`` layers make of ``latent`` [B, dim, T], as
        [B, dim / groups, T], with a straight-through gradient to that group's channels of the
        latent. Read through ``encode``/``decode``, so no codebook statistic is updated: a second
        view of the same step (the semantic loss) leaves the codebooks' learning as it was.
        Every quantizer here splits channels by group (grouped projections for FSQ and BSQ)."""
        if not 0 <= group < self.groups:
            raise ValueError(f"group={group} must lie between 0 and groups - 1 = {self.groups - 1}")
        quantized = self.decode(self.encode(latent, self.check_layers(n_layers))).to(latent.dtype)
        width = check_group_split(self.dim, self.groups)
        channels = slice(group * width, (group + 1) * width)
        own = latent[:, channels]
        return own + (quantized[:, channels] - own).detach()

    @abstractmethod
    def codebook_shapes(self) -> list[tuple[int, int]]:
        """(codes, code width) of each codebook as built, learned or implicit, one per token
        stream: what the generic option tests and ``codec info`` compare across quantizers."""

    @abstractmethod
    def forward(self, latent: torch.Tensor, n_layers: int | None = None) -> QuantizedResult:
        """Quantize ``latent`` [B, dim, T]; in training also update codebooks and report losses."""

    @abstractmethod
    def encode(self, latent: torch.Tensor, n_layers: int | None = None) -> torch.Tensor:
        """Latent [B, dim, T] -> codes [B, codebooks_in_use(n_layers), T] (int64)."""

    @abstractmethod
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes from :meth:`encode` -> quantized latent [B, dim, T], as an eval-mode forward gives."""
