"""Prepared corpora: layouts, preparation that resumes, and a shard stream that resumes exactly
and mixes corpora by weight."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from codec.data.layouts import discover
from codec.data.prepare import PrepareError, PrepareSettings, prepare
from codec.data.shards import Corpus, ShardDataModule, ShardStream

RATE = 16000


def write_corpus(root: Path, files: int, amplitude: float = 0.3, seconds: float = 0.5) -> Path:
    """LibriTTS-style speaker/chapter/utterance FLACs at 24 kHz with transcripts; a sine whose
    pitch varies per file (so segments differ) at a fixed amplitude (so a corpus is recognisable)."""
    for i in range(files):
        folder = root / f"{10 + i % 3}" / "200"
        folder.mkdir(parents=True, exist_ok=True)
        t = np.arange(int(seconds * 24000)) / 24000
        sf.write(folder / f"{10 + i % 3}_200_{i:04d}.flac", amplitude * np.sin(2 * np.pi * (100 + 7 * i) * t), 24000)
        (folder / f"{10 + i % 3}_200_{i:04d}.normalized.txt").write_text(f"utterance {i}")
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    source = write_corpus(tmp_path_factory.mktemp("source"), 30)
    out = tmp_path_factory.mktemp("prepared")
    prepare(source, out, PrepareSettings(RATE, shard_files=5, valid_count=2, test_count=2))
    return out


def batches(corpora, start: int, stop: int, workers: int, rank: int = 0, world: int = 1) -> list[torch.Tensor]:
    stream = ShardStream(corpora, 1600, seed=3, batch_size=3, start_step=start, max_steps=stop, rank=rank,
                         world_size=world, shuffle_buffer=4)  # fmt: skip
    loader = torch.utils.data.DataLoader(stream, batch_size=3, num_workers=workers)
    return list(loader)


@pytest.mark.parametrize("workers,kill", [(0, 20), (2, 20), (2, 21)])
def test_a_stream_killed_and_resumed_gives_the_batches_of_40_uninterrupted_steps(
    prepared: Path, workers: int, kill: int
) -> None:
    corpora = [Corpus.load(prepared, 1.0, RATE)]
    straight = batches(corpora, 0, 40, workers)
    killed = batches(corpora, 0, kill, workers)
    resumed = batches(corpora, kill, 40, workers)
    assert len(straight) == 40 and len(killed) == kill and len(resumed) == 40 - kill
    for step, (a, b) in enumerate(zip(straight, killed + resumed)):
        assert torch.equal(a, b), f"batch of step {step + 1} differs after the resume"
    assert len({tuple(b.flatten()[:50].tolist()) for b in straight}) > 30, "batches must differ from step to step"


def test_ranks_read_different_segments(prepared: Path) -> None:
    corpora = [Corpus.load(prepared, 1.0, RATE)]
    first, second = batches(corpora, 0, 5, 0, rank=0, world=2), batches(corpora, 0, 5, 0, rank=1, world=2)
    assert all(not torch.equal(a, b) for a, b in zip(first, second))


def test_a_two_corpus_mixture_draws_within_sampling_error_of_its_weights(tmp_path: Path) -> None:
    quiet, loud = tmp_path / "quiet", tmp_path / "loud"
    for name, amplitude in (("quiet", 0.1), ("loud", 0.5)):
        source = write_corpus(tmp_path / f"{name}_source", 12, amplitude)
        prepare(source, tmp_path / name, PrepareSettings(RATE, shard_files=3, valid_count=1, test_count=1))
    corpora = [Corpus.load(quiet, 0.8, RATE), Corpus.load(loud, 0.2, RATE)]
    drawn = torch.cat(batches(corpora, 0, 700, 0))  # 2,100 segments
    peaks = drawn.abs().amax(dim=(1, 2))
    assert torch.all((peaks - 0.1).abs() < 0.01) == False  # noqa: E712 (both corpora are drawn)
    share = float(((peaks - 0.1).abs() < 0.02).float().mean())
    sigma = (0.8 * 0.2 / len(peaks)) ** 0.5
    assert abs(share - 0.8) < 4 * sigma, f"quiet corpus drawn {share:.3f} of the time, weight 0.8 (sigma {sigma:.3f})"


def test_the_module_serves_held_out_files_with_transcripts_and_keeps_the_position(prepared: Path) -> None:
    data = ShardDataModule(RATE, "unused", path=str(prepared))
    splits = data.prepare()
    assert len(splits["valid"]) == 2 and len(splits["test"]) == 2 and splits["train"] == []
    assert all(text.startswith("utterance ") for text in data.transcripts("valid").values())
    assert data.split_record()["counts"]["train"] == 6  # 26 training files in shards of 5
    loader = data.train_loader(2, 0.1, seed=0, start_step=0, max_steps=2, num_workers=2)
    assert len(list(loader)) == 2 and data.position(2) == {"kind": "shards", "step": 2, "stream_workers": 2}
    again = ShardDataModule(RATE, "unused", path=str(prepared))
    again.restore_position(data.position(2))
    again.train_loader(2, 0.1, seed=0, start_step=2, max_steps=4, num_workers=0)
    assert again.stream_workers == 2, "a resume keeps the worker count its stream was drawn with"


def test_wrong_paths_and_rates_are_named(prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a prepared corpus .* python -m codec.data prepare"):
        ShardDataModule(RATE, "unused", path=str(tmp_path)).prepare()
    with pytest.raises(ValueError, match="prepared at 16000 Hz but the model runs at 24000 Hz"):
        ShardDataModule(24000, "unused", path=str(prepared)).prepare()
    with pytest.raises(ValueError, match="exactly one of data.path"):
        ShardDataModule(RATE, "unused")


def test_preparation_resumes_after_a_kill_and_converts_only_what_is_missing(tmp_path: Path) -> None:
    source = write_corpus(tmp_path / "source", 14)
    (source / "10" / "200" / "broken.flac").write_bytes(b"not audio")
    out = tmp_path / "out"
    settings = PrepareSettings(RATE, shard_files=4, valid_count=1, test_count=1)
    first = prepare(source, out, settings)
    assert first["files"] == 15 and first["corpus"]
    corpus = json.loads((out / "corpus.json").read_text())
    assert "unreadable audio" in corpus["skipped"]["10/200/broken.flac"]
    # a kill in the middle of a unit: its record never got written, its tar is partial
    (out / "units" / "train-000001.json").unlink()
    (out / "shards" / "train-000001.tar").write_bytes(b"partial")
    again = prepare(source, out, settings)
    assert again["converted"] == {"train-000001": 4}
    assert json.loads((out / "corpus.json").read_text()) == corpus
    assert prepare(source, out, settings)["files"] == 0  # idempotent
    with pytest.raises(PrepareError, match="another source or settings"):
        prepare(source, out, PrepareSettings(RATE, shard_files=5, valid_count=1, test_count=1))


def test_shards_are_webdataset_tar_files(prepared: Path) -> None:
    import webdataset as wds

    samples = list(wds.WebDataset(str(prepared / "shards" / "train-000000.tar"), shardshuffle=False))
    assert len(samples) == 5 and {"__key__", "flac", "json"} <= set(samples[0])
    meta = json.loads(samples[0]["json"])
    audio, rate = sf.read(__import__("io").BytesIO(samples[0]["flac"]))
    assert rate == RATE and len(audio) == meta["frames"] == 8000 and meta["transcript"].startswith("utterance")


def test_layouts_give_transcripts_and_speakers(tmp_path: Path) -> None:
    vctk = tmp_path / "vctk"
    (vctk / "wav48_silence_trimmed" / "p225").mkdir(parents=True)
    (vctk / "txt" / "p225").mkdir(parents=True)
    sf.write(vctk / "wav48_silence_trimmed" / "p225" / "p225_001_mic1.flac", np.zeros(480), 48000)
    (vctk / "txt" / "p225" / "p225_001.txt").write_text("Please call Stella.\n")
    layout, items = discover(vctk)
    assert layout == "vctk" and items[0].speaker == "p225" and items[0].transcript == "Please call Stella."
    layout, items = discover(write_corpus(tmp_path / "libritts", 2))
    assert layout == "libritts" and items[0].speaker == "10" and items[0].transcript == "utterance 0"
    plain = tmp_path / "plain" / "alice"
    plain.mkdir(parents=True)
    sf.write(plain / "a.wav", np.zeros(160), 16000)
    layout, items = discover(tmp_path / "plain")
    assert layout == "plain" and items[0].speaker == "alice" and items[0].transcript == ""
