"""A cache of audio already downmixed and resampled to the model's rate.

Training then reads segments by seeking into float32 wav files, with no decoding or
resampling in the data workers. Files already mono wav at the model's rate are used as they are.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import soundfile as sf

from codec.data.audio_io import AudioFileError, read_audio
from codec.data.manifest import AudioEntry

log = logging.getLogger(__name__)


def _needs_conversion(entry: AudioEntry, sample_rate: int) -> bool:
    if entry.sample_rate != sample_rate or not entry.path.lower().endswith(".wav"):
        return True
    return sf.info(entry.path).channels != 1


def cache_resampled(
    entries: Sequence[AudioEntry], sample_rate: int, cache_dir: Path, bad_files: str = "skip"
) -> list[AudioEntry]:
    """Entries pointing at model-rate mono copies (written once, atomically, keyed by source).

    A file that cannot be read any more (changed or unreadable since the manifest was cached) is
    named and skipped, or stops the run under ``bad_files='error'``.
    """
    cache_dir = Path(cache_dir)
    result = []
    for entry in entries:
        try:
            result.append(_cached_entry(entry, sample_rate, cache_dir))
        except AudioFileError as error:
            if bad_files == "error":
                raise AudioFileError(f"{error} (data.bad_files=error)") from error
            log.warning("skipping %s", error)
    copies = sum(1 for e in result if e.source)
    if copies:
        log.info("reading %d file(s) from their %d Hz mono copies under %s", copies, sample_rate, cache_dir)
    return result


def _cached_entry(entry: AudioEntry, sample_rate: int, cache_dir: Path) -> AudioEntry:
    try:
        return _convert(entry, sample_rate, cache_dir)
    except AudioFileError:
        raise
    except Exception as error:  # soundfile raises several types for unreadable files
        raise AudioFileError(f"{entry.path}: unreadable audio ({error})") from error


def _convert(entry: AudioEntry, sample_rate: int, cache_dir: Path) -> AudioEntry:
    if not _needs_conversion(entry, sample_rate):
        return entry
    stat = os.stat(entry.path)
    key = hashlib.sha1(f"{entry.path}|{stat.st_size}|{stat.st_mtime_ns}|{sample_rate}".encode()).hexdigest()[:20]
    target = cache_dir / key[:2] / f"{key}.wav"
    if not target.exists():
        wav = read_audio(entry.path, sample_rate)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        sf.write(str(tmp), wav.flatten().numpy(), sample_rate, subtype="FLOAT", format="WAV")
        os.replace(tmp, target)
    return AudioEntry(str(target), sf.info(str(target)).frames, sample_rate, source=entry.path)
