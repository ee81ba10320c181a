"""The generator objective: every term is computed and reported; weights come from config.

A weight of 0 keeps the term in the logs but out of the gradient.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from codec.discriminators import DiscriminatorOutput
from codec.losses.adversarial import (
    ADVERSARIAL_KINDS,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from codec.losses.balancer import GradientBalancer
from codec.losses.reconstruction import MultiScaleMelLoss, waveform_l1
from codec.losses.semantic import SemanticSupervision
from codec.spectral import SpectrumBank

LOSS_TERMS = ("waveform_l1", "mel", "adversarial", "feature", "quantizer")
ADVERSARIAL_TERMS = ("adversarial", "feature")
# The terms computed from the decoder's output, which the balancer (loss.balancer) can balance.
OUTPUT_TERMS = ("waveform_l1", "mel", "adversarial", "feature")


class CodecLoss(nn.Module):
    """Weighted sum ``sum_k weights[k] * term_k`` over :data:`LOSS_TERMS` (paper eq. 5)."""

    def __init__(
        self,
        sample_rate: int,
        weights: Mapping[str, float],
        adversarial: str = "hinge",
        mel_windows: Sequence[int] = (32, 64, 128, 256, 512, 1024, 2048),
        mel_bins: Sequence[int] = (5, 10, 20, 40, 80, 160, 320),
        balancer: Mapping[str, float] | None = None,
        semantic: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        unknown = sorted(set(weights) - set(LOSS_TERMS))
        if unknown:
            names = ", ".join(f"weights.{term}" for term in unknown)
            raise ValueError(f"{names}: unknown loss term; known terms are {list(LOSS_TERMS)}")
        if adversarial not in ADVERSARIAL_KINDS:
            raise ValueError(f"adversarial={adversarial!r} is unknown; choose one of {ADVERSARIAL_KINDS}")
        self.sample_rate = int(sample_rate)
        self.weights = {term: float(weights.get(term, 0.0)) for term in LOSS_TERMS}
        self.mel_windows, self.mel_bins = [int(w) for w in mel_windows], [int(b) for b in mel_bins]
        self.adversarial = adversarial
        self.mel = MultiScaleMelLoss(sample_rate, mel_windows, mel_bins)
        # With a balancer the weights of OUTPUT_TERMS are their shares of the decoder's gradient.
        self.balancer = (
            GradientBalancer({k: self.weights[k] for k in OUTPUT_TERMS}, **balancer) if balancer is not None else None
        )
        # loss.semantic: a CTC term on one group's codes, weighted by its own ``weight``; its head
        # is built by ``attach`` once the codec and the transcripts are known.
        self.semantic = SemanticSupervision(**semantic) if semantic is not None else None
        if self.semantic is not None:
            self.weights["semantic"] = self.semantic.weight

    def reconstruction_terms(
        self,
        reference: torch.Tensor,
        estimate: torch.Tensor,
        reference_spectra: SpectrumBank | None = None,
        estimate_spectra: SpectrumBank | None = None,
    ) -> dict[str, torch.Tensor]:
        mel = self.mel(reference, estimate, reference_spectra, estimate_spectra)
        return {"waveform_l1": waveform_l1(reference, estimate), "mel": mel}

    def generator_terms(
        self,
        reference: torch.Tensor,
        estimate: torch.Tensor,
        quantizer_loss: torch.Tensor,
        real: Sequence[DiscriminatorOutput] | None,
        fake: Sequence[DiscriminatorOutput] | None,
        reference_spectra: SpectrumBank | None = None,
        estimate_spectra: SpectrumBank | None = None,
    ) -> dict[str, torch.Tensor]:
        """All generator terms; adversarial ones only when discriminator outputs are given."""
        terms = self.reconstruction_terms(reference, estimate, reference_spectra, estimate_spectra)
        terms["quantizer"] = quantizer_loss
        if real is not None and fake is not None:
            terms["adversarial"] = generator_adversarial_loss([f.logits for f in fake], self.adversarial)
            terms["feature"] = feature_matching_loss([r.features for r in real], [f.features for f in fake])
        return terms

    def total(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of the terms present whose weight is non-zero."""
        total = None
        for term, value in terms.items():
            weight = self.weights.get(term, 0.0)
            if weight:
                total = weight * value if total is None else total + weight * value
        if total is None:
            raise ValueError("every loss weight present is 0: nothing would be trained")
        return total

    def backward(self, terms: Mapping[str, torch.Tensor], output: torch.Tensor) -> dict[str, torch.Tensor]:
        """The generator's backward pass: the weighted sum, or with the balancer the balanced
        gradient at ``output`` plus the weighted terms not computed from it (the quantizer's)."""
        if self.balancer is None:
            self.total(terms).backward()
            return {}
        balanced, shares = self.balancer.gradient(terms, output)
        tensors, grads = [output], [balanced]
        rest = [self.weights[k] * v for k, v in terms.items() if k not in OUTPUT_TERMS and self.weights.get(k)]
        tensors += [r for r in rest if r.requires_grad]
        grads += [torch.ones_like(r) for r in rest if r.requires_grad]
        torch.autograd.backward(tensors, grads)
        return shares

    def discriminator(self, real: Sequence[DiscriminatorOutput], fake: Sequence[DiscriminatorOutput]) -> torch.Tensor:
        return discriminator_loss([r.logits for r in real], [f.logits for f in fake], self.adversarial)
