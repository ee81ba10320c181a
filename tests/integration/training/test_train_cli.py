"""Training through train.py: kill-and-resume, NaN losses, settings refused before training, more
steps on the same run, the weight EMA and warm start."""

from __future__ import annotations

import json
import os
import re
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
from tests.conftest import HANG_GUARD_S, REPO_ROOT, TINY_MODEL

TRAIN = str(REPO_ROOT / "train.py")


def train(args: list[str], cwd: Path, check: bool = True, timeout: float = HANG_GUARD_S) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, TRAIN, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"train.py failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def _resume_args(run_dir: Path, db: Path) -> list[str]:
    # The discriminators train from step 0, so their weights and optimizer state must resume too.
    return [
        *TINY_MODEL,
        "data=demo_small",
        "trainer.discriminator_start_step=0",
        "trainer.discriminator_warmup_steps=10",
        "trainer.deterministic=true",
        "trainer.max_steps=40",
        "trainer.checkpoint_every=5",
        "trainer.eval_every=20",
        "trainer.log_every=5",
        "eval.metrics=[mel_distance]",
        "eval.workers=0",
        "eval.max_utterances=2",
        f"hydra.run.dir={run_dir}",
        f"logger.tracking_uri=sqlite:///{db}",
    ]


@pytest.mark.slow
def test_sigkill_then_same_command_resumes_exactly(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    train(_resume_args(tmp_path / "uninterrupted", db), cwd=tmp_path)

    killed_dir = tmp_path / "killed"
    args = _resume_args(killed_dir, db)
    process = subprocess.Popen(
        [sys.executable, TRAIN, *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
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
    args = [
        *TINY_MODEL,
        "data=folder",
        f"data.path={audio}",
        "data.valid_count=1",
        "data.test_count=1",
        "trainer.batch_size=2",
        "trainer.checkpoint_every=1",
        "trainer.max_steps=200",
        "trainer.eval_every=1000",
        f"hydra.run.dir={tmp_path / 'run'}",
        "logger=none",
        "data.split_seed=1",
    ]
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
    result = train(
        ["data=folder", f"data.path={tmp_path / 'absent'}", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode != 0
    assert f"data.path={tmp_path / 'absent'} does not exist" in result.stdout + result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_impossible_config_fails_before_training(tmp_path: Path) -> None:
    result = train(
        ["quantizer.groups=3", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, check=False
    )
    assert result.returncode != 0
    assert "quantizer.groups=3" in result.stdout + result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_churning_dead_code_setting_is_refused_before_training(tmp_path: Path) -> None:
    result = train(
        ["quantizer.dead_code_threshold=0.95", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    for key in (
        "quantizer.dead_code_threshold=0.95",
        "quantizer.codebook_size=1024",
        "trainer.batch_size=4",
        "trainer.segment_seconds=0.5",
    ):
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
    train(
        [
            "experiment=smoke",
            "trainer.ema_decay=0.5",
            "trainer.max_steps=6",
            "logger=none",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
    )
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


# -- warm start (trainer.init_from) -------------------------------------------------------------------
def test_warm_start_copies_encoder_and_decoder_and_builds_the_asked_quantizer(tmp_path: Path) -> None:
    """A 2-layer run starts from a 1-layer run's encoder and decoder: those weights arrive exactly,
    the quantizer is the configured one (fresh, k-means on the copied encoder's latents), the step
    starts at 0, MLflow records where the weights came from, and a resume ignores the warm start."""
    source = tmp_path / "source"
    train(
        ["experiment=smoke", "quantizer.layers=1", "trainer.max_steps=4", "logger=none", f"hydra.run.dir={source}"],
        cwd=tmp_path,
    )
    source_state = torch.load(source / "checkpoints" / "latest.pt", weights_only=True)

    target = tmp_path / "target"
    common = [
        "experiment=smoke",
        "quantizer.layers=2",
        f"trainer.init_from={source}",
        f"hydra.run.dir={target}",
        f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]
    # Step 1 of 1 with checkpoint_every=1, so the step-1 checkpoint can be compared with the source
    # and a learning rate of zero keeps the copied weights as they arrived.
    result = train(
        [*common, "trainer.max_steps=1", "trainer.checkpoint_every=1", "trainer.generator_optimizer.lr=1e-30"],
        cwd=tmp_path,
    )
    assert f"warm start: encoder, decoder from {source / 'checkpoints' / 'best.pt'}" in result.stdout + result.stderr
    state = torch.load(target / "checkpoints" / "latest.pt", weights_only=True)
    assert state["step"] == 1
    for key, value in source_state["codec"].items():
        if key.startswith(("encoder.", "decoder.")) and value.is_floating_point():
            assert torch.allclose(state["codec"][key], value, atol=1e-12), key

    from codec.inference import load_codec

    codec = load_codec(target / "checkpoints" / "latest.pt", use_ema=False)
    assert codec.quantizer.layers == 2 and codec.quantizer.groups == 2 and len(codec.quantizer.codebooks) == 4
    assert all(bool(book.initialized) for book in codec.quantizer.codebooks)
    status = json.loads((target / "status.json").read_text())
    tags = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(status["run_id"]).data.tags
    assert tags["warm_start"].startswith("encoder,decoder from ") and "(step 4)" in tags["warm_start"]

    # Resuming: its own checkpoint wins (identity unchanged), the warm start is not applied again.
    again = train(
        [*common, "trainer.max_steps=3", "trainer.checkpoint_every=1", "trainer.generator_optimizer.lr=1e-30"],
        cwd=tmp_path,
    )
    assert "resumed from" in again.stdout + again.stderr and "warm start:" not in again.stdout + again.stderr
    assert "trainer.init_from not applied" in again.stdout + again.stderr
    assert torch.load(target / "checkpoints" / "latest.pt", weights_only=True)["step"] == 3


@pytest.mark.parametrize("case", ["missing", "shape", "part"])
def test_a_warm_start_that_cannot_work_stops_before_training(case: str, tmp_path: Path) -> None:
    source = tmp_path / "source"
    if case != "missing":
        train(["experiment=smoke", "trainer.max_steps=2", "logger=none", f"hydra.run.dir={source}"], cwd=tmp_path)
    extra = {"missing": [], "shape": ["encoder.channels=8"], "part": ["trainer.init_parts=[encoder,mixer]"]}[case]
    result = train(
        ["experiment=smoke", f"trainer.init_from={source}", *extra, "logger=none", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    expected = {
        "missing": f"trainer.init_from={str(source)!r} does not exist",
        "shape": "its encoder does not fit this run's encoder",
        "part": "trainer.init_parts=['encoder', 'mixer'] must name one or more of",
    }[case]
    assert expected in output, output[-2000:]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_warm_start_takes_the_weight_ema_when_the_source_kept_one(tmp_path: Path) -> None:
    """The source's evaluations (and its best.pt) measured its weight EMA, so that is what is copied."""
    source = tmp_path / "source"
    train(
        ["experiment=smoke", "trainer.ema_decay=0.5", "trainer.max_steps=4", "logger=none", f"hydra.run.dir={source}"],
        cwd=tmp_path,
    )
    source_state = torch.load(source / "checkpoints" / "latest.pt", weights_only=True)
    target = tmp_path / "target"
    result = train(
        [
            "experiment=smoke",
            f"trainer.init_from={source / 'checkpoints' / 'latest.pt'}",
            "trainer.max_steps=1",
            "trainer.checkpoint_every=1",
            "trainer.generator_optimizer.lr=1e-30",
            "logger=none",
            f"hydra.run.dir={target}",
        ],
        cwd=tmp_path,
    )
    assert "(its step 4, ema weights)" in result.stdout + result.stderr
    state = torch.load(target / "checkpoints" / "latest.pt", weights_only=True)
    keys = [
        k
        for k, v in source_state["codec"].items()
        if k.startswith("decoder.") and v.is_floating_point() and not torch.equal(v, source_state["ema_codec"][k])
    ]
    assert keys  # the EMA differs from the raw weights, so the check below can tell them apart
    for key in keys:
        assert torch.allclose(state["codec"][key], source_state["ema_codec"][key], atol=1e-12), key


def test_an_integral_float_step_count_trains_that_many_steps(tmp_path: Path) -> None:
    """``trainer.max_steps=1e1`` used to pass every check and fail at step 0."""
    train(
        ["experiment=smoke", "trainer.max_steps=1e1", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path
    )
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == 10


def test_a_zero_byte_checkpoint_is_named_in_one_line_by_every_command(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    wav = tmp_path / "a.wav"
    sf.write(str(wav), np.zeros(16000, dtype=np.float32), 16000)
    commands = [
        [sys.executable, "-m", "codec", "encode", str(wav), str(tmp_path / "a.npz"), "--checkpoint", str(empty)],
        [sys.executable, str(REPO_ROOT / "evaluate.py"), f"checkpoint={empty}"],
    ]
    for command in commands:
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD_S)
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.strip() == f"error: {empty} is not a loadable training checkpoint (EOFError)"


def test_codes_decode_only_with_the_codec_that_wrote_them(tmp_path: Path) -> None:
    """Codes from one run decoded with another run's checkpoint of the same layout used to exit 0
    with wrong audio; codes out of range or with no frames ended in tracebacks."""
    checkpoints = []
    for seed in (1, 2):
        run_dir = tmp_path / f"seed{seed}"
        train(["experiment=smoke", f"trainer.seed={seed}", "logger=none", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
        checkpoints.append(run_dir / "checkpoints" / "latest.pt")
    wav = tmp_path / "a.wav"
    sf.write(str(wav), 0.1 * np.sin(np.linspace(0, 800, 16000)).astype(np.float32), 16000)
    codes = tmp_path / "a.npz"

    def codec_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "codec", *args], cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD_S
        )

    assert codec_cli("encode", str(wav), str(codes), "--checkpoint", str(checkpoints[0])).returncode == 0
    assert (
        codec_cli("decode", str(codes), str(tmp_path / "ok.wav"), "--checkpoint", str(checkpoints[0])).returncode == 0
    )
    wrong = codec_cli("decode", str(codes), str(tmp_path / "wrong.wav"), "--checkpoint", str(checkpoints[1]))
    assert wrong.returncode == 2 and "decode with the checkpoint that encoded it" in wrong.stderr, wrong.stderr
    assert not (tmp_path / "wrong.wav").exists()
    fields = dict(np.load(codes))
    for name, values, message in (
        ("range.npz", np.full_like(fields["codes"], 9999), "outside this codec's 0..1023"),
        ("negative.npz", -np.ones_like(fields["codes"]), "holds codes from -1"),
        ("empty.npz", fields["codes"][:, :0], "holds no frames"),
    ):
        np.savez(tmp_path / name, **{**fields, "codes": values})
        result = codec_cli("decode", str(tmp_path / name), str(tmp_path / "x.wav"), "--checkpoint", str(checkpoints[0]))
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr

    # A folder decode goes on past the bad files and lists each (it used to stop at the first, unnamed).
    folder = tmp_path / "codes"
    folder.mkdir()
    for name in ("range.npz", "empty.npz"):
        (tmp_path / name).rename(folder / name)
    np.savez(folder / "good.npz", **fields)
    result = codec_cli("decode", str(folder), str(tmp_path / "decoded"), "--checkpoint", str(checkpoints[0]))
    assert result.returncode == 1 and "2 of 3 file(s) failed; the other 1 were written" in result.stderr
    assert f"{folder / 'range.npz'}: " in result.stderr and f"{folder / 'empty.npz'}: " in result.stderr
    assert (tmp_path / "decoded" / "good.wav").exists() and "Traceback" not in result.stderr
