"""A deterministic speech-like corpus, synthesized so training works offline anywhere.

Each utterance strings together voiced segments (harmonics of a moving pitch shaped by moving
formants), noise bursts (fricative-like) and silences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from codec.data.audio_io import write_audio
from codec.data.cached_folder import build_folder_once

# (F1, F2, F3) targets in Hz of a few vowels; voiced segments glide between two of them.
VOWEL_FORMANTS = np.array(
    [[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]], dtype=np.float64
)
FORMANT_BANDWIDTHS = np.array([90.0, 110.0, 170.0])


def _voiced(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    t = np.arange(n) / sample_rate
    base = rng.uniform(90, 230)
    f0 = (
        base
        * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(1, 4) * t + rng.uniform(0, 2 * np.pi)))
        * np.linspace(1.0, rng.uniform(0.8, 1.2), n)
    )
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    a, b = VOWEL_FORMANTS[rng.choice(len(VOWEL_FORMANTS), 2, replace=False)]
    glide = np.linspace(0.0, 1.0, n)[:, None]
    formants = (1 - glide) * a + glide * b  # [n, 3]
    signal = np.zeros(n)
    for k in range(1, int(sample_rate / 2 / f0.min())):
        freq = k * f0
        below_nyquist = freq < 0.45 * sample_rate
        gain = np.sum(1.0 / (1.0 + ((freq[:, None] - formants) / FORMANT_BANDWIDTHS) ** 2), axis=1) / k**0.5
        signal += below_nyquist * gain * np.sin(k * phase)
    envelope = np.sin(np.pi * np.linspace(0, 1, n)) ** 0.5
    return signal * envelope


def _noise_burst(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    noise = rng.standard_normal(n)
    spectrum = np.fft.rfft(noise)
    freqs = np.fft.rfftfreq(n, 1 / sample_rate)
    centre = rng.uniform(0.15, 0.4) * sample_rate
    spectrum *= np.exp(-(((freqs - centre) / (0.1 * sample_rate)) ** 2))
    return np.fft.irfft(spectrum, n) * np.hanning(n)


def synthesize_utterance(rng: np.random.Generator, seconds: float, sample_rate: int) -> np.ndarray:
    total = int(seconds * sample_rate)
    pieces, length = [], 0
    while length < total:
        kind = rng.choice(["voiced", "voiced", "voiced", "noise", "silence"])
        n = int(sample_rate * (rng.uniform(0.12, 0.35) if kind == "voiced" else rng.uniform(0.04, 0.15)))
        if kind == "voiced":
            piece = _voiced(rng, n, sample_rate)
        elif kind == "noise":
            piece = 0.3 * _noise_burst(rng, n, sample_rate)
        else:
            piece = np.zeros(n)
        pieces.append(piece)
        length += n
    signal = np.concatenate(pieces)[:total]
    return (0.5 * signal / (np.abs(signal).max() + 1e-9)).astype(np.float32)


def ensure_demo_corpus(cache_dir: Path, sample_rate: int, utterances: int, utterance_seconds: float, seed: int) -> Path:
    """Generate the corpus once into ``cache_dir`` (atomically) and return its folder."""

    def write(staging: Path) -> None:
        for index in range(utterances):
            rng = np.random.default_rng([seed, index])
            write_audio(
                staging / f"utt_{index:04d}.wav", synthesize_utterance(rng, utterance_seconds, sample_rate), sample_rate
            )

    return build_folder_once(
        Path(cache_dir) / f"sr{sample_rate}_n{utterances}_d{utterance_seconds:g}_seed{seed}", write
    )
