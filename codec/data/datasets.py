"""Random training segments addressed by a global sample index, and full utterances.

Segment ``i`` is a pure function of (seed, i), so the batch at any step can be reproduced
after a resume without saving loader state, whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from codec.data.audio_io import read_audio
from codec.data.manifest import AudioEntry


class SegmentDataset(Dataset):
    """Fixed-length random crops, downmixed and resampled to ``sample_rate``."""

    def __init__(self, entries: Sequence[AudioEntry], sample_rate: int, segment_seconds: float, seed: int) -> None:
        if not entries:
            raise ValueError("no training files: the training split is empty")
        self.entries = list(entries)
        self.sample_rate = sample_rate
        self.segment_samples = int(round(segment_seconds * sample_rate))
        self.seed = seed
        weights = np.array([e.seconds for e in self.entries], dtype=np.float64)
        self.file_probabilities = weights / weights.sum()  # longer files are sampled more often

    def __len__(self) -> int:  # virtual: indices are unbounded
        return 2**62

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, index])
        entry = self.entries[rng.choice(len(self.entries), p=self.file_probabilities)]
        source_frames = int(np.ceil(self.segment_samples * entry.sample_rate / self.sample_rate))
        start = int(rng.integers(0, max(entry.frames - source_frames, 0) + 1))
        wav = read_audio(entry.path, self.sample_rate, start=start, frames=source_frames)
        wav = wav[:, : self.segment_samples]
        if wav.shape[-1] < self.segment_samples:
            wav = torch.nn.functional.pad(wav, (0, self.segment_samples - wav.shape[-1]))
        return wav


class RangeSampler(Sampler[int]):
    """Positions ``start ... stop-1`` of the sample stream from a given step on.

    With ``world_size`` ranks, position ``p`` of rank ``r`` is global sample ``p * world_size + r``.
    """

    def __init__(self, start: int, stop: int, rank: int = 0, world_size: int = 1) -> None:
        self.start, self.stop, self.rank, self.world_size = start, stop, rank, world_size

    def __iter__(self):
        return (p * self.world_size + self.rank for p in range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def load_utterances(
    entries: Sequence[AudioEntry], sample_rate: int, max_seconds: float | None
) -> list[tuple[str, torch.Tensor]]:
    """Full utterances [1, T] (cut at ``max_seconds``) for validation and test."""
    utterances = []
    for entry in entries:
        frames = -1 if not max_seconds else int(max_seconds * entry.sample_rate)
        utterances.append((entry.name, read_audio(entry.path, sample_rate, frames=frames)))
    return utterances
