"""Nothing lost, nothing executed: each test uses real files and processes and asserts what survives.

Corrupt checkpoints, crafted pickles, many processes on one fresh MLflow store (SQLite and a real
``mlflow server``), two identical commands at once, audio with NaN samples, and bad settings that
must stop the run before its first step.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
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

from tests.audio_fixtures import espeak_corpus
from tests.conftest import HANG_GUARD_S, REPO_ROOT

TRAIN = str(REPO_ROOT / "train.py")
SMOKE = ["experiment=smoke"]


def start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, TRAIN, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=None if env is None else {**os.environ, **env},
    )


def train(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, TRAIN, *args], cwd=cwd, capture_output=True, text=True, timeout=HANG_GUARD_S
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"train.py failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)["codec"]


def wait_for(predicate, what: str, process: subprocess.Popen | None = None, timeout: float = 600) -> None:
    """Wait on an event (a file, a state), never a fixed sleep; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            raise AssertionError(
                f"process ended (code {process.returncode}) before {what}:\n{process.stdout.read()[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


# -- checkpoints -----------------------------------------------------------------------------------
def test_truncated_latest_resumes_from_newest_intact_step_file(tmp_path: Path) -> None:
    common = [*SMOKE, "trainer.deterministic=true", "trainer.checkpoint_every=2", "trainer.keep_last=5", "logger=none"]
    train([*common, "trainer.max_steps=10", f"hydra.run.dir={tmp_path / 'straight'}"], cwd=tmp_path)

    broken = tmp_path / "broken"
    train([*common, "trainer.max_steps=6", f"hydra.run.dir={broken}"], cwd=tmp_path)
    checkpoints = broken / "checkpoints"
    for name in ("latest.pt", "step_000000006.pt"):  # the newest two are cut short
        path = checkpoints / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    assert (
        torch.load(checkpoints / "step_000000004.pt", weights_only=True)["step"] == 4
    )  # the copies did not share bytes

    result = train([*common, "trainer.max_steps=10", f"hydra.run.dir={broken}"], cwd=tmp_path)
    log = result.stdout + result.stderr
    assert (
        f"skipping checkpoint {checkpoints / 'latest.pt'}" in log
        and f"skipping checkpoint {checkpoints / 'step_000000006.pt'}" in log
    )
    assert f"resumed from {checkpoints / 'step_000000004.pt'} at step 4" in log
    status = json.loads((broken / "status.json").read_text())
    assert (
        status["state"] == "finished"
        and status["step"] == 10
        and str(checkpoints / "latest.pt") in status["skipped_checkpoints"]
    )
    straight, resumed = weights(tmp_path / "straight"), weights(broken)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_missing_latest_resumes_from_newest_step_file(tmp_path: Path) -> None:
    common = [*SMOKE, "trainer.checkpoint_every=2", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"]
    train([*common, "trainer.max_steps=4"], cwd=tmp_path)
    (tmp_path / "run" / "checkpoints" / "latest.pt").unlink()
    result = train([*common, "trainer.max_steps=6"], cwd=tmp_path)
    assert (
        "resumed from" in result.stdout + result.stderr
        and "step_000000004.pt at step 4" in result.stdout + result.stderr
    )
    assert json.loads((tmp_path / "run" / "status.json").read_text())["step"] == 6


def test_a_checkpoint_older_than_an_added_option_resumes_unless_the_option_moves(tmp_path: Path) -> None:
    """Upgrading mid-run: a checkpoint saved before trained options existed (its config lacks them,
    and its identity was hashed without them) resumes while they sit at their former behaviour, and
    is refused, naming the key, when a command moves one of them."""
    from codec.training.identity import ADDED_OPTION_DEFAULTS, run_identity

    run_dir = tmp_path / "run"
    common = [*SMOKE, "trainer.checkpoint_every=2", "logger=none", f"hydra.run.dir={run_dir}"]
    train([*common, "trainer.max_steps=2"], cwd=tmp_path)
    checkpoints = sorted((run_dir / "checkpoints").glob("*.pt"))
    for path in checkpoints:  # rewrite them as the version before those options saved them
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ADDED_OPTION_DEFAULTS:
            *parents, name = key.split(".")
            node = state["config"]
            for part in parents:
                node = node[part]
            del node[name]
        state["identity"] = run_identity(state["config"])
        torch.save(state, path)
    saved = {path: path.read_bytes() for path in checkpoints}

    refused = train([*common, "trainer.max_steps=4", "trainer.cpu_bf16_discriminators=true"], cwd=tmp_path, check=False)
    assert refused.returncode != 0
    assert "trainer.cpu_bf16_discriminators: None -> True" in refused.stdout + refused.stderr
    assert all(path.read_bytes() == data for path, data in saved.items())  # nothing saved was touched

    result = train([*common, "trainer.max_steps=4"], cwd=tmp_path)
    log = result.stdout + result.stderr
    assert "predates options added since" in log and "trainer.cpu_bf16_discriminators" in log and "at step 2" in log
    assert json.loads((run_dir / "status.json").read_text())["step"] == 4


def test_all_checkpoints_corrupt_fails_named_and_a_rerun_reuses_the_mlflow_run(tmp_path: Path) -> None:
    common = [*SMOKE, "trainer.checkpoint_every=2", f"hydra.run.dir={tmp_path / 'run'}"]
    train([*common, "trainer.max_steps=4"], cwd=tmp_path)
    first_id = json.loads((tmp_path / "run" / "status.json").read_text())["run_id"]
    for path in (tmp_path / "run" / "checkpoints").glob("*.pt"):
        path.write_bytes(b"not a checkpoint")
    result = train([*common, "trainer.max_steps=6"], cwd=tmp_path, check=False)
    assert result.returncode != 0 and "no checkpoint in" in result.stdout + result.stderr
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and "CheckpointError" in status["error"] and status["run_id"] == first_id
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert [(r.info.run_id, r.info.status) for r in runs] == [(first_id, "FAILED")]


# -- nothing executed ------------------------------------------------------------------------------
class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickles_are_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.pt"
    with open(crafted, "wb") as handle:
        pickle.dump({"step": 1, "config": {}, "codec": _Exploit(marker)}, handle)
    torch.save({"step": 1, "config": {}, "codec": _Exploit(marker)}, tmp_path / "crafted_zip.pt")
    assert not marker.exists()

    for path in (crafted, tmp_path / "crafted_zip.pt"):
        result = subprocess.run(
            [sys.executable, "-m", "codec", "encode", str(path), str(tmp_path / "x.npz"), "--checkpoint", str(path)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2 and "is not a loadable training checkpoint" in result.stderr
        assert not marker.exists()

    # As a run's latest checkpoint: skipped as unloadable, never executed.
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "crafted_zip.pt", run_dir / "checkpoints" / "latest.pt")
    result = train(
        [*SMOKE, "logger=none", "trainer.max_steps=2", f"hydra.run.dir={run_dir}"], cwd=tmp_path, check=False
    )
    assert "skipping checkpoint" in result.stdout + result.stderr
    assert not marker.exists()

    # A codes file holding a pickled object array is refused by decode.
    np.savez(tmp_path / "codes.npz", codes=np.array([_Exploit(marker)], dtype=object), format=np.array("grvq-codes/2"))
    from codec.inference import read_codes

    with pytest.raises(ValueError, match="is not a codes file"):
        read_codes(tmp_path / "codes.npz")
    assert not marker.exists()


# -- many processes --------------------------------------------------------------------------------


def test_a_second_identical_command_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    args = [*SMOKE, "trainer.max_steps=60", "trainer.log_every=2", f"hydra.run.dir={tmp_path / 'run'}"]
    first = start(args, cwd=tmp_path)
    status_file = tmp_path / "run" / "status.json"
    wait_for(
        lambda: status_file.exists() and json.loads(status_file.read_text()).get("state") == "running",
        "the first run to start",
        first,
    )
    second = train(args, cwd=tmp_path, check=False)
    assert second.returncode != 0
    assert f"is being trained by another process (pid {first.pid}" in second.stdout + second.stderr
    assert json.loads(status_file.read_text())["state"] == "running"  # the refused command wrote nothing
    assert first.wait(timeout=HANG_GUARD_S) == 0
    status = json.loads(status_file.read_text())
    assert status["state"] == "finished"
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert len(runs) == 1
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "train/loss_generator")]
    assert steps == list(range(2, 61, 2))
    assert len([m for m in client.get_metric_history(runs[0].info.run_id, "best/mel_distance")]) == 1


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    """SIGKILL, then the same command at once: the lock died with the trainer, even while its
    forked loader workers are still winding down."""
    args = [
        *SMOKE,
        "trainer.num_workers=2",
        "trainer.max_steps=400",
        "trainer.checkpoint_every=2",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    holder = start(args, cwd=tmp_path)
    wait_for(lambda: (tmp_path / "run" / "checkpoints" / "latest.pt").exists(), "a first checkpoint", holder)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    result = train(
        [*args[:-2], "trainer.max_steps=4", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path
    )
    assert "resumed from" in result.stdout + result.stderr


# -- data checked before training ------------------------------------------------------------------
@pytest.fixture(scope="module")
def speech_with_nan(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("nan_data")
    espeak_corpus(folder, sample_rate=16000, count=5)
    data, rate = sf.read(str(folder / "speech_00.wav"), dtype="float32")
    data[len(data) // 2] = np.nan  # deep inside the file, past any header probe
    sf.write(str(folder / "poisoned.wav"), data, rate, subtype="FLOAT")
    return folder


def data_args(folder: Path, run_dir: Path, policy: str) -> list[str]:
    return [
        *SMOKE,
        "data=folder",
        f"data.path={folder}",
        "data.valid_count=1",
        "data.test_count=1",
        f"data.bad_files={policy}",
        "trainer.max_steps=2",
        "logger=none",
        f"hydra.run.dir={run_dir}",
    ]


def test_nan_samples_are_named_and_skipped(speech_with_nan: Path, tmp_path: Path) -> None:
    result = train(data_args(speech_with_nan, tmp_path / "run", "skip"), cwd=tmp_path)
    log = result.stdout + result.stderr
    assert f"{speech_with_nan / 'poisoned.wav'}: audio holds NaN or infinite samples" in log
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "finished"


def test_nan_samples_stop_before_training_under_error(speech_with_nan: Path, tmp_path: Path) -> None:
    result = train(data_args(speech_with_nan, tmp_path / "run", "error"), cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert f"{speech_with_nan / 'poisoned.wav'}: audio holds NaN or infinite samples" in result.stdout + result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


def test_a_file_broken_after_the_manifest_was_cached_is_named(speech_with_nan: Path, tmp_path: Path) -> None:
    """Same size and modification time (so the cached manifest is reused), unreadable content."""
    folder = tmp_path / "data"
    shutil.copytree(speech_with_nan, folder)
    (folder / "poisoned.wav").unlink()
    train(data_args(folder, tmp_path / "first", "skip"), cwd=tmp_path)
    victim = folder / "speech_01.wav"
    stat = victim.stat()
    victim.write_bytes(b"\0" * stat.st_size)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    result = train(data_args(folder, tmp_path / "second", "skip"), cwd=tmp_path)
    assert f"skipping {victim}: unreadable audio" in result.stdout + result.stderr
    failed = train(data_args(folder, tmp_path / "third", "error"), cwd=tmp_path, check=False)
    assert (
        failed.returncode != 0
        and f"{victim}: unreadable audio" in failed.stdout + failed.stderr
        and "Traceback" not in failed.stderr
    )


def test_a_file_made_unreadable_after_the_manifest_is_named(speech_with_nan: Path, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any file regardless of permissions (the test above covers root)")
    folder = tmp_path / "data"
    shutil.copytree(speech_with_nan, folder)
    (folder / "poisoned.wav").unlink()
    train(data_args(folder, tmp_path / "first", "skip"), cwd=tmp_path)
    (folder / "speech_01.wav").chmod(0)
    result = train(data_args(folder, tmp_path / "second", "skip"), cwd=tmp_path)
    assert f"{folder / 'speech_01.wav'}: not readable" in result.stdout + result.stderr


BAD_SETTINGS = {
    "tiny segment": (["trainer.segment_seconds=0.001"], "trainer.segment_seconds=0.001"),
    "hop above segment": (
        ["encoder.strides=[8,8,8,8]", "trainer.segment_seconds=0.25"],
        "trainer.segment_seconds=0.25",
    ),
    "negative learning rate": (
        ["trainer.generator_optimizer.lr=-1e-3"],
        "trainer.generator_optimizer.lr=-0.001 must be positive",
    ),
    "unknown bad-file policy": (
        ["data=folder", "data.path=.", "data.bad_files=ignore"],
        "data.bad_files='ignore' is unknown",
    ),
    "empty data path": (["data=folder", "data.path="], "data.path is empty"),
    "a word for a number": (["trainer.batch_size=two"], "trainer.batch_size='two' must be an integer"),
}


@pytest.mark.parametrize("case", list(BAD_SETTINGS))
def test_bad_settings_stop_before_training_naming_the_key(case: str, tmp_path: Path) -> None:
    overrides, message = BAD_SETTINGS[case]
    result = train([*SMOKE, *overrides, "logger=none", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and message in output, output[-2000:]
    assert "data.data.path" not in output and "Traceback" not in output
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


def test_a_checkpoints_path_that_cannot_be_written_stops_before_training(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").write_text("a file where the checkpoint folder should be")
    result = train([*SMOKE, "logger=none", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, check=False)
    assert result.returncode != 0 and "checkpoints is not writable" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_non_writable_checkpoints_stop_before_training(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere regardless of permissions")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints").chmod(0o500)
    result = train([*SMOKE, "logger=none", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, check=False)
    assert result.returncode != 0 and "checkpoints is not writable" in result.stdout + result.stderr
