"""One STFT definition for every loss and discriminator, so a training step computes each window once.

The mel loss and the STFT discriminators (MS-STFT, multi-band) look at the same audio through the
same windows. The trainer therefore computes one :data:`SpectrumBank` over ``cat([real, fake])``
per step and hands it (or a detached copy, or one half) to each consumer; a consumer given no bank,
or a bank without its window, computes the transform itself with :func:`stft`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from einops import rearrange

# n_fft -> complex spectrum [B, n_fft // 2 + 1, frames] of one waveform batch.
SpectrumBank = Mapping[int, torch.Tensor]


def stft(wav: torch.Tensor, n_fft: int) -> torch.Tensor:
    """[B, 1, T] or [B, T] -> complex [B, bins, frames]: Hann window of ``n_fft``, hop ``n_fft // 4``,
    centred with zero padding, unnormalized, in float32 (bf16 FFTs lose too much)."""
    signal = rearrange(wav, "... time -> (...) time").float()
    window = torch.hann_window(n_fft, device=wav.device, dtype=signal.dtype)
    return torch.stft(signal, n_fft, n_fft // 4, window=window, center=True, pad_mode="constant", return_complex=True)


def spectrum_bank(wav: torch.Tensor, windows: Iterable[int]) -> dict[int, torch.Tensor]:
    """The spectrum of ``wav`` at every window length in ``windows``."""
    return {int(n_fft): stft(wav, int(n_fft)) for n_fft in sorted(set(windows))}


def spectrum(wav: torch.Tensor, n_fft: int, bank: SpectrumBank | None) -> torch.Tensor:
    """``bank[n_fft]`` when the bank holds it, else the transform of ``wav``."""
    if bank is not None and n_fft in bank:
        return bank[n_fft]
    return stft(wav, n_fft)


def detach_bank(bank: SpectrumBank) -> dict[int, torch.Tensor]:
    """The same spectra cut from the graph: what the discriminator step trains on."""
    return {n_fft: spec.detach() for n_fft, spec in bank.items()}


def split_bank(bank: SpectrumBank, first: int) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Views of the first ``first`` items and of the rest (a bank over ``cat([real, fake])``)."""
    return {n: s[:first] for n, s in bank.items()}, {n: s[first:] for n, s in bank.items()}
