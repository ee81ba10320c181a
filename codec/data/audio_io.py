"""Reading and writing audio with soundfile; resampling with torchaudio's sinc resampler."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

AUDIO_SUFFIXES = (".wav", ".flac")
MIN_SAMPLE_RATE = 1000


class AudioFileError(ValueError):
    """An audio file that cannot be used; the message names the path and the reason."""


def probe(path: Path) -> tuple[int, int]:
    """(frames, sample_rate) of a readable, non-empty file; raises :class:`AudioFileError`."""
    try:
        info = sf.info(str(path))
    except Exception as error:  # soundfile raises several types for corrupt headers
        raise AudioFileError(f"{path}: unreadable audio ({error})") from error
    if info.frames <= 0:
        raise AudioFileError(f"{path}: empty audio (0 frames)")
    if info.samplerate < MIN_SAMPLE_RATE:
        raise AudioFileError(f"{path}: implausible sample rate {info.samplerate} Hz")
    try:
        sf.read(str(path), frames=min(info.frames, 1024), dtype="float32")
    except Exception as error:
        raise AudioFileError(f"{path}: corrupt audio data ({error})") from error
    return int(info.frames), int(info.samplerate)


def resample(wav: torch.Tensor, source_rate: int, target_rate: int) -> torch.Tensor:
    if source_rate == target_rate:
        return wav
    return AF.resample(wav, source_rate, target_rate)


def read_audio(path: Path | str, sample_rate: int | None = None, start: int = 0, frames: int = -1) -> torch.Tensor:
    """Mono float32 [1, T] at ``sample_rate`` (the file's rate when None).

    ``start`` and ``frames`` are in the file's own sample rate.
    """
    path = Path(path)
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
