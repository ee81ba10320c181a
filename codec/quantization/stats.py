"""Codebook health: usage fraction, perplexity and dead codes from integer codes."""

from __future__ import annotations

import torch


def code_histogram(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Counts of each code per codebook: codes [B, N, T] -> counts [N, codebook_size]."""
    flat = codes.transpose(0, 1).reshape(codes.shape[1], -1)
    offsets = torch.arange(flat.shape[0], device=codes.device).unsqueeze(1) * codebook_size
    valid = flat >= 0
    indices = (flat + offsets)[valid]
    counts = torch.bincount(indices, minlength=flat.shape[0] * codebook_size)
    return counts.view(flat.shape[0], codebook_size)


def stats_from_histogram(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-codebook statistics from counts [N, K].

    - ``usage``: fraction of the K codes used at least once;
    - ``perplexity``: exp of the entropy of the code distribution (K means uniform use);
    - ``dead_codes``: codes never used;
    - ``entropy_bits``: entropy in bits, the effective bits per token.
    """
    counts = counts.float()
    total = counts.sum(dim=1, keepdim=True).clamp_min(1.0)
    probs = counts / total
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=1)
    used = (counts > 0).float()
    return {
        "usage": used.mean(dim=1),
        "perplexity": entropy.exp(),
        "dead_codes": (1.0 - used).sum(dim=1),
        "entropy_bits": entropy / torch.log(torch.tensor(2.0)),
    }


def codebook_stats(codes: torch.Tensor, codebook_size: int) -> dict[str, torch.Tensor]:
    """Per-codebook statistics of codes [B, N, T]; each value has shape [N]."""
    return stats_from_histogram(code_histogram(codes, codebook_size))
