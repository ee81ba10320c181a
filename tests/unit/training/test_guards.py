"""Guardrail monitors in process: the defaults stay quiet on a healthy curve, and each monitor
needs its patience and resets when the run recovers."""

from __future__ import annotations

from codec.config import build, compose_config
from codec.training.guards import COLLAPSE, DIVERGENCE, OVERPOWERING, Guardrails


def test_default_thresholds_do_not_fire_on_a_healthy_learning_curve() -> None:
    guards = build(compose_config([]).guard, "guard")
    codebook = {"perplexity": [430.0, 512.0, 550.0, 470.0], "usage": [0.6, 0.7, 0.65, 0.6]}
    # The README demo's valid mel curve (2.28 at step 0 -> 0.76) with healthy codebooks.
    for step, mel in [(0, 2.28), (600, 1.02), (1200, 0.85), (1800, 0.76)]:
        assert guards.after_evaluation(step, {"mel_distance": mel}, codebook) is None
    for step in range(50, 1000, 50):  # discriminator loss near its start, adversarial loss wandering
        assert guards.after_log(step, {"train/loss_discriminator": 1.9, "train/adversarial": 1.0 + step / 1000}) is None


def test_each_monitor_needs_its_patience_and_resets_on_recovery() -> None:
    guards = Guardrails(
        collapse_min_perplexity=2.0,
        collapse_patience=2,
        divergence_factor=2.0,
        divergence_patience=2,
        overpowering_max_discriminator_loss=0.05,
        overpowering_patience=3,
    )
    collapsed, healthy = {"perplexity": [1.2, 300.0]}, {"perplexity": [300.0, 300.0]}
    assert guards.after_evaluation(0, {"mel_distance": 2.0}, collapsed) is None  # step 0: codebooks not initialised yet
    assert guards.after_evaluation(100, {"mel_distance": 1.0}, collapsed) is None
    assert guards.after_evaluation(200, {"mel_distance": 1.0}, healthy) is None  # recovered: the count restarts
    assert guards.after_evaluation(300, {"mel_distance": 1.0}, collapsed) is None
    stop = guards.after_evaluation(400, {"mel_distance": 1.0}, collapsed)
    assert stop is not None and stop.guard == COLLAPSE and "codebook 0 perplexity 1.2 < 2" in stop.reason
    assert guards.after_evaluation(500, {"mel_distance": 2.5}, healthy) is None  # 2.5 > 2 x 1.0, once
    stop = guards.after_evaluation(600, {"mel_distance": 3.0}, healthy)
    assert stop is not None and stop.guard == DIVERGENCE
    # overpowering: a streak of low D loss with a rising adversarial loss; a high D loss breaks it
    values = [(0.01, 1.0), (0.01, 1.1), (0.5, 1.2), (0.01, 1.3), (0.02, 1.4)]
    assert all(
        guards.after_log(i, {"train/loss_discriminator": d, "train/adversarial": a}) is None
        for i, (d, a) in enumerate(values)
    )
    stop = guards.after_log(9, {"train/loss_discriminator": 0.01, "train/adversarial": 1.5})
    assert stop is not None and stop.guard == OVERPOWERING and "from 1.3 to 1.5" in stop.reason
    # resumable: the counts travel in the checkpoint
    restored = Guardrails(collapse_patience=2)
    restored.load_state_dict(guards.state_dict())
    assert restored.state_dict() == guards.state_dict()
