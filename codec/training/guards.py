"""Guardrails: monitors that stop a run which cannot succeed, with a named reason.

A sweep of dozens of runs should not spend hours on a point whose codebooks collapsed, whose
reconstruction diverged or whose discriminator won. Each monitor watches what the loop already
computes (validation results, logged training values) and returns a :class:`GuardStop` when its
condition has held for its patience; the trainer then checkpoints, records the reason in
``status.json`` and the tracker, and ends the run without failing the sweep. The non-finite loss
check stays in the trainer (it must also keep bad weights out of checkpoints).

The ``guard`` config node's keys are :class:`Guardrails` arguments; ``guard=off`` disables all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

COLLAPSE = "codebook_collapse"
DIVERGENCE = "divergence"
OVERPOWERING = "discriminator_overpowering"
GUARDS = (COLLAPSE, DIVERGENCE, OVERPOWERING)


@dataclass(frozen=True)
class GuardStop:
    """Why a guardrail stopped a run: ``guard`` is one of GUARDS, ``reason`` a sentence with the numbers."""

    guard: str
    reason: str
    step: int


class Guardrails:
    """The three monitors with their thresholds; a threshold of ``null`` turns its monitor off.

    - collapse: the smallest per-codebook perplexity (or usage fraction) on validation stays below
      ``collapse_min_perplexity`` (``collapse_min_usage``) for ``collapse_patience`` evaluations;
      the step-0 baseline is ignored (k-means has not initialised the codebooks yet).
    - divergence: ``divergence_metric`` stays above ``divergence_factor`` x its best value (the
      untrained step-0 baseline included) for ``divergence_patience`` evaluations (lower is better).
    - overpowering: for ``overpowering_patience`` consecutive log steps the discriminator loss stays
      below ``overpowering_max_discriminator_loss`` while the generator's adversarial loss ends
      higher than where the streak began.
    """

    def __init__(
        self,
        collapse_min_perplexity: float | None = 2.0,
        collapse_min_usage: float | None = None,
        collapse_patience: int = 2,
        divergence_metric: str = "mel_distance",
        divergence_factor: float | None = 2.0,
        divergence_patience: int = 2,
        overpowering_max_discriminator_loss: float | None = 0.05,
        overpowering_patience: int = 10,
    ) -> None:
        for name, value in (
            ("collapse_patience", collapse_patience),
            ("divergence_patience", divergence_patience),
            ("overpowering_patience", overpowering_patience),
        ):
            if int(value) < 1:
                raise ValueError(f"guard.{name}={value} must be a positive integer (evaluations or log steps in a row)")
        if divergence_factor is not None and not divergence_factor > 1.0:
            raise ValueError(
                f"guard.divergence_factor={divergence_factor} must exceed 1 (a multiple of the best value) or be null"
            )
        if collapse_min_usage is not None and not 0.0 < collapse_min_usage <= 1.0:
            raise ValueError(
                f"guard.collapse_min_usage={collapse_min_usage} must be a fraction of the codebook in (0, 1] or null"
            )
        self.collapse_min_perplexity = collapse_min_perplexity
        self.collapse_min_usage = collapse_min_usage
        self.collapse_patience = int(collapse_patience)
        self.divergence_metric = divergence_metric
        self.divergence_factor = divergence_factor
        self.divergence_patience = int(divergence_patience)
        self.overpowering_max_discriminator_loss = overpowering_max_discriminator_loss
        self.overpowering_patience = int(overpowering_patience)
        self._collapsed_evals = 0
        self._diverged_evals = 0
        self._best: float | None = None
        self._streak: list[float] = []

    # -- state (kept in checkpoints so a resumed run counts on where it stopped) --------------
    def state_dict(self) -> dict:
        return {
            "collapsed_evals": self._collapsed_evals,
            "diverged_evals": self._diverged_evals,
            "best": self._best,
            "streak": list(self._streak),
        }

    def load_state_dict(self, state: Mapping) -> None:
        self._collapsed_evals = int(state.get("collapsed_evals", 0))
        self._diverged_evals = int(state.get("diverged_evals", 0))
        self._best = state.get("best")
        self._streak = [float(v) for v in state.get("streak", [])]

    # -- monitors ------------------------------------------------------------------------------
    def after_evaluation(
        self, step: int, metrics: Mapping[str, float], codebook: Mapping[str, Sequence[float]]
    ) -> GuardStop | None:
        """Check a validation result (``metrics`` without split prefix, ``codebook`` per-codebook lists)."""
        divergence = self._check_divergence(step, metrics)  # the step-0 baseline counts as a best value
        if step == 0:
            return None
        # Divergence first: a diverged run's codebooks collapse too, and the cause is the divergence.
        collapse = self._check_collapse(step, codebook)
        return divergence or collapse

    def _check_collapse(self, step: int, codebook: Mapping[str, Sequence[float]]) -> GuardStop | None:
        failing = []
        for key, threshold in (("perplexity", self.collapse_min_perplexity), ("usage", self.collapse_min_usage)):
            values = list(codebook.get(key, []))
            if threshold is None or not values:
                continue
            worst = min(range(len(values)), key=lambda i: values[i])
            if values[worst] < threshold:
                failing.append(f"codebook {worst} {key} {values[worst]:.3g} < {threshold:g}")
        self._collapsed_evals = self._collapsed_evals + 1 if failing else 0
        if failing and self._collapsed_evals >= self.collapse_patience:
            return GuardStop(
                COLLAPSE,
                f"codebook collapse: {'; '.join(failing)} for {self._collapsed_evals} evaluations in a row "
                f"(guard.collapse_patience={self.collapse_patience})",
                step,
            )
        return None

    def _check_divergence(self, step: int, metrics: Mapping[str, float]) -> GuardStop | None:
        value = metrics.get(self.divergence_metric)
        if self.divergence_factor is None or value is None or not math.isfinite(value):
            return None
        self._best = value if self._best is None else min(self._best, value)
        above = value > self.divergence_factor * self._best
        self._diverged_evals = self._diverged_evals + 1 if above else 0
        if above and self._diverged_evals >= self.divergence_patience:
            return GuardStop(
                DIVERGENCE,
                f"divergence: valid {self.divergence_metric} {value:.4g} > {self.divergence_factor:g} x its best "
                f"{self._best:.4g} for {self._diverged_evals} evaluations in a row "
                f"(guard.divergence_patience={self.divergence_patience})",
                step,
            )
        return None

    def after_log(self, step: int, values: Mapping[str, float]) -> GuardStop | None:
        """Check one log step's training values (``train/loss_discriminator``, ``train/adversarial``)."""
        ceiling = self.overpowering_max_discriminator_loss
        loss_d, adversarial = values.get("train/loss_discriminator"), values.get("train/adversarial")
        if ceiling is None or loss_d is None or adversarial is None:
            self._streak = []
            return None
        if loss_d >= ceiling:
            self._streak = []
            return None
        self._streak.append(float(adversarial))
        if len(self._streak) >= self.overpowering_patience and self._streak[-1] > self._streak[0]:
            reason = (
                f"discriminator overpowering: discriminator loss below {ceiling:g} for {len(self._streak)} log steps "
                "in a row "
                f"while the generator's adversarial loss rose from {self._streak[0]:.4g} to {self._streak[-1]:.4g}"
            )
            return GuardStop(OVERPOWERING, reason, step)
        return None
