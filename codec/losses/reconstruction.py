"""Time-domain and multi-scale log-mel reconstruction losses."""
from __future__ import annotations

from typing import Sequence

import torch
import torchaudio
from torch import nn
from torch.nn import functional as F


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
            raise ValueError(f"mel_windows={list(windows)} and mel_bins={list(n_mels)} must be non-empty and of equal length")
        self.log_epsilon = log_epsilon
        self.transforms = nn.ModuleList(
            torchaudio.transforms.MelSpectrogram(
                sample_rate=sample_rate,
                n_fft=int(w),
                win_length=int(w),
                hop_length=int(w) // 4,
                n_mels=int(m),
                power=1.0,
                center=True,
                pad_mode="constant",
                norm="slaney",
                mel_scale="slaney",
            )
            for w, m in zip(windows, n_mels)
        )

    def forward(self, reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
        total = reference.new_zeros(())
        for transform in self.transforms:
            ref = torch.log(transform(reference.float()) + self.log_epsilon)
            est = torch.log(transform(estimate.float()) + self.log_epsilon)
            total = total + F.l1_loss(est, ref)
        return total / len(self.transforms)
