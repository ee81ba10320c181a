"""EnCodec's gradient balancer: each balanced term's share of the gradient at the decoder output
is its configured weight, whatever the term's raw scale."""

from __future__ import annotations

import pytest
import torch

from codec.losses.balancer import GradientBalancer


def _terms(output: torch.Tensor, targets: tuple[torch.Tensor, torch.Tensor], scale: float) -> dict:
    return {
        "mel": scale * (output - targets[0]).pow(2).mean(),  # a term whose raw scale is arbitrary
        "waveform_l1": (output - targets[1]).abs().mean(),
    }


def _shares_by_least_squares(balanced: torch.Tensor, grads: list[torch.Tensor]) -> list[float]:
    """Each term's share, found from the balanced gradient alone: solve balanced = sum c_k g_k/|g_k|."""
    matrix = torch.stack([(g / g.norm()).flatten() for g in grads], dim=1).double()
    contributions = torch.linalg.lstsq(matrix, balanced.flatten().unsqueeze(1).double()).solution.flatten()
    return [float(c / contributions.sum()) for c in contributions]


@pytest.mark.parametrize("raw_scale", [1e-3, 1.0, 1e4])
def test_each_share_is_its_weight_whatever_the_raw_scale(raw_scale: float) -> None:
    torch.manual_seed(0)
    balancer = GradientBalancer({"mel": 3.0, "waveform_l1": 1.0}, ema_decay=0.9)
    targets = (torch.randn(4, 1, 200), torch.randn(4, 1, 200))
    for _ in range(30):  # stationary data: the norm averages settle
        output = torch.randn(4, 1, 200, requires_grad=True)
        terms = _terms(output, targets, raw_scale)
        balanced, reported = balancer.gradient(terms, output)
    grads = [torch.autograd.grad(terms[k], output, retain_graph=True)[0] for k in ("mel", "waveform_l1")]
    measured = _shares_by_least_squares(balanced, grads)
    assert measured == pytest.approx([0.75, 0.25], abs=0.05)
    assert [float(reported[f"balancer_share_{k}"]) for k in ("mel", "waveform_l1")] == pytest.approx(measured, abs=2e-3)
    assert float(balanced.flatten(1).norm(dim=1).mean()) == pytest.approx(1.0, rel=0.25)  # total_norm


def test_the_balanced_gradient_does_not_depend_on_a_terms_scale() -> None:
    torch.manual_seed(1)
    output = torch.randn(2, 1, 100, requires_grad=True)
    targets = (torch.randn(2, 1, 100), torch.randn(2, 1, 100))
    results = []
    for scale in (1.0, 1e6):
        balancer = GradientBalancer({"mel": 2.0, "waveform_l1": 1.0}, ema_decay=0.0)
        results.append(balancer.gradient(_terms(output, targets, scale), output)[0])
    assert torch.allclose(results[0], results[1], rtol=1e-4, atol=1e-8)


def test_a_balancer_without_a_positive_weight_is_refused() -> None:
    with pytest.raises(ValueError, match="loss.balancer"):
        GradientBalancer({"mel": 0.0})
    with pytest.raises(ValueError, match="ema_decay"):
        GradientBalancer({"mel": 1.0}, ema_decay=1.0)


def test_the_encodec_loss_trains_through_the_balancer_and_resumes_its_averages(tmp_path) -> None:
    from codec.config import compose_config
    from codec.tracking import NullLogger
    from codec.training.trainer import Trainer

    overrides = ["experiment=smoke", "loss=encodec", "logger=none", f"paths.cache={tmp_path / 'cache'}"]
    trainer = Trainer(compose_config(overrides), tmp_path / "run", logger=NullLogger())
    assert trainer.gan.loss.balancer is not None
    batch = torch.randn(2, 1, 4000) * 0.1
    metrics = trainer.gan.train_step(batch, 0)  # the first average is this step's own norm: exact shares
    shares = {k.removeprefix("train/balancer_share_"): float(v) for k, v in metrics.items() if "balancer_share" in k}
    weights = {k: w for k, w in trainer.gan.loss.weights.items() if k in shares}
    assert set(shares) >= {"waveform_l1", "mel"}  # the adversarial terms join once the discriminators run
    assert shares == pytest.approx({k: w / sum(weights.values()) for k, w in weights.items()}, abs=0.01)
    for step in (1, 2):
        trainer.gan.train_step(batch, step)
    state = trainer.gan.state_dict()["balancer"]
    assert int(state["updates"].max()) == 3
