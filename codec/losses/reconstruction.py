"""Time-domain and multi-scale log-mel reconstruction losses."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchaudio
from torch import nn
from torch.nn import functional as F

from codec.spectral import SpectrumBank, spectrum


def waveform_l1(reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(estimate, reference)


class MultiScaleMelLoss(nn.Module):
    """Mean over scales of the L1 distance between log-mel spectrograms.

    ``windows[i]`` (hop ``windows[i] // 4``) pairs with ``n_mels[i]`` mel bands, as in
    EnCodec (2^5 ... 2^11) and DAC (32 ... 2048 with 5 ... 320 mels).
    """

    def __init__(
        self,
        sample_rate: int,
        windows: Sequence[int] = (32, 64, 128, 256, 512, 1024, 2048),
        n_mels: Sequence[int] = (5, 10, 20, 40, 80, 160, 320),
        log_epsilon: float = 1e-5,
    ) -> None:
        super().__init__()
        if len(windows) != len(n_mels) or not windows:
            raise ValueError(
                f"mel_windows={list(windows)} and mel_bins={list(n_mels)} must be non-empty and of equal length"
            )
        self.log_epsilon = log_epsilon
        self.windows = tuple(int(w) for w in windows)
        # Mel filterbanks over magnitude spectra from :func:`codec.spectral.stft` (hop w // 4).
        self.filterbanks = nn.ModuleList(
            torchaudio.transforms.MelScale(
                n_mels=int(m), sample_rate=sample_rate, n_stft=int(w) // 2 + 1, norm="slaney", mel_scale="slaney"
            )
            for w, m in zip(windows, n_mels)
        )

    def forward(
        self,
        reference: torch.Tensor,
        estimate: torch.Tensor,
        reference_spectra: SpectrumBank | None = None,
        estimate_spectra: SpectrumBank | None = None,
    ) -> torch.Tensor:
        """``*_spectra``: this step's shared spectra of each signal, when the caller has them."""
        total = reference.new_zeros((), dtype=torch.float32)
        for n_fft, filterbank in zip(self.windows, self.filterbanks):
            ref = torch.log(filterbank(spectrum(reference, n_fft, reference_spectra).abs()) + self.log_epsilon)
            est = torch.log(filterbank(spectrum(estimate, n_fft, estimate_spectra).abs()) + self.log_epsilon)
            total = total + F.l1_loss(est, ref)
        return total / len(self.windows)
