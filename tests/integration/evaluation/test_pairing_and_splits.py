"""Scores that cannot flatter (issue 30, findings 3, 4 and 7): folders pair one to one and whole,
a run keeps the split it recorded at its first start, and computed scores are never lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from codec.evaluation.cli import main as evaluate_main
from tests.conftest import HANG_GUARD_S, REPO_ROOT
from tests.integration.training.test_train_cli import train

RATE = 16000


def tone(seconds: float, pitch: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    noise = np.random.default_rng(seed).normal(0, 0.01, t.size)
    return (0.3 * np.sin(2 * np.pi * pitch * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + noise).astype(np.float32)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """Three references and a slightly degraded decoded copy of each, as an external codec writes them."""
    references, decoded = tmp_path / "ref", tmp_path / "dec"
    references.mkdir()
    decoded.mkdir()
    for index in range(3):
        wav = tone(2.0, 150 + 40 * index, index)
        sf.write(references / f"u{index}.wav", wav, RATE)
        smeared = torch.nn.functional.avg_pool1d(torch.from_numpy(wav).view(1, 1, -1), 9, 1, 4).flatten().numpy()
        sf.write(decoded / f"u{index}.flac", np.pad(smeared, (0, 240)), RATE)  # padded to whole frames
    return references, decoded


def evaluate(capsys, *args: str) -> tuple[int, str, str]:
    code = evaluate_main([*args, "eval.metrics=[mel_distance]", "eval.workers=0"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_truncated_decoded_file_is_refused_naming_both_lengths(folders, capsys, tmp_path: Path) -> None:
    """Found: a file cut to a quarter scored best, on the overlap of lengths."""
    references, decoded = folders
    code, _, _ = evaluate(capsys, f"reference={references}", f"decoded={decoded}", f"output={tmp_path / 'ok.json'}")
    assert code == 0 and json.loads((tmp_path / "ok.json").read_text())["utterances"] == 3
    wav, _ = sf.read(decoded / "u1.flac", dtype="float32")
    sf.write(decoded / "u1.flac", wav[: len(wav) // 4], RATE)
    code, _, err = evaluate(capsys, f"reference={references}", f"decoded={decoded}", f"output={tmp_path / 'cut.json'}")
    assert code == 2 and f"{decoded / 'u1.flac'}: 8060 samples against 32000 in {references / 'u1.wav'}" in err, err
    assert "nothing was scored" in err and not (tmp_path / "cut.json").exists()


def test_missing_extra_and_doubled_stems_are_all_listed(folders, capsys, tmp_path: Path) -> None:
    references, decoded = folders
    (decoded / "u0.flac").unlink()
    sf.write(decoded / "stray.wav", tone(1.0, 100, 9), RATE)
    sf.write(decoded / "u2.wav", tone(2.0, 230, 2), RATE)  # beside u2.flac: which one is u2?
    code, _, err = evaluate(capsys, f"reference={references}", f"decoded={decoded}", f"output={tmp_path / 'x.json'}")
    assert code == 2
    assert "1 reference file(s) have no decoded counterpart" in err and "u0" in err
    assert "1 decoded file(s) have no reference: stray" in err
    assert "1 decoded stem(s) name two files (ambiguous): u2.flac and u2.wav" in err


def test_scores_that_cannot_be_written_where_asked_go_to_the_working_directory(
    folders, capsys, tmp_path: Path, monkeypatch
) -> None:
    """Found: a read-only checkpoint folder lost every per-utterance score after they were computed."""
    references, decoded = folders
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the output folder should be")
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    code, out, err = evaluate(capsys, f"reference={references}", f"decoded={decoded}", f"output={blocker / 's.json'}")
    assert code == 0 and f"the scores were written to {workdir / 's.json'} instead of {blocker / 's.json'}" in err
    assert len(json.loads((workdir / "s.json").read_text())["per_utterance"]) == 3


def make_corpus(folder: Path, count: int, start: int = 0) -> None:
    folder.mkdir(exist_ok=True)
    for index in range(start, start + count):
        sf.write(folder / f"f{index:02d}.wav", tone(1.0, 120 + 7 * index, index), RATE)


def run_args(data: Path, run_dir: Path, steps: int) -> list[str]:
    return [
        "experiment=smoke",
        "data=folder",
        f"data.path={data}",
        "data.valid_count=2",
        "data.test_count=2",
        f"trainer.max_steps={steps}",
        "logger=none",
        f"hydra.run.dir={run_dir}",
    ]


def test_a_run_keeps_its_recorded_split_and_evaluation_uses_it(tmp_path: Path) -> None:
    """Found: adding files re-split a resumed run (test files moved into training), and
    ``evaluate.py checkpoint=...`` re-split with its own defaults (8 and 8), scoring training files."""
    data, run_dir = tmp_path / "data", tmp_path / "run"
    make_corpus(data, 20)
    train(run_args(data, run_dir, 2), cwd=tmp_path)
    record = json.loads((run_dir / "splits.json").read_text())
    assert record["counts"] == {"train": 16, "valid": 2, "test": 2} and "split_seed=0" in record["rule"]

    make_corpus(data, 2, start=20)  # two more files, then more steps of the same run
    result = train(run_args(data, run_dir, 4), cwd=tmp_path)
    said = result.stdout + result.stderr
    assert "2 file(s) added under" in said and "f20.wav, f21.wav" in said
    assert json.loads((run_dir / "splits.json").read_text()) == record

    scores = tmp_path / "scores.json"
    evaluated = subprocess.run(
        [sys.executable, str(REPO_ROOT / "evaluate.py"), f"checkpoint={run_dir / 'checkpoints' / 'latest.pt'}",
         "data=folder", f"data.path={data}", "eval.metrics=[mel_distance]", "eval.workers=0", f"output={scores}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    scored = sorted(Path(u["name"]).name for u in json.loads(scores.read_text())["per_utterance"])
    assert scored == sorted(Path(name).name for name in record["splits"]["test"])

    (data / Path(record["splits"]["test"][0]).name).unlink()
    gone = train(run_args(data, run_dir, 6), cwd=tmp_path, check=False)
    assert gone.returncode != 0 and "1 file(s) of the run's recorded split" in gone.stderr + gone.stdout


def test_empty_held_out_splits_are_refused_before_training(tmp_path: Path) -> None:
    """Found: ``data.valid_count=0 data.test_count=0`` trained, then failed with "no utterances to evaluate"."""
    data = tmp_path / "data"
    make_corpus(data, 4)
    args = [*run_args(data, tmp_path / "run", 2), "data.valid_count=0", "data.test_count=0"]
    result = train(args, cwd=tmp_path, check=False)
    assert result.returncode != 0 and "the valid and test split(s) hold no files" in result.stderr + result.stdout
    assert not (tmp_path / "run" / "checkpoints").exists()
