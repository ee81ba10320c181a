"""Real audio for tests: speech synthesized by espeak-ng and alsa-utils' recorded speech."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.conftest import require_tool

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A group of residual quantizers shares the latent space.",
    "Neural audio codecs compress speech into discrete tokens.",
    "Please call Stella and ask her to bring these things.",
    "She sells sea shells by the sea shore every summer.",
    "The rainbow is a division of white light into many beautiful colors.",
    "When the sunlight strikes raindrops in the air they act as a prism.",
    "Six thick thistle sticks were left on the old wooden table.",
    "How much wood would a woodchuck chuck if it could chuck wood.",
    "Bright morning light filled the quiet little kitchen.",
    "Every codebook should be used, or its bits are wasted.",
    "Listen carefully to the difference between these two sounds.",
    "The train arrives at the station at seven fifteen tonight.",
    "Fresh bread and warm soup make a simple winter dinner.",
]


def espeak_corpus(directory: Path, sample_rate: int = 16000, count: int = len(SENTENCES)) -> list[Path]:
    """Synthesize ``count`` sentences with espeak-ng (varied voices) and resample with sox."""
    espeak = require_tool("espeak-ng")
    sox = require_tool("sox")
    directory.mkdir(parents=True, exist_ok=True)
    voices = ["en-us", "en", "en-us+f3", "en+m3", "en-us+f2"]
    paths = []
    for index, sentence in enumerate(SENTENCES[:count]):
        raw = directory / f"raw_{index:02d}.wav"
        out = directory / f"speech_{index:02d}.wav"
        subprocess.run([espeak, "-v", voices[index % len(voices)], "-s", "150", "-w", str(raw), sentence], check=True)
        subprocess.run([sox, str(raw), "-r", str(sample_rate), "-b", "16", str(out)], check=True)
        raw.unlink()
        paths.append(out)
    return paths


def alsa_speech() -> list[Path]:
    """alsa-utils' recorded speech (48 kHz, "front left" etc.)."""
    folder = Path("/usr/share/sounds/alsa")
    files = sorted(p for p in folder.glob("*.wav") if p.name != "Noise.wav") if folder.is_dir() else []
    if not files:
        require_tool("aplay")  # fails in CI, skips locally
    return files


def write_corrupt_wav(path: Path) -> Path:
    path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage that is not audio at all" * 3)
    return path


def write_empty_wav(path: Path, sample_rate: int = 16000) -> Path:
    sf.write(str(path), np.zeros(0, dtype=np.float32), sample_rate)
    return path
