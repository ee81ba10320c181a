"""A cache of audio already downmixed and resampled to the model's rate.

Training then reads segments by seeking into float32 wav files, with no decoding or
resampling in the data workers. Files already mono wav at the model's rate are used as they are.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Sequence

import soundfile as sf

from codec.data.audio_io import read_audio
from codec.data.manifest import AudioEntry

log = logging.getLogger(__name__)


def _needs_conversion(entry: AudioEntry, sample_rate: int) -> bool:
    if entry.sample_rate != sample_rate or not entry.path.lower().endswith(".wav"):
        return True
    return sf.info(entry.path).channels != 1


def cache_resampled(entries: Sequence[AudioEntry], sample_rate: int, cache_dir: Path) -> list[AudioEntry]:
    """Entries pointing at model-rate mono copies (written once, atomically, keyed by source)."""
    cache_dir = Path(cache_dir)
    result, converted = [], 0
    for entry in entries:
        if not _needs_conversion(entry, sample_rate):
            result.append(entry)
            continue
        stat = os.stat(entry.path)
        key = hashlib.sha1(f"{entry.path}|{stat.st_size}|{stat.st_mtime_ns}|{sample_rate}".encode()).hexdigest()[:20]
        target = cache_dir / key[:2] / f"{key}.wav"
        if not target.exists():
            wav = read_audio(entry.path, sample_rate)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
            sf.write(str(tmp), wav.flatten().numpy(), sample_rate, subtype="FLOAT", format="WAV")
            os.replace(tmp, target)
            converted += 1
        result.append(AudioEntry(str(target), sf.info(str(target)).frames, sample_rate, source=entry.path))
    if converted:
        log.info("resampled %d file(s) to %d Hz into %s", converted, sample_rate, cache_dir)
    return result
