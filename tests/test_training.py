"""End-to-end training through train.py: the README demo, real speech, kill-and-resume,
NaN losses, evaluate.py and the encode/decode command line."""
from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from mlflow.tracking import MlflowClient

from codec.data.datasets import SegmentDataset
from codec.data.manifest import scan_folder
from tests.audio_fixtures import espeak_corpus
from tests.conftest import REPO_ROOT, TINY_MODEL

TRAIN = str(REPO_ROOT / "train.py")


def train(args: list[str], cwd: Path, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, TRAIN, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"train.py failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def all_artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    files = []
    for item in client.list_artifacts(run_id, path):
        files += all_artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return files


@pytest.mark.slow
def test_readme_demo_command_trains_and_logs_to_mlflow(tmp_path: Path) -> None:
    """`python train.py` with nothing else: demo data, local store, checkpoints, artifacts."""
    train([], cwd=tmp_path)
    run_dir = tmp_path / "runs" / "demo" / "default"
    checkpoints = run_dir / "checkpoints"
    assert (checkpoints / "latest.pt").exists() and (checkpoints / "best.pt").exists()
    state = torch.load(checkpoints / "latest.pt", weights_only=True)
    assert state["step"] == 300
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == 300

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("demo")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_id == status["run_id"] and run.info.status == "FINISHED"
    assert run.data.params["encoder.channels"] == "8" and run.data.params["quantizer.groups"] == "2"
    history = client.get_metric_history(run.info.run_id, "train/loss_generator")
    assert [m.step for m in history] == list(range(10, 301, 10))
    # Codebooks do not churn: after step 50 no log step re-draws 5% of any codebook.
    replaced = client.get_metric_history(run.info.run_id, "train/codebook_replaced_fraction_max")
    assert [m.step for m in replaced] == list(range(10, 301, 10))
    assert max(m.value for m in replaced if m.step > 50) < 0.05, [(m.step, m.value) for m in replaced]
    for key in ("valid/pesq_wb", "valid/stoi", "test/pesq_wb", "test/estoi", "best/mel_distance",
                "train/throughput_audio_seconds_per_second", "train/grad_norm_generator", "valid/codebook_00_perplexity"):
        assert key in run.data.metrics, key
    artifacts = all_artifacts(client, run.info.run_id)
    assert "resolved_config.yaml" in artifacts and "git_commit.txt" in artifacts
    assert any(a.endswith("_reconstruction.wav") for a in artifacts)
    assert any(a.endswith("_original.wav") for a in artifacts)
    assert any(a.endswith("_spectrogram.png") for a in artifacts)

    # Running the same command again finds the run finished and does nothing.
    again = train([], cwd=tmp_path)
    assert "already finished" in again.stderr + again.stdout
    assert len(client.search_runs([experiment.experiment_id])) == 1


@pytest.fixture(scope="module")
def speech_run(tmp_path_factory) -> dict:
    """A tiny model trained for a few hundred steps on espeak-ng speech."""
    root = tmp_path_factory.mktemp("speech_run")
    espeak_corpus(root / "speech", sample_rate=16000)
    args = [*TINY_MODEL, "data=folder", f"data.path={root / 'speech'}", "data.valid_count=2", "data.test_count=2",
            "trainer.max_steps=240", "trainer.log_every=10", "trainer.eval_every=120", "trainer.checkpoint_every=120",
            "trainer.batch_size=8", "trainer.segment_seconds=0.4", "trainer.generator_optimizer.lr=1e-3",
            "trainer.discriminator_warmup_steps=100", f"hydra.run.dir={root / 'run'}"]
    train(args, cwd=root)
    status = json.loads((root / "run" / "status.json").read_text())
    return {"root": root, "run_dir": root / "run", "status": status,
            "client": MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")}


@pytest.mark.slow
def test_real_speech_reconstruction_loss_falls(speech_run: dict) -> None:
    client, run_id = speech_run["client"], speech_run["status"]["run_id"]
    assert len(client.get_metric_history(run_id, "train/mel")) == 24
    # Validation on the same held-out utterances: the untrained baseline at step 0, then training.
    valid = {m.step: m.value for m in client.get_metric_history(run_id, "valid/mel_distance")}
    assert sorted(valid) == [0, 120, 240]
    assert valid[240] < valid[120] < valid[0]
    assert valid[240] < 0.85 * valid[0]


@pytest.mark.slow
def test_real_speech_pesq_and_stoi_on_held_out_utterances(speech_run: dict) -> None:
    test = speech_run["status"]["test"]
    assert 1.0 <= test["pesq_wb"] <= 4.7 and 1.0 <= test["pesq_nb"] <= 4.7
    assert 0.0 < test["stoi"] <= 1.0
    run = speech_run["client"].get_run(speech_run["status"]["run_id"])
    assert run.data.metrics["test/pesq_wb"] == pytest.approx(test["pesq_wb"])
    assert "test/stoi_std" in run.data.metrics


@pytest.mark.slow
def test_evaluate_script_prints_table_and_writes_json(speech_run: dict) -> None:
    checkpoint = speech_run["run_dir"] / "checkpoints" / "best.pt"
    out = speech_run["root"] / "eval.json"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "evaluate.py"), f"checkpoint={checkpoint}", "data=folder",
                             f"data.path={speech_run['root'] / 'speech'}", "data.valid_count=2", "data.test_count=2",
                             f"output={out}", f"paths.cache={speech_run['root'] / '.cache'}"],
                            cwd=speech_run["root"], capture_output=True, text=True, check=True)
    assert "pesq_wb" in result.stdout and "stoi" in result.stdout
    report = json.loads(out.read_text())
    assert report["utterances"] == 2 and len(report["per_utterance"]) == 2
    assert {"pesq_wb", "pesq_nb", "stoi", "estoi", "mel_distance", "si_sdr", "bitrate_kbps"} <= set(report["metrics"])


@pytest.mark.slow
def test_encode_decode_command_line_round_trip(speech_run: dict) -> None:
    checkpoint = speech_run["run_dir"] / "checkpoints" / "latest.pt"
    wav = sorted((speech_run["root"] / "speech").glob("*.wav"))[0]
    codes, decoded = speech_run["root"] / "codes.npz", speech_run["root"] / "decoded.wav"
    for command in (["encode", str(wav), str(codes)], ["decode", str(codes), str(decoded)]):
        subprocess.run([sys.executable, "-m", "codec", *command, "--checkpoint", str(checkpoint)], cwd=REPO_ROOT, check=True, capture_output=True)
    with np.load(codes, allow_pickle=False) as payload:  # plain data: no pickle needed to read it
        stored = payload["codes"]
        assert int(payload["sample_rate"]) == 16000 and int(payload["length"]) == sf.info(str(wav)).frames
    original = sf.info(str(wav))
    assert stored.shape == (4, -(-original.frames // 320))
    assert sf.info(str(decoded)).frames == original.frames

    from codec.inference import load_codec
    codec = load_codec(checkpoint)
    audio = torch.from_numpy(sf.read(str(wav), dtype="float32")[0]).view(1, 1, -1)
    assert torch.equal(codec.encode(audio)[0].short(), torch.from_numpy(stored))
    # A wav handed to decode is refused in one line, naming the file.
    result = subprocess.run([sys.executable, "-m", "codec", "decode", str(wav), str(decoded), "--checkpoint", str(checkpoint)],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert f"{wav} is not a codes file" in result.stderr


@pytest.mark.slow
def test_encode_and_decode_a_folder_of_ten_files(speech_run: dict, tmp_path: Path) -> None:
    checkpoint = speech_run["run_dir"] / "checkpoints" / "latest.pt"
    source = tmp_path / "audio"
    for index, wav in enumerate(sorted((speech_run["root"] / "speech").glob("*.wav"))[:10]):
        target = source / ("nested" if index % 2 else "") / wav.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(wav.read_bytes())
    for command in (["encode", str(source), str(tmp_path / "codes")], ["decode", str(tmp_path / "codes"), str(tmp_path / "decoded")]):
        subprocess.run([sys.executable, "-m", "codec", *command, "--checkpoint", str(checkpoint)], cwd=REPO_ROOT, check=True, capture_output=True)
    originals = sorted(p.relative_to(source) for p in source.rglob("*.wav"))
    decoded = sorted(p.relative_to(tmp_path / "decoded") for p in (tmp_path / "decoded").rglob("*.wav"))
    assert len(originals) == 10 and decoded == originals
    for name in originals:
        before, after = sf.info(str(source / name)), sf.info(str(tmp_path / "decoded" / name))
        assert (after.frames, after.samplerate) == (before.frames, before.samplerate)
    missing = subprocess.run([sys.executable, "-m", "codec", "encode", str(tmp_path / "absent.wav"), str(tmp_path / "x.npz"),
                              "--checkpoint", str(checkpoint)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: {tmp_path / 'absent.wav'}: no such file or folder"


def _resume_args(run_dir: Path, db: Path) -> list[str]:
    return [*TINY_MODEL, "trainer.deterministic=true", "trainer.max_steps=40", "trainer.checkpoint_every=5",
            "trainer.eval_every=20", "trainer.log_every=5", "eval.metrics=[mel_distance]", "eval.workers=0",
            f"hydra.run.dir={run_dir}", f"logger.tracking_uri=sqlite:///{db}"]


@pytest.mark.slow
def test_sigkill_then_same_command_resumes_exactly(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    train(_resume_args(tmp_path / "uninterrupted", db), cwd=tmp_path)

    killed_dir = tmp_path / "killed"
    args = _resume_args(killed_dir, db)
    process = subprocess.Popen([sys.executable, TRAIN, *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (killed_dir / "checkpoints" / "step_000000015.pt").exists():
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    before = json.loads((killed_dir / "status.json").read_text())
    assert before["state"] == "running" and 15 <= before["step"] < 40

    resumed = train(args, cwd=tmp_path)
    assert "resumed from" in resumed.stderr + resumed.stdout
    after = json.loads((killed_dir / "status.json").read_text())
    assert after["state"] == "finished" and after["step"] == 40
    assert after["run_id"] == before["run_id"]

    final = torch.load(killed_dir / "checkpoints" / "latest.pt", weights_only=True)
    reference = torch.load(tmp_path / "uninterrupted" / "checkpoints" / "latest.pt", weights_only=True)
    for part in ("codec", "discriminator"):
        for key, value in reference[part].items():
            assert torch.equal(final[part][key], value), f"{part}.{key} differs after resume"

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    run = client.get_run(before["run_id"])
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss_generator")]
    assert sorted(steps) == list(range(5, 41, 5))  # every step once, none twice


def _first_index_of(dataset: SegmentDataset, path: str, limit: int) -> int:
    for index in range(limit):
        rng = np.random.default_rng([dataset.seed, index])
        if dataset.entries[rng.choice(len(dataset.entries), p=dataset.file_probabilities)].path == path:
            return index
    return limit


@pytest.mark.slow
def test_nan_loss_stops_with_clear_message_and_keeps_last_checkpoint(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    espeak_corpus(audio, count=6)
    # Finite but absurd float samples: the first batch that draws this file overflows to inf/NaN.
    loud = audio / "zz_overflow.wav"
    sf.write(str(loud), np.full(4000, 3.0e38, dtype=np.float32), 16000, subtype="FLOAT")
    args = [*TINY_MODEL, "data=folder", f"data.path={audio}", "data.valid_count=1", "data.test_count=1",
            "trainer.batch_size=2", "trainer.checkpoint_every=1", "trainer.max_steps=200", "trainer.eval_every=1000",
            f"hydra.run.dir={tmp_path / 'run'}", "logger=none", "data.split_seed=1"]
    # pick a seed whose first draw of the overflow file comes after a few good steps
    entries = scan_folder(audio, None).entries
    order = np.random.default_rng(1).permutation(len(entries))  # the split FolderDataModule makes
    train_entries = sorted([entries[i] for i in order[2:]], key=lambda e: e.path)
    assert str(loud) in [e.path for e in train_entries]
    for seed in range(50):
        first = _first_index_of(SegmentDataset(train_entries, 16000, 1.0, seed), str(loud), 400) // 2 + 1
        if 4 <= first <= 60:
            break
    result = train([*args, f"trainer.seed={seed}"], cwd=tmp_path, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"non-finite loss at step {first}" in output and "Last good checkpoint" in output
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and "NonFiniteLossError" in status["error"]
    state = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=True)
    assert state["step"] == first - 1
    assert all(torch.isfinite(v).all() for v in state["codec"].values() if v.is_floating_point())


def test_missing_data_path_fails_before_training(tmp_path: Path) -> None:
    result = train(["data=folder", f"data.path={tmp_path / 'absent'}", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"],
                   cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert f"data.path={tmp_path / 'absent'} does not exist" in result.stdout + result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_impossible_config_fails_before_training(tmp_path: Path) -> None:
    result = train(["quantizer.groups=3", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "quantizer.groups=3" in result.stdout + result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_churning_dead_code_setting_is_refused_before_training(tmp_path: Path) -> None:
    result = train(["quantizer.dead_code_threshold=0.95", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    for key in ("quantizer.dead_code_threshold=0.95", "quantizer.codebook_size=1024", "trainer.batch_size=4", "trainer.segment_seconds=0.5"):
        assert key in output, key
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_more_steps_continue_the_same_run_and_best_has_no_per_codebook_keys(tmp_path: Path) -> None:
    """Raising trainer.max_steps resumes the same directory and MLflow run; with 12 codebooks,
    best/* holds no per-codebook keys (codebook_10_* once leaked past a "codebook_0" filter)."""
    common = ["experiment=smoke", "quantizer=rvq", "quantizer.layers=12", "trainer.eval_every=2"]
    train([*common, "trainer.max_steps=4"], cwd=tmp_path)
    run_dir = tmp_path / "runs" / "smoke" / "experiment=smoke,quantizer.layers=12,quantizer=rvq"
    first = json.loads((run_dir / "status.json").read_text())
    assert first["state"] == "finished" and first["step"] == 4
    again = train([*common, "trainer.max_steps=6"], cwd=tmp_path)
    assert "resumed" in again.stdout + again.stderr
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == 6 and status["run_id"] == first["run_id"]
    assert sorted(p.name for p in (tmp_path / "runs" / "smoke").iterdir()) == [run_dir.name]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert [r.info.run_id for r in runs] == [first["run_id"]]
    assert [m.step for m in client.get_metric_history(first["run_id"], "train/loss_generator")] == [2, 4, 6]
    best = [k for k in runs[0].data.metrics if k.startswith("best/")]
    assert "best/mel_distance" in best
    assert not [k for k in best if re.search(r"codebook_\d+_", k)], best
    assert "valid/codebook_11_usage" in runs[0].data.metrics


def test_generator_weight_ema_is_kept_checkpointed_and_used_for_inference(tmp_path: Path) -> None:
    train(["experiment=smoke", "trainer.ema_decay=0.5", "trainer.max_steps=6", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    state = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=True)
    assert state["ema_codec"] is not None and state["ema_codec"].keys() == state["codec"].keys()
    decoder_keys = [k for k, v in state["codec"].items() if k.startswith("decoder.") and v.is_floating_point()]
    assert any(not torch.equal(state["ema_codec"][k], state["codec"][k]) for k in decoder_keys)

    from codec.inference import load_codec

    ema = load_codec(tmp_path / "run" / "checkpoints" / "latest.pt")
    raw = load_codec(tmp_path / "run" / "checkpoints" / "latest.pt", use_ema=False)
    key = decoder_keys[0]
    assert torch.equal(ema.state_dict()[key], state["ema_codec"][key])
    assert torch.equal(raw.state_dict()[key], state["codec"][key])
