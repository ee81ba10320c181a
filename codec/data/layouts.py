"""Corpus layouts: which files of a source tree are utterances, with their transcript and speaker.

Recognised:

- **LibriTTS** (``<speaker>/<chapter>/<id>.wav`` with ``<id>.normalized.txt`` beside it);
- **VCTK** (``wav48*/<speaker>/<id>[_mic1|_mic2].{wav,flac}`` with ``txt/<speaker>/<id>.txt``);
- **plain folders**: any wav/flac, the transcript in ``<file>.txt`` beside it when present, the
  speaker the file's parent folder (empty at the root).

The probes, WER and ``loss.semantic`` read these labels from a prepared corpus.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from codec.data.audio_io import AUDIO_SUFFIXES

LAYOUTS = ("auto", "libritts", "vctk", "plain")
VCTK_MIC = re.compile(r"_mic\d$")


@dataclass(frozen=True)
class SourceItem:
    """One utterance of a source corpus; ``relative`` (POSIX, from the source root) is its key."""

    relative: str
    transcript: str
    speaker: str


def detect_layout(root: Path) -> str:
    """``libritts`` when ``*.normalized.txt`` files sit beside the audio, ``vctk`` when a
    ``txt/`` folder and a ``wav48*`` folder sit at the root, else ``plain``."""
    if (root / "txt").is_dir() and any(p.is_dir() and p.name.startswith("wav48") for p in root.iterdir()):
        return "vctk"
    if next(root.rglob("*.normalized.txt"), None) is not None:
        return "libritts"
    return "plain"


def _read_text(path: Path) -> str:
    return " ".join(path.read_text(errors="replace").split()) if path.is_file() else ""


def _audio_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def discover(root: Path, layout: str = "auto") -> tuple[str, list[SourceItem]]:
    """The layout used and every audio file under ``root`` as a :class:`SourceItem`, sorted by key."""
    root = Path(root)
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is unknown; choose one of {LAYOUTS}")
    if layout == "auto":
        layout = detect_layout(root)
    items = []
    for path in _audio_files(root):
        relative = path.relative_to(root)
        stem = path.with_suffix("")
        if layout == "libritts":
            text = _read_text(stem.with_suffix(".normalized.txt")) or _read_text(stem.with_suffix(".original.txt"))
            speaker = relative.parts[0] if len(relative.parts) > 1 else ""
        elif layout == "vctk":
            speaker = relative.parts[1] if len(relative.parts) > 2 else ""
            utterance = VCTK_MIC.sub("", stem.name)
            text = _read_text(root / "txt" / speaker / f"{utterance}.txt")
        else:
            text = _read_text(stem.with_suffix(".txt"))
            speaker = relative.parent.as_posix() if len(relative.parts) > 1 else ""
        items.append(SourceItem(relative.as_posix(), text, speaker))
    return layout, items
