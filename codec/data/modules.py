"""Data modules: where the audio comes from, how it splits, and the loaders built on it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from codec.data.datasets import RangeSampler, SegmentDataset, load_utterances
from codec.data.demo_corpus import ensure_demo_corpus
from codec.data.manifest import BAD_FILE_POLICIES, AudioEntry, Manifest, scan_folder
from codec.data.resample_cache import cache_resampled
from codec.data.speech_corpus import GRAMMAR_FILE, SPLIT_FOLDERS, TRANSCRIPT_SUFFIX, ensure_speech_corpus
from codec.data.split_record import make_record, relative_name
from codec.signals import ignore_stop_signals

log = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")
ALL_FILES = "all"  # every usable file of the data, whatever its split (for scoring whole folders)


class DataError(ValueError):
    """Data that cannot be trained on (missing path, too few files); names the config key."""


class AudioDataModule:
    """A folder of audio split into train/valid/test; subclasses say where the folder is."""

    def __init__(
        self,
        sample_rate: int,
        cache_dir: str,
        valid_count: int,
        test_count: int,
        bad_files: str = "skip",
        min_seconds: float = 0.1,
        split_seed: int = 0,
        resample_cache: bool = False,
    ) -> None:
        if bad_files not in BAD_FILE_POLICIES:
            raise DataError(f"data.bad_files={bad_files!r} is unknown; choose one of {list(BAD_FILE_POLICIES)}")
        self.sample_rate = int(sample_rate)
        self.cache_dir = Path(cache_dir)
        self.valid_count = int(valid_count)
        self.test_count = int(test_count)
        self.bad_files = bad_files
        self.min_seconds = float(min_seconds)
        self.split_seed = int(split_seed)
        self.resample_cache = bool(resample_cache)
        self._splits: dict[str, list[AudioEntry]] | None = None
        self.manifest: Manifest | None = None

    def root(self) -> Path:
        raise NotImplementedError

    def prepare(self) -> dict[str, list[AudioEntry]]:
        """Scan, validate and split the files; fails with a clear error before training."""
        if self._splits is not None:
            return self._splits
        root = self.root()
        self.manifest = scan_folder(root, self.cache_dir / "manifests", self.bad_files, self.min_seconds)
        entries = self.manifest.entries
        needed = self.valid_count + self.test_count + 1
        if len(entries) < needed:
            raise DataError(
                f"data.path={root} has {len(entries)} usable audio file(s); at least {needed} are needed "
                f"(data.valid_count={self.valid_count} + data.test_count={self.test_count} + 1 for training)"
            )
        if self.resample_cache:
            entries = cache_resampled(entries, self.sample_rate, self.cache_dir / "resampled", self.bad_files)
        self._splits = {
            name: sorted(split, key=lambda e: e.name) for name, split in self.assign_splits(entries).items()
        }
        log.info("data: %s", ", ".join(f"{k}={len(v)}" for k, v in self._splits.items()))
        return self._splits

    def assign_splits(self, entries: list[AudioEntry]) -> dict[str, list[AudioEntry]]:
        """A seeded random split of ``valid_count`` and ``test_count`` files; the rest trains."""
        order = np.random.default_rng(self.split_seed).permutation(len(entries))
        shuffled = [entries[i] for i in order]
        return {
            "test": shuffled[: self.test_count],
            "valid": shuffled[self.test_count : self.test_count + self.valid_count],
            "train": shuffled[self.test_count + self.valid_count :],
        }

    def split_rule(self) -> str:
        """How :meth:`assign_splits` chose, for the split record."""
        return (
            f"{type(self).__name__}: seeded shuffle (split_seed={self.split_seed}), then "
            f"test_count={self.test_count}, valid_count={self.valid_count}, the rest trains"
        )

    def split_record(self) -> dict:
        """The split as drawn now, by file names relative to the data root (``codec.data.split_record``)."""
        root = self.root()
        names = {split: [relative_name(e.name, root) for e in entries] for split, entries in self.prepare().items()}
        return make_record(root, self.split_rule(), names)

    def keep_recorded_split(self, record: dict) -> list[str]:
        """Use a run's recorded split instead of drawing one; returns warnings naming what changed.

        Splits present in ``record`` replace the drawn ones (a checkpoint's record holds valid and
        test only). A recorded file that is gone is an error; added files are left out.
        """
        drawn = self.prepare()
        root = self.root()
        by_name = {relative_name(e.name, root): e for entries in drawn.values() for e in entries}
        recorded: dict[str, list[str]] = record["splits"]
        gone = sorted(n for names in recorded.values() for n in names if n not in by_name)
        if gone:
            shown = ", ".join(gone[:5]) + (f" and {len(gone) - 5} more" if len(gone) > 5 else "")
            raise DataError(
                f"{len(gone)} file(s) of the run's recorded split (made over {record['root']}) are not usable under "
                f"{root}: {shown}. Restore them, point data.path at the run's data, or start a new run"
            )
        kept = {n for names in recorded.values() for n in names}
        self._splits = {
            split: sorted((by_name[n] for n in recorded[split]), key=lambda e: e.name) if split in recorded else entries
            for split, entries in drawn.items()
        }
        warnings = []
        if "train" in recorded:
            added = sorted(set(by_name) - kept)
            if added:
                shown = ", ".join(added[:5]) + (f" and {len(added) - 5} more" if len(added) > 5 else "")
                warnings.append(
                    f"{len(added)} file(s) added under {root} since the split was recorded are not used by this run "
                    f"(start a new run to train on them): {shown}"
                )
        if "train" not in recorded:  # the training files must not include held-out ones
            self._splits["train"] = [e for e in drawn["train"] if relative_name(e.name, root) not in kept]
        return warnings

    def split(self, name: str) -> list[AudioEntry]:
        """The files of a split, or of all splits for ``"all"``."""
        if name == ALL_FILES:
            return sorted((e for split in self.prepare().values() for e in split), key=lambda e: e.name)
        if name not in SPLITS:
            raise ValueError(f"split={name!r} is unknown; choose one of {(*SPLITS, ALL_FILES)}")
        return self.prepare()[name]

    def transcripts(self, split: str) -> dict[str, str]:
        """Known transcripts of a split's files: ``<file>.txt`` beside the audio, keyed by file name."""
        found = {}
        for entry in self.split(split):
            sidecar = Path(entry.name).with_suffix(TRANSCRIPT_SUFFIX)
            if sidecar.is_file():
                found[entry.name] = sidecar.read_text().strip()
        return found

    def asr_grammar(self) -> Path | None:
        """A JSGF grammar of the corpus' sentences (``grammar.jsgf`` at its root), if it has one."""
        grammar = self.root() / GRAMMAR_FILE
        return grammar if grammar.is_file() else None

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
        """Batches for steps ``start_step + 1 ... max_steps``, identical across resumes.

        Under DDP each rank reads its own slice of the global sample stream.
        """
        dataset = SegmentDataset(self.split("train"), self.sample_rate, segment_seconds, seed)
        sampler = RangeSampler(start_step * batch_size, max_steps * batch_size, rank, world_size)
        return resumable_loader(dataset, batch_size, seed, num_workers, pin_memory, sampler)

    def position(self, step: int) -> dict:
        """The data position a checkpoint keeps: here the step alone, since the segments of a
        step are a pure function of (seed, step) whatever the number of loader workers."""
        return {"kind": "indexed", "step": step}

    def restore_position(self, position: dict | None) -> None:
        """Continue from a checkpoint's :meth:`position` (nothing to restore for indexed data)."""

    def utterances(
        self, split: str, max_utterances: int | None = None, max_seconds: float | None = None
    ) -> list[tuple[str, torch.Tensor]]:
        entries = self.split(split)
        if max_utterances:
            entries = entries[:max_utterances]
        return load_utterances(entries, self.sample_rate, max_seconds)


def resumable_loader(
    dataset: Dataset, batch_size: int, seed: int, num_workers: int, pin_memory: bool, sampler: Sampler | None = None
) -> DataLoader:
    """A training loader whose creation draws nothing from the global RNG (a private generator:
    otherwise a resumed run would diverge from an uninterrupted one) and whose workers leave
    stop signals to the main process."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=ignore_stop_signals,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
    )


class FolderDataModule(AudioDataModule):
    """Any directory tree of wav/flac files (``data.path``)."""

    def __init__(
        self,
        path: str,
        sample_rate: int,
        cache_dir: str,
        valid_count: int = 8,
        test_count: int = 8,
        bad_files: str = "skip",
        min_seconds: float = 0.1,
        split_seed: int = 0,
        resample_cache: bool = True,
    ) -> None:
        super().__init__(
            sample_rate, cache_dir, valid_count, test_count, bad_files, min_seconds, split_seed, resample_cache
        )
        if not str(path).strip():
            raise DataError("data.path is empty; set data.path=/folder/of/audio (it is never the working directory)")
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise DataError(f"data.path={path} does not exist or is not a directory")

    def root(self) -> Path:
        return self.path


class SyntheticDataModule(AudioDataModule):
    """A synthetic speech-like corpus (harmonics, formants, noise bursts), generated on first use.

    Cheaper than speech and free of any library; kept for tests of the data path.
    """

    def __init__(
        self,
        sample_rate: int,
        cache_dir: str,
        utterances: int = 48,
        utterance_seconds: float = 2.0,
        seed: int = 0,
        valid_count: int = 4,
        test_count: int = 4,
    ) -> None:
        super().__init__(sample_rate, cache_dir, valid_count, test_count, bad_files="error", min_seconds=0.0)
        self.utterance_count = int(utterances)
        self.utterance_seconds = float(utterance_seconds)
        self.seed = int(seed)

    def root(self) -> Path:
        return ensure_demo_corpus(
            self.cache_dir, self.sample_rate, self.utterance_count, self.utterance_seconds, self.seed
        )


class SpeechDataModule(AudioDataModule):
    """The embedded multi-speaker speech corpus (espeak-ng), synthesized on first use.

    Splits are the corpus' own: held-out voices and sentences for valid and test.
    """

    def __init__(
        self, sample_rate: int, cache_dir: str, voices: dict[str, list[str]], utterances: dict[str, int], seed: int = 0
    ) -> None:
        counts = {split: int(utterances.get(split, 0)) for split in SPLIT_FOLDERS}
        if counts["train"] < 1 or counts["valid"] < 1 or counts["test"] < 1:
            raise DataError(f"data.utterances={counts} needs at least one utterance in each of train, valid and test")
        super().__init__(sample_rate, cache_dir, counts["valid"], counts["test"], bad_files="error", min_seconds=0.0)
        self.voices = {split: list(voices.get(split, [])) for split in SPLIT_FOLDERS}
        self.utterance_counts = counts
        self.seed = int(seed)
        held_in = set(self.voices["train"])
        for split in ("valid", "test"):
            if held_in & set(self.voices[split]):
                log.warning(
                    "data.voices.%s shares %s with training: its scores are not on unseen voices",
                    split,
                    sorted(held_in & set(self.voices[split])),
                )

    def root(self) -> Path:
        return ensure_speech_corpus(self.cache_dir, self.sample_rate, self.voices, self.utterance_counts, self.seed)

    def split_rule(self) -> str:
        return "SpeechDataModule: the corpus' own train/valid/test folders (held-out voices and sentences)"

    def assign_splits(self, entries: list[AudioEntry]) -> dict[str, list[AudioEntry]]:
        root = self.root().resolve()
        return {
            split: [e for e in entries if Path(e.name).relative_to(root).parts[0] == split] for split in SPLIT_FOLDERS
        }
