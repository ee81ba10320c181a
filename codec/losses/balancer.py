"""EnCodec's loss balancer: each term's gradient at the decoder output is normalised and
re-weighted, so a term's share of the update is its configured weight whatever its raw scale.

Without it, ``weights.mel = 2`` means "twice the mel loss", and the mel loss's own scale (its
number of windows, the sample rate, the batch) decides how much it actually moves the decoder;
with it, the weights are the shares of the gradient that reaches the decoder output
(Défossez et al. 2022, "High Fidelity Neural Audio Compression", section 3.4). Each term's
gradient norm is tracked as an exponential moving average, averaged over ranks so every rank
scales alike, and kept in the checkpoint so a resumed run scales as it would have.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from codec.quantization.distributed import all_reduce_mean_


class GradientBalancer(nn.Module):
    """Balances the terms computed from one output tensor; ``weights`` are their shares."""

    norms: torch.Tensor
    updates: torch.Tensor

    def __init__(
        self, weights: Mapping[str, float], ema_decay: float = 0.999, total_norm: float = 1.0, epsilon: float = 1e-12
    ) -> None:
        super().__init__()
        positive = {k: float(v) for k, v in weights.items() if float(v) > 0}
        if not positive:
            raise ValueError("loss.balancer needs at least one loss.weights.* above 0 among the balanced terms")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"balancer.ema_decay={ema_decay} must lie in [0, 1)")
        self.terms = list(positive)
        total = sum(positive.values())
        self.shares = {k: v / total for k, v in positive.items()}
        self.ema_decay, self.total_norm, self.epsilon = ema_decay, total_norm, epsilon
        self.register_buffer("norms", torch.zeros(len(self.terms)))
        self.register_buffer("updates", torch.zeros(len(self.terms)))

    def _norms(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """Per-term gradient norm (per item, averaged over the batch and over ranks)."""
        return all_reduce_mean_(torch.stack([g.flatten(1).norm(dim=1).mean() for g in grads]).detach())

    def gradient(self, terms: Mapping[str, torch.Tensor], output: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The balanced gradient at ``output`` over the balanced terms present (the adversarial
        ones join when the discriminators start), and each term's share of it (for the logs)."""
        present = [i for i, k in enumerate(self.terms) if k in terms]
        grads = [torch.autograd.grad(terms[self.terms[i]], output, retain_graph=True)[0] for i in present]
        norms = self._norms(grads)
        index = torch.tensor(present, device=self.norms.device)
        with torch.no_grad():
            self.updates[index] += 1
            self.norms[index] = self.ema_decay * self.norms[index] + (1 - self.ema_decay) * norms
            averaged = self.norms[index] / (1 - self.ema_decay ** self.updates[index])  # bias-corrected
        weight = sum(self.shares[self.terms[i]] for i in present)
        balanced = torch.zeros_like(output)
        contributions = {}
        for position, (i, grad) in enumerate(zip(present, grads)):
            scale = self.shares[self.terms[i]] / weight * self.total_norm / (averaged[position] + self.epsilon)
            balanced = balanced + scale * grad
            contributions[self.terms[i]] = scale * norms[position]
        total = sum(contributions.values())
        return balanced, {f"balancer_share_{k}": v / total for k, v in contributions.items()}
