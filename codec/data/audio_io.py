"""Reading and writing audio with soundfile; resampling with soxr at its very-high-quality setting.

soxr, not torchaudio's default sinc filter: from 24 kHz to 16 kHz torchaudio's default attenuates
7-8 kHz (-1.8 dB at 7 kHz, -6.2 dB at 7.95 kHz), exactly the band where codec damage shows, and
so inflated PESQ-WB by up to 0.13 on real speech. soxr's passband reaches the new Nyquist flat.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

AUDIO_SUFFIXES = (".wav", ".flac")
MIN_SAMPLE_RATE = 1000


class AudioFileError(ValueError):
    """An audio file that cannot be used; the message names the path and the reason."""


def probe(path: Path) -> tuple[int, int]:
    """(frames, sample_rate) of a readable, non-empty file of finite samples; raises :class:`AudioFileError`."""
    if not Path(path).exists():
        raise AudioFileError(f"{path}: no such file")
    try:
        info = sf.info(str(path))
    except Exception as error:  # soundfile raises several types for corrupt headers
        raise AudioFileError(f"{path}: unreadable audio ({error})") from error
    if info.frames <= 0:
        raise AudioFileError(f"{path}: empty audio (0 frames)")
    if info.samplerate < MIN_SAMPLE_RATE:
        raise AudioFileError(f"{path}: implausible sample rate {info.samplerate} Hz")
    try:
        # Every sample, in blocks: a NaN or inf anywhere would surface mid-training otherwise.
        for block in sf.blocks(str(path), blocksize=1 << 18, dtype="float32", always_2d=True):
            if not np.isfinite(block).all():
                raise AudioFileError(f"{path}: audio holds NaN or infinite samples")
    except AudioFileError:
        raise
    except Exception as error:
        raise AudioFileError(f"{path}: corrupt audio data ({error})") from error
    return int(info.frames), int(info.samplerate)


def resample(wav: torch.Tensor, source_rate: int, target_rate: int) -> torch.Tensor:
    """[C, T] at ``source_rate`` -> [C, T'] at ``target_rate`` (float32 or float64, as given)."""
    if source_rate == target_rate:
        return wav
    frames = np.ascontiguousarray(wav.detach().cpu().numpy().T)
    converted = soxr.resample(frames, source_rate, target_rate, quality="VHQ")
    return torch.from_numpy(np.ascontiguousarray(converted.T)).to(wav.dtype)


def read_audio(path: Path | str, sample_rate: int | None = None, start: int = 0, frames: int = -1) -> torch.Tensor:
    """Mono float32 [1, T] at ``sample_rate`` (the file's rate when None).

    ``start`` and ``frames`` are in the file's own sample rate.
    """
    path = Path(path)
    if not path.exists():
        raise AudioFileError(f"{path}: no such file")
    try:
        data, rate = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    except Exception as error:
        raise AudioFileError(f"{path}: unreadable audio ({error})") from error
    if data.shape[0] == 0:
        raise AudioFileError(f"{path}: empty audio (0 frames read from offset {start})")
    wav = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1))).unsqueeze(0)
    if not torch.isfinite(wav).all():
        raise AudioFileError(f"{path}: audio holds NaN or infinite samples")
    return resample(wav, rate, sample_rate) if sample_rate else wav


def write_audio(path: Path | str, wav: torch.Tensor | np.ndarray, sample_rate: int) -> Path:
    """Write mono audio as 16-bit PCM (wav/flac by suffix), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = wav.detach().cpu().float().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav, dtype=np.float32)
    sf.write(str(path), np.clip(data.reshape(-1), -1.0, 1.0), sample_rate, subtype="PCM_16")
    return path
