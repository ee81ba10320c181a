"""Training from prepared corpora (``data=shards``): a stream of WebDataset shards per loader slot.

Each rank's loader workers are *slots* (rank x workers of them in all). In each epoch a corpus'
shards are shuffled by (seed, epoch) and dealt to the slots (or, with fewer shards than slots,
every slot reads them all and keeps every n-th item); each slot passes its items through its own
shuffle buffer and cuts a random segment from each item drawn, as the folder path does. With
``data.mixture`` each draw first picks a corpus by its weight.

A slot's stream is a pure function of (seed, slot), so the data position is a sample count:
batch ``k`` of a rank comes from slot ``k mod workers``, and a run resumed at step ``S`` has
each slot skip what it drew before ``S`` (reading, not decoding, those items). The position and
the worker count it depends on are saved in every checkpoint; a resume keeps that worker count.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from codec.data.manifest import AudioEntry
from codec.data.modules import AudioDataModule, DataError, resumable_loader
from codec.data.split_record import digest

log = logging.getLogger(__name__)
CORPUS_FILE = "corpus.json"


@dataclass(frozen=True)
class Corpus:
    """A prepared corpus (``python -m codec.data prepare``) and its weight in the mixture."""

    path: Path
    weight: float
    shards: tuple[str, ...]
    index: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path, weight: float, sample_rate: int) -> Corpus:
        root = Path(path).expanduser()
        index_file = root / CORPUS_FILE
        if not index_file.is_file():
            raise DataError(
                f"data path {root} is not a prepared corpus (no {CORPUS_FILE}); prepare it with "
                f"python -m codec.data prepare SOURCE {root} --sample-rate {sample_rate}"
            )
        index = json.loads(index_file.read_text())
        if int(index["sample_rate"]) != sample_rate:
            raise DataError(
                f"{root} was prepared at {index['sample_rate']} Hz but the model runs at {sample_rate} Hz; "
                f"prepare the source again with --sample-rate {sample_rate} into another folder"
            )
        if not index["shards"]:
            raise DataError(f"{root} holds no training shard (every training file was skipped?)")
        shards = tuple(str(root.resolve() / shard["path"]) for shard in index["shards"])
        return cls(root.resolve(), float(weight), shards, index)


def read_shard(path: str) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """(FLAC bytes, metadata) of each item of one shard, in order, read as a stream."""
    pending: dict[str, Any] = {}
    with tarfile.open(path, "r|") as archive:
        for member in archive:
            key, _, extension = member.name.partition(".")
            handle = archive.extractfile(member)
            if handle is None:
                continue
            if pending and pending["key"] != key:
                pending = {}
            pending.setdefault("key", key)
            pending[extension] = handle.read()
            if "flac" in pending and "json" in pending:
                yield pending["flac"], json.loads(pending["json"])
                pending = {}


def corpus_items(
    shards: Sequence[str], slot: int, slots: int, seed: int, corpus: int, buffer_size: int
) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """One slot's endless shuffled stream of a corpus' items."""
    rng = np.random.default_rng([seed, slot, corpus, 7])
    buffer: list[tuple[bytes, dict[str, Any]]] = []
    epoch = 0
    while True:
        order = np.random.default_rng([seed, corpus, epoch]).permutation(len(shards)).tolist()
        by_shard = len(shards) >= slots
        mine = [shards[i] for i in (order[slot::slots] if by_shard else order)]
        position = drawn = 0
        for shard in mine:
            for item in read_shard(shard):
                position += 1
                if not by_shard and (position - 1) % slots != slot:
                    continue
                drawn += 1
                buffer.append(item)
                if len(buffer) >= buffer_size:
                    chosen = int(rng.integers(len(buffer)))
                    buffer[chosen], buffer[-1] = buffer[-1], buffer[chosen]
                    yield buffer.pop()
        if drawn == 0:
            raise DataError(f"a loader slot found no item in {len(shards)} shard(s): the corpus is too small")
        epoch += 1


def decode_segment(flac: bytes, start: int, frames: int) -> torch.Tensor:
    """[1, frames] float32 from ``start`` of a stored item, zero-padded at the end."""
    data, _ = sf.read(io.BytesIO(flac), start=start, frames=frames, dtype="float32", always_2d=True)
    wav = torch.from_numpy(np.ascontiguousarray(data[:, 0]))
    return torch.nn.functional.pad(wav, (0, frames - wav.shape[0])).unsqueeze(0)


class ShardStream(IterableDataset):
    """The training segments of one rank for steps ``start_step + 1 .. max_steps``."""

    def __init__(
        self,
        corpora: Sequence[Corpus],
        segment_samples: int,
        seed: int,
        batch_size: int,
        start_step: int,
        max_steps: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 256,
    ) -> None:
        self.shards = [c.shards for c in corpora]
        weights = np.array([c.weight for c in corpora], dtype=np.float64)
        self.weights = weights / weights.sum()
        self.segment_samples, self.seed, self.batch_size = segment_samples, seed, batch_size
        self.start_step, self.max_steps = start_step, max_steps
        self.rank, self.world_size, self.shuffle_buffer = rank, world_size, shuffle_buffer

    def role(self) -> tuple[int, int]:
        """(this worker's slot among the rank's, the rank's worker count). Loader batch ``j``
        comes from worker ``j mod W`` and is step ``start_step + j``, so worker ``w`` serves the
        steps of slot ``(w + start_step) mod W``."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return (worker + self.start_step) % workers, workers

    def __iter__(self) -> Iterator[torch.Tensor]:
        local, workers = self.role()
        slot, slots = self.rank * workers + local, self.world_size * workers
        skip = sum(1 for k in range(self.start_step) if k % workers == local) * self.batch_size
        emit = sum(1 for k in range(self.start_step, self.max_steps) if k % workers == local) * self.batch_size
        streams = [
            corpus_items(shards, slot, slots, self.seed, c, self.shuffle_buffer) for c, shards in enumerate(self.shards)
        ]
        mix = np.random.default_rng([self.seed, slot, 1])
        crops = np.random.default_rng([self.seed, slot, 2])
        for drawn in range(skip + emit):
            corpus = int(mix.choice(len(streams), p=self.weights)) if len(streams) > 1 else 0
            flac, meta = next(streams[corpus])
            start = int(crops.integers(0, max(int(meta["frames"]) - self.segment_samples, 0) + 1))
            if drawn >= skip:
                yield decode_segment(flac, start, self.segment_samples)


class ShardDataModule(AudioDataModule):
    """Prepared corpora: training streams from their shards, valid and test are their held-out files.

    ``path`` names one prepared corpus; ``mixture`` ([{path, weight}, ...]) several, drawn by weight.
    """

    def __init__(
        self,
        sample_rate: int,
        cache_dir: str,
        path: str | None = None,
        mixture: Sequence[dict[str, Any]] | None = None,
        shuffle_buffer: int = 256,
    ) -> None:
        super().__init__(sample_rate, cache_dir, valid_count=0, test_count=0, bad_files="skip", min_seconds=0.0)
        if bool(path) == bool(mixture):
            raise DataError("data=shards needs exactly one of data.path=PREPARED or data.mixture=[{path, weight}, ...]")
        parts: list[dict[str, Any]] = [dict(m) for m in mixture] if mixture else [{"path": path, "weight": 1.0}]
        for part in parts:
            if set(part) != {"path", "weight"} or not float(part["weight"]) > 0:
                raise DataError(f"data.mixture entry {dict(part)} must be {{path: PREPARED, weight: > 0}}")
        self.parts = parts
        self.shuffle_buffer = int(shuffle_buffer)
        self.stream_workers: int | None = None  # kept from a checkpoint's data position
        self._corpora: list[Corpus] | None = None

    @property
    def corpora(self) -> list[Corpus]:
        if self._corpora is None:
            self._corpora = [Corpus.load(p["path"], p["weight"], self.sample_rate) for p in self.parts]
        return self._corpora

    def root(self) -> Path:
        return self.corpora[0].path

    def prepare(self) -> dict[str, list[AudioEntry]]:
        if self._splits is None:
            held_out: dict[str, list[AudioEntry]] = {"valid": [], "test": []}
            for corpus in self.corpora:
                for split in held_out:
                    held_out[split] += [
                        AudioEntry(str(corpus.path / e["path"]), int(e["frames"]), self.sample_rate)
                        for e in corpus.index["heldout"][split]
                    ]
            self._splits = {"train": [], **held_out}
            hours = sum(c.index["train_hours"] for c in self.corpora)
            log.info("data: %d corpus/corpora, %.2f h in shards; valid=%d, test=%d held-out files",
                     len(self.corpora), hours, len(held_out["valid"]), len(held_out["test"]))  # fmt: skip
        return self._splits

    def split_rule(self) -> str:
        return "ShardDataModule: each prepared corpus' held-out files (plan.json); training streams from its shards"

    def split_record(self) -> dict:
        record = super().split_record()
        shards = [s for c in self.corpora for s in c.shards]
        record["counts"]["train"], record["sha256"]["train"] = len(shards), digest(shards)
        return record

    def keep_recorded_split(self, record: dict) -> list[str]:
        drawn = self.split_record()
        if {k: drawn["sha256"][k] for k in ("valid", "test")} != {k: record["sha256"][k] for k in ("valid", "test")}:
            raise DataError(
                f"the prepared corpora's held-out files differ from the run's recorded split (made over "
                f"{record['root']}); point data.path at the run's prepared corpus, or start a new run"
            )
        return [] if drawn["sha256"].get("train") == record["sha256"].get("train") else [
            "the prepared corpora's training shards differ from those recorded at the run's first start"
        ]  # fmt: skip

    def train_loader(
        self,
        batch_size: int,
        segment_seconds: float,
        seed: int,
        start_step: int,
        max_steps: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> DataLoader:
        """Batches for steps ``start_step + 1 ... max_steps``, as an uninterrupted run sees them."""
        if self.stream_workers is not None and self.stream_workers != max(num_workers, 1):
            log.info("data: %d loader worker(s), as when the run started (its stream depends on it)",
                     self.stream_workers)  # fmt: skip
            num_workers = self.stream_workers if self.stream_workers > 1 else 0
        self.stream_workers = max(num_workers, 1)
        stream = ShardStream(
            self.corpora, int(round(segment_seconds * self.sample_rate)), seed, batch_size, start_step, max_steps,
            rank, world_size, self.shuffle_buffer,
        )  # fmt: skip
        return resumable_loader(stream, batch_size, seed, num_workers, pin_memory)

    def position(self, step: int) -> dict[str, Any]:
        return {"kind": "shards", "step": step, "stream_workers": self.stream_workers}

    def restore_position(self, position: dict[str, Any] | None) -> None:
        if position and position.get("kind") == "shards" and position.get("stream_workers"):
            self.stream_workers = int(position["stream_workers"])
