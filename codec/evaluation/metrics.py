"""Metric definitions computed in the main process with torch (mel distance, SI-SDR)."""
from __future__ import annotations

import torch

from codec.losses.reconstruction import MultiScaleMelLoss

PERCEPTUAL_METRICS = ("pesq_wb", "pesq_nb", "stoi", "estoi")
SIGNAL_METRICS = ("mel_distance", "si_sdr", "waveform_l1")
KNOWN_METRICS = PERCEPTUAL_METRICS + SIGNAL_METRICS


def si_sdr(reference: torch.Tensor, estimate: torch.Tensor, eps: float = 1e-8) -> float:
    """Scale-invariant SDR in dB (higher is better), on 1-D signals."""
    reference = reference - reference.mean()
    estimate = estimate - estimate.mean()
    scale = (estimate @ reference) / (reference @ reference + eps)
    target = scale * reference
    noise = estimate - target
    return float(10 * torch.log10((target @ target + eps) / (noise @ noise + eps)))


class SignalMetrics:
    """Mel distance (multi-scale log-mel L1), SI-SDR and waveform L1 of one utterance."""

    def __init__(self, sample_rate: int) -> None:
        self.mel = MultiScaleMelLoss(sample_rate, windows=(64, 128, 256, 512, 1024, 2048), n_mels=(10, 20, 40, 80, 80, 128))

    @torch.no_grad()
    def __call__(self, reference: torch.Tensor, estimate: torch.Tensor, wanted: tuple[str, ...]) -> dict[str, float]:
        scores: dict[str, float] = {}
        if "mel_distance" in wanted:
            scores["mel_distance"] = float(self.mel(reference.view(1, 1, -1), estimate.view(1, 1, -1)))
        if "si_sdr" in wanted:
            scores["si_sdr"] = si_sdr(reference.flatten().double(), estimate.flatten().double())
        if "waveform_l1" in wanted:
            scores["waveform_l1"] = float((reference - estimate).abs().mean())
        return scores
