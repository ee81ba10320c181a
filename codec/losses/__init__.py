"""Reconstruction, adversarial and feature-matching losses and the weighted generator objective."""

from codec.losses.adversarial import (
    ADVERSARIAL_KINDS,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from codec.losses.objective import LOSS_TERMS, CodecLoss
from codec.losses.reconstruction import MultiScaleMelLoss, waveform_l1

__all__ = [
    "ADVERSARIAL_KINDS",
    "CodecLoss",
    "LOSS_TERMS",
    "MultiScaleMelLoss",
    "discriminator_loss",
    "feature_matching_loss",
    "generator_adversarial_loss",
    "waveform_l1",
]
