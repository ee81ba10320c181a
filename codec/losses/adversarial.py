"""Adversarial (hinge or least-squares) and normalized feature-matching losses.

Each takes one entry per sub-discriminator and averages over them (paper eq. 1-3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

ADVERSARIAL_KINDS = ("hinge", "lsgan")


def discriminator_loss(real: Sequence[torch.Tensor], fake: Sequence[torch.Tensor], kind: str) -> torch.Tensor:
    """Loss of the discriminators: real logits pushed up, fake logits pushed down."""
    total = real[0].new_zeros(())
    for r, f in zip(real, fake):
        if kind == "hinge":
            total = total + F.relu(1 - r).mean() + F.relu(1 + f).mean()
        elif kind == "lsgan":
            total = total + (1 - r).pow(2).mean() + f.pow(2).mean()
        else:
            raise ValueError(f"adversarial={kind!r} is unknown; choose one of {ADVERSARIAL_KINDS}")
    return total / len(real)


def generator_adversarial_loss(fake: Sequence[torch.Tensor], kind: str) -> torch.Tensor:
    """Loss of the generator: fool every discriminator."""
    total = fake[0].new_zeros(())
    for f in fake:
        if kind == "hinge":
            total = total + F.relu(1 - f).mean()
        elif kind == "lsgan":
            total = total + (1 - f).pow(2).mean()
        else:
            raise ValueError(f"adversarial={kind!r} is unknown; choose one of {ADVERSARIAL_KINDS}")
    return total / len(fake)


def feature_matching_loss(
    real: Sequence[Sequence[torch.Tensor]], fake: Sequence[Sequence[torch.Tensor]]
) -> torch.Tensor:
    """Paper eq. 3: L1 between feature maps, divided by the real map's mean magnitude, averaged."""
    total, count = None, 0
    for real_maps, fake_maps in zip(real, fake):
        for r, f in zip(real_maps, fake_maps):
            r = r.detach()
            term = (r - f).abs().mean() / (r.abs().mean() + 1e-8)
            total = term if total is None else total + term
            count += 1
    if total is None:
        raise ValueError("feature matching needs at least one feature map")
    return total / count
