"""Data: the embedded speech and synthetic corpora, folders with bad files, resampling and reproducible segments."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from codec.data import AudioFileError, DataError, FolderDataModule, SyntheticDataModule, read_audio
from codec.data.datasets import SegmentDataset
from tests.audio_fixtures import alsa_speech, espeak_corpus, write_corrupt_wav, write_empty_wav


def test_synthetic_corpus_is_deterministic_and_cached(tmp_path: Path) -> None:
    first = SyntheticDataModule(
        16000, str(tmp_path / "a"), utterances=6, utterance_seconds=1.0, valid_count=1, test_count=1
    )
    second = SyntheticDataModule(
        16000, str(tmp_path / "b"), utterances=6, utterance_seconds=1.0, valid_count=1, test_count=1
    )
    a, b = first.utterances("train"), second.utterances("train")
    assert len(a) == 4
    for (_, x), (_, y) in zip(a, b):
        assert torch.equal(x, y)
        assert x.shape == (1, 16000)
        assert 0.05 < float(x.abs().max()) <= 0.5  # not silent, not clipped
    # speech-like: voiced stretches and pauses (10 ms frames of high and of zero energy)
    frames = torch.cat([x for _, x in a], dim=1).view(-1, 160).pow(2).mean(dim=1)
    assert (frames < 1e-8).any() and (frames > 1e-3).any()
    folder = first.root()
    stamp = (folder / "utt_0000.wav").stat().st_mtime_ns
    SyntheticDataModule(
        16000, str(tmp_path / "a"), utterances=6, utterance_seconds=1.0, valid_count=1, test_count=1
    ).prepare()
    assert (folder / "utt_0000.wav").stat().st_mtime_ns == stamp


def speech_corpus(cache: Path, sample_rate: int = 16000):
    from codec.config import build, compose_config

    return build(compose_config(["data=demo_small", f"paths.cache={cache}", f"sample_rate={sample_rate}"]).data, "data")


def test_speech_corpus_holds_out_voices_and_sentences_and_keeps_transcripts(tmp_path: Path) -> None:
    data = speech_corpus(tmp_path / "a")
    splits = data.prepare()
    assert {k: len(v) for k, v in splits.items()} == {"train": 12, "valid": 2, "test": 2}
    voices, sentences = {}, {}
    for split, entries in splits.items():
        transcripts = data.transcripts(split)
        assert set(transcripts) == {e.name for e in entries}  # every utterance has its text
        voices[split] = {Path(e.name).stem.rsplit("_", 1)[0] for e in entries}
        sentences[split] = set(transcripts.values())
        for entry in entries:
            assert entry.sample_rate == 16000 and 1.0 < entry.seconds < 6.0
    for held_out in ("valid", "test"):
        assert not voices[held_out] & voices["train"] and not sentences[held_out] & sentences["train"]
        # held-out voices use espeak variants no training voice uses
        assert not {v.split("_")[-1] for v in voices[held_out]} & {v.split("_")[-1] for v in voices["train"]}
    assert len(voices["train"]) == 12 and len(sentences["train"]) == 12
    assert data.asr_grammar() is not None and "public <sentence>" in data.asr_grammar().read_text()
    # speech: loud voiced stretches and near-silent gaps between words
    wav = data.utterances("valid")[0][1]
    energy = wav.view(-1)[: wav.shape[-1] // 160 * 160].view(-1, 160).pow(2).mean(dim=1)
    assert float(wav.abs().max()) == pytest.approx(0.7, abs=0.01)
    assert (energy < 1e-5).any() and (energy > 1e-2).any()


def test_speech_corpus_is_deterministic_cached_and_made_at_the_model_rate(tmp_path: Path) -> None:
    first, second = speech_corpus(tmp_path / "a"), speech_corpus(tmp_path / "b")
    for (name_a, a), (name_b, b) in zip(first.utterances("train"), second.utterances("train")):
        assert Path(name_a).name == Path(name_b).name and torch.equal(a, b)
    stamp = Path(first.split("train")[0].path).stat().st_mtime_ns
    assert Path(speech_corpus(tmp_path / "a").split("train")[0].path).stat().st_mtime_ns == stamp
    at_24k = speech_corpus(tmp_path / "a", sample_rate=24000)
    assert {e.sample_rate for e in at_24k.split("all")} == {24000}
    assert len(at_24k.split("all")) == 16


def test_missing_path_is_an_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.path=.*nowhere.*does not exist"):
        FolderDataModule(str(tmp_path / "nowhere"), 16000, str(tmp_path / "cache"))


def test_corrupt_and_empty_files_are_skipped_and_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    speech = espeak_corpus(tmp_path / "audio", count=5)
    corrupt = write_corrupt_wav(tmp_path / "audio" / "corrupt.wav")
    empty = write_empty_wav(tmp_path / "audio" / "empty.wav")
    module = FolderDataModule(str(tmp_path / "audio"), 16000, str(tmp_path / "cache"), valid_count=1, test_count=1)
    with caplog.at_level(logging.WARNING):
        splits = module.prepare()
    assert sum(len(v) for v in splits.values()) == len(speech)
    assert str(corrupt) in caplog.text and str(empty) in caplog.text
    assert "skipped 2 of 7" in caplog.text
    assert set(module.manifest.skipped) == {str(corrupt), str(empty)}
    assert "empty audio" in module.manifest.skipped[str(empty)]

    strict = FolderDataModule(
        str(tmp_path / "audio"), 16000, str(tmp_path / "cache"), valid_count=1, test_count=1, bad_files="error"
    )
    with pytest.raises(AudioFileError) as error:
        strict.prepare()
    assert str(corrupt) in str(error.value) and str(empty) in str(error.value)


def test_too_few_files_is_explained(tmp_path: Path) -> None:
    espeak_corpus(tmp_path / "audio", count=2)
    module = FolderDataModule(str(tmp_path / "audio"), 16000, str(tmp_path / "cache"), valid_count=1, test_count=1)
    with pytest.raises(DataError, match=r"2 usable audio file.*data\.valid_count=1"):
        module.prepare()


def alsa_folder(tmp_path: Path) -> Path:
    """A folder of four of alsa-utils' 48 kHz recordings."""
    audio = tmp_path / "alsa"
    audio.mkdir()
    for f in alsa_speech()[:4]:
        (audio / f.name).symlink_to(f)
    return audio


def test_recorded_48k_speech_is_resampled_and_segmented(tmp_path: Path) -> None:
    audio = alsa_folder(tmp_path)
    # an odd-rate stereo file: downmixed and resampled like the rest
    stereo = np.stack([np.sin(np.linspace(0, 2000, 22050)), np.zeros(22050)], axis=1).astype(np.float32)
    sf.write(str(audio / "stereo_22050.flac"), stereo, 22050)
    module = FolderDataModule(
        str(audio), 24000, str(tmp_path / "cache"), valid_count=1, test_count=1, resample_cache=False
    )
    splits = module.prepare()
    rates = {e.sample_rate for split in splits.values() for e in split}
    assert rates == {48000, 22050}
    dataset = SegmentDataset(splits["train"], 24000, 0.5, seed=3)
    for index in range(6):
        segment = dataset[index]
        assert segment.shape == (1, 12000)
        assert torch.equal(segment, dataset[index])  # a pure function of (seed, index)
    name, utterance = module.utterances("test")[0]
    entry = splits["test"][0]
    assert utterance.shape[-1] == pytest.approx(entry.frames * 24000 / entry.sample_rate, abs=2)


def test_resample_cache_holds_model_rate_copies(tmp_path: Path) -> None:
    audio = alsa_folder(tmp_path)
    cached = FolderDataModule(
        str(audio), 16000, str(tmp_path / "cache"), valid_count=1, test_count=1, resample_cache=True
    )
    direct = FolderDataModule(
        str(audio), 16000, str(tmp_path / "cache"), valid_count=1, test_count=1, resample_cache=False
    )
    for split in ("train", "valid", "test"):
        for a, b in zip(cached.split(split), direct.split(split)):
            assert a.source == b.path and a.name == b.name  # same files, same order
            assert a.sample_rate == 16000 and b.sample_rate == 48000
            assert Path(a.path).is_relative_to(tmp_path / "cache" / "resampled")
            info = sf.info(a.path)
            assert info.channels == 1 and info.subtype == "FLOAT"
            # the copy is exactly the whole file resampled by the same resampler
            assert torch.equal(read_audio(a.path), read_audio(b.path, 16000))
    stamp = Path(cached.split("train")[0].path).stat().st_mtime_ns
    again = FolderDataModule(
        str(audio), 16000, str(tmp_path / "cache"), valid_count=1, test_count=1, resample_cache=True
    )
    assert Path(again.split("train")[0].path).stat().st_mtime_ns == stamp  # reused, not rewritten


def test_loader_from_a_step_continues_the_same_stream(tmp_path: Path) -> None:
    module = SyntheticDataModule(16000, str(tmp_path), utterances=6, utterance_seconds=1.0, valid_count=1, test_count=1)
    full = list(module.train_loader(2, 0.25, seed=5, start_step=0, max_steps=6))
    resumed = list(module.train_loader(2, 0.25, seed=5, start_step=3, max_steps=6, num_workers=2))
    assert len(full) == 6 and len(resumed) == 3
    for a, b in zip(full[3:], resumed):
        assert torch.equal(a, b)


def test_folder_cache_paths_are_single(tmp_path: Path) -> None:
    """data=folder as composed: manifests in <paths.cache>/manifests, copies in <paths.cache>/resampled
    (they were doubled once: .cache/manifests/manifests and .cache/manifests/resampled)."""
    from codec.config import build, compose_config

    audio = alsa_folder(tmp_path)
    cfg = compose_config(
        [
            "data=folder",
            f"data.path={audio}",
            f"paths.cache={tmp_path / 'cache'}",
            "data.valid_count=1",
            "data.test_count=1",
        ]
    )
    build(cfg.data, "data").prepare()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["manifests", "resampled"]
    assert (
        list((tmp_path / "cache" / "manifests").glob("*.json"))
        and not (tmp_path / "cache" / "manifests" / "manifests").exists()
    )
    assert list((tmp_path / "cache" / "resampled").rglob("*.wav"))
