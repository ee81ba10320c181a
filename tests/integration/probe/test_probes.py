"""Token probes: a tiny codec trained through train.py, then its frozen codes probed for speaker
and content, against chance and against a codes-shuffled control; the CLI on its checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from codec.probe import LabelledCodes, ProbeDataError, TokenProbes
from codec.probe.heads import greedy_ctc, ids_to_text, text_to_ids
from codec.probe.labels import speaker_of
from tests.conftest import HANG_GUARD_S, REPO_ROOT

# The smoke codec, a little wider, on 10 utterances per training voice of the demo corpus.
PROBED_RUN = [
    "experiment=smoke",
    "probe=default",
    "data.utterances.train=120",
    "trainer.max_steps=60",
    "probe.mask_codebooks=false",
    # 400 probe steps: at 200 the content probe beat its shuffled control with one thread per process
    # but not with two (0.690 against 0.680); at 400 it does with either (0.703 < 0.715, 0.689 < 0.709).
    "probe.steps=400",
    "encoder.channels=8",
    "encoder.dimension=32",
]


@pytest.fixture(scope="module")
def probed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("probed")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), *PROBED_RUN],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return cwd


def run_dir(cwd: Path) -> Path:
    (found,) = list((cwd / "runs" / "smoke").iterdir())
    return found


def test_probes_read_speaker_and_content_from_a_trained_codec(probed_run: Path) -> None:
    status = json.loads((run_dir(probed_run) / "status.json").read_text())
    probe = status["probe"]
    assert (
        probe["probe/utterances_train"] == 96 and probe["probe/utterances_test"] == 24
    )  # every 5th of 10 per voice held out
    assert probe["probe/speaker_chance"] == pytest.approx(1 / 12)
    assert probe["probe/speaker_accuracy"] > 1.5 * probe["probe/speaker_chance"], probe
    # the order of the codes carries content: the probe beats the same probe on time-shuffled codes
    assert probe["probe/content_cer"] < probe["probe/content_cer_shuffled"], probe
    client = MlflowClient(tracking_uri=f"sqlite:///{probed_run / 'mlflow.db'}")
    logged = client.get_run(status["run_id"]).data.metrics
    assert logged["probe/speaker_accuracy"] == pytest.approx(probe["probe/speaker_accuracy"])
    assert logged["probe/content_cer"] == pytest.approx(probe["probe/content_cer"])


def test_probe_cli_masks_each_group_and_layer_and_logs_to_the_run(probed_run: Path, tmp_path: Path) -> None:
    directory = run_dir(probed_run)
    out = tmp_path / "probe.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "codec.probe",
            str(directory / "checkpoints" / "latest.pt"),
            "probe.tasks=[speaker]",
            "probe.steps=30",
            "probe.mask_codebooks=true",
            "--out",
            str(out),
        ],
        cwd=probed_run,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(out.read_text())
    # the smoke codec is 2 groups x 2 layers: one probe per masked group and per masked layer
    assert {f"probe/speaker_accuracy_without_{name}" for name in ("group0", "group1", "layer0", "layer1")} <= set(
        metrics
    )
    assert "probe/content_cer" not in metrics
    run_id = json.loads((directory / "status.json").read_text())["run_id"]
    assert f"logged to MLflow run {run_id}" in result.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{probed_run / 'mlflow.db'}")
    assert "probe/speaker_accuracy_without_layer1" in client.get_run(run_id).data.metrics


def test_probe_cli_names_a_missing_checkpoint(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "codec.probe", str(tmp_path / "nope.pt")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert result.returncode == 2 and "nope.pt does not exist" in result.stderr


def labelled(speakers: list[int], texts: list[str], groups: int = 2, layers: int = 3) -> LabelledCodes:
    codes = [torch.randint(0, 8, (groups * layers, 20)) for _ in speakers]
    return LabelledCodes(
        [f"s{s}_{i}" for i, s in enumerate(speakers)],
        codes,
        speakers,
        sorted({f"s{s}" for s in speakers}),
        texts,
        8,
        groups,
        layers,
        50.0,
    )


def test_masks_follow_the_group_major_code_layout() -> None:
    masks = TokenProbes().masks(labelled([0, 1], ["a", "b"], groups=2, layers=3))
    assert masks[""] == [] and masks["_without_group1"] == [3, 4, 5] and masks["_without_layer2"] == [2, 5]
    assert set(masks) == {
        "",
        "_without_group0",
        "_without_group1",
        "_without_layer0",
        "_without_layer1",
        "_without_layer2",
    }
    assert set(TokenProbes().masks(labelled([0, 1], ["a", "b"], groups=1, layers=1))) == {""}


def test_bad_labels_are_named() -> None:
    assert speaker_of("train/en-us_m1_0007.wav", r"([^/]+)_\d+$") == "en-us_m1"
    with pytest.raises(ProbeDataError, match="speaker_pattern"):
        speaker_of("train/recording.wav", r"([^/]+)_\d+$")
    with pytest.raises(ProbeDataError, match="transcript"):
        TokenProbes(steps=1).run_on(labelled([0, 1] * 5, ["hello"] * 9 + [""]))
    with pytest.raises(ProbeDataError, match="2 speakers"):
        TokenProbes(steps=1).run_on(labelled([0] * 10, ["hello"] * 10))
    with pytest.raises(ValueError, match="probe.tasks"):
        TokenProbes(tasks=["emotion"])


def test_ctc_text_round_trip_and_greedy_decoding() -> None:
    ids = text_to_ids("Hello,  World!")
    assert ids_to_text(ids) == "hello world"
    path = torch.full((6, 29), -10.0)
    h, e = text_to_ids("he")
    for frame, cls in enumerate([h, h, 0, e, 0, e]):  # h h _ e _ e -> "hee"
        path[frame, cls] = 0.0
    assert ids_to_text(greedy_ctc(path, 6)) == "hee"


def test_data_that_cannot_label_the_probes_is_refused_before_training(tmp_path: Path) -> None:
    """demo_small has one training utterance per voice: nothing can be held out per speaker."""
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), "experiment=smoke", "probe=default"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert result.returncode != 0
    assert "probe.held_out_every" in result.stderr and "12 utterance(s) of 12 speaker(s)" in result.stderr, (
        result.stderr[-2000:]
    )
    assert not list(tmp_path.glob("runs/**/checkpoints/*.pt"))
