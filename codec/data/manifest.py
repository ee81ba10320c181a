"""Scanning a folder of audio into a validated, cached manifest of usable files."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from codec.data.audio_io import AUDIO_SUFFIXES, AudioFileError, probe

log = logging.getLogger(__name__)

BAD_FILE_POLICIES = ("skip", "error")


@dataclass(frozen=True)
class AudioEntry:
    """A usable audio file; ``source`` is the original when ``path`` is a cached conversion."""

    path: str
    frames: int
    sample_rate: int
    source: str = ""

    @property
    def name(self) -> str:
        return self.source or self.path

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


@dataclass
class Manifest:
    entries: list[AudioEntry]
    skipped: dict[str, str]  # path -> reason


def _signature(files: list[Path]) -> str:
    digest = hashlib.sha1()
    for f in files:
        stat = f.stat()
        digest.update(f"{f}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def scan_folder(root: Path, cache_dir: Path | None, bad_files: str = "skip", min_seconds: float = 0.0) -> Manifest:
    """All wav/flac files under ``root``, probed once and cached by a signature of the tree.

    Files that cannot be used are named with their reason; ``bad_files='error'`` raises on
    the first scan that finds any, ``'skip'`` leaves them out and logs a count.
    """
    if bad_files not in BAD_FILE_POLICIES:
        raise ValueError(f"bad_files={bad_files!r} is unknown; choose one of {BAD_FILE_POLICIES}")
    root = Path(root).resolve()
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    signature = _signature(files)
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"{hashlib.sha1(str(root).encode()).hexdigest()[:16]}.json"
    manifest = _read_cached(cache_file, signature, min_seconds) if cache_file is not None else None
    if manifest is None:
        manifest = _probe_files(files, min_seconds)
        if cache_file is not None:
            _write_cached(cache_file, root, signature, min_seconds, manifest)
    if manifest.skipped:
        if bad_files == "error":
            reasons = "\n  ".join(manifest.skipped.values())
            raise AudioFileError(
                f"{len(manifest.skipped)} unusable audio file(s) under {root} (data.bad_files=error):\n  {reasons}"
            )
        for reason in manifest.skipped.values():
            log.warning("skipping %s", reason)
        log.warning("skipped %d of %d audio files under %s", len(manifest.skipped), len(files), root)
    return manifest


def _read_cached(cache_file: Path, signature: str, min_seconds: float) -> Manifest | None:
    """The cached scan if it is of this very tree and threshold, else None."""
    if not cache_file.exists():
        return None
    cached = json.loads(cache_file.read_text())
    if cached.get("signature") != signature or cached.get("min_seconds") != min_seconds:
        return None
    manifest = Manifest([AudioEntry(**e) for e in cached["entries"]], dict(cached["skipped"]))
    # Permissions are not in the signature: a file made unreadable since the scan is a bad file now.
    for entry in [e for e in manifest.entries if not os.access(e.path, os.R_OK)]:
        manifest.entries.remove(entry)
        manifest.skipped[entry.path] = f"{entry.path}: not readable (permission denied)"
    return manifest


def _probe_files(files: list[Path], min_seconds: float) -> Manifest:
    """Probe every file; the unusable ones go to ``skipped`` with their reason."""
    entries, skipped = [], {}
    for f in files:
        try:
            frames, rate = probe(f)
        except AudioFileError as error:
            skipped[str(f)] = str(error)
            continue
        if frames / rate < min_seconds:
            skipped[str(f)] = f"{f}: shorter than min_seconds={min_seconds} ({frames / rate:.3f} s)"
            continue
        entries.append(AudioEntry(str(f), frames, rate))
    return Manifest(entries, skipped)


def _write_cached(cache_file: Path, root: Path, signature: str, min_seconds: float, manifest: Manifest) -> None:
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "root": str(root),
        "signature": signature,
        "min_seconds": min_seconds,
        "entries": [asdict(e) for e in manifest.entries],
        "skipped": manifest.skipped,
    }
    tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, cache_file)
