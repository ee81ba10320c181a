"""Metric definitions computed in the main process with torch (mel distance, SI-SDR)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from codec.losses.reconstruction import MultiScaleMelLoss

# Names accepted in eval.metrics. Perceptual ones run in worker processes; some report several keys.
PERCEPTUAL_METRICS = (
    "pesq_wb", "pesq_nb", "stoi", "estoi", "visqol", "dnsmos", "wer", "mcd", "f0", "speaker_similarity_ge2e",
)  # fmt: skip
SIGNAL_METRICS = ("mel_distance", "si_sdr", "waveform_l1")
KNOWN_METRICS = PERCEPTUAL_METRICS + SIGNAL_METRICS
REPORTED_KEYS = {
    "dnsmos": ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"),
    "wer": ("wer", "wer_reference"),
    "f0": ("f0_rmse", "f0_corr", "voicing_error"),
}
# The distributions whose code computes each metric, recorded beside every number it produced.
METRIC_PACKAGES = {
    "pesq_wb": ("pesq", "soxr"),
    "pesq_nb": ("pesq", "soxr"),
    "stoi": ("pystoi",),
    "estoi": ("pystoi",),
    "visqol": ("visqol-python", "soxr"),
    "dnsmos": ("speechmos", "onnxruntime", "librosa", "soxr"),
    "wer": ("pocketsphinx", "soxr"),
    "mcd": ("librosa", "soxr"),
    "f0": ("praat-parselmouth", "soxr"),
    "speaker_similarity_ge2e": ("resemblyzer", "webrtcvad", "soxr"),
    "mel_distance": ("torchaudio",),
    "si_sdr": ("torch",),
    "waveform_l1": ("torch",),
}


def metric_packages(metrics: Sequence[str]) -> dict[str, str]:
    """``{distribution: version}`` of the packages that compute ``metrics``."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in sorted({package for metric in metrics for package in METRIC_PACKAGES.get(metric, ())}):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "missing"
    return found


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
        self.mel = MultiScaleMelLoss(
            sample_rate, windows=(64, 128, 256, 512, 1024, 2048), n_mels=(10, 20, 40, 80, 80, 128)
        )

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
