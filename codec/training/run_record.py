"""The record of a run: what it is (overrides, identity, git commit, model facts) and where it
is tracked (the MLflow run, ``status.json``, the resolved config beside the checkpoints)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from codec.model import Codec
from codec.tracking import RunLogger, flatten_config
from codec.training.identity import is_untrained_key, trained_overrides
from codec.training.status import read_status, write_status

log = logging.getLogger(__name__)

# Kept in each run directory while the run lives and given up when the disk is full, so the final
# state (a few kB of status.json) can still be written.
RESERVE_FILE = ".final_record_reserve"
RESERVE_BYTES = 256 * 1024


def git_commit(directory: Path) -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def command_line_overrides() -> str:
    """The job's overrides that change what is trained (empty outside a Hydra job)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return ",".join(trained_overrides(HydraConfig.get().overrides.task))
    except ValueError:
        return ""


def model_facts(codec: Codec, discriminator_params: int) -> dict[str, float]:
    """Sizes and rates of the composition, logged once so sweeps can be compared by them."""
    return {
        "model/params_generator": sum(p.numel() for p in codec.parameters()),
        "model/params_discriminator": discriminator_params,
        "model/bitrate_kbps": codec.bitrate_kbps(),
        "model/tokens_per_second": codec.tokens_per_second(),
        "model/frame_rate": codec.frame_rate,
        "model/codebooks": codec.num_codebooks,
    }


CONFIG_TAG_PREFIX = "config."
TAG_VALUE_LIMIT = 5000


def split_untrained(params: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(params that change what is trained, the rest as ``config.<key>`` tags)."""
    trained = {k: v for k, v in params.items() if not is_untrained_key(k)}
    tags = {f"{CONFIG_TAG_PREFIX}{k}": v[:TAG_VALUE_LIMIT] for k, v in params.items() if is_untrained_key(k)}
    return trained, tags


def start_run_record(
    logger: RunLogger,
    run_dir: Path,
    config: Mapping[str, Any],
    identity: str,
    max_steps: int,
    run_id: str | None = None,
) -> str | None:
    """Open (or re-open) the run's tracker entry and record it in ``status.json``.

    Params are the keys that change what is trained; the others (names, paths, step budget,
    evaluation settings: ``UNTRAINED_KEYS``) are ``config.<key>`` tags, so MLflow's comparison of
    a sweep's runs shows the overrides that vary, not the run names. A run seen for the first time
    also gets its resolved config and git commit.
    """
    run_id = run_id or read_status(run_dir).get("run_id")
    overrides = command_line_overrides()
    name = str(config.get("name"))
    commit = git_commit(Path(__file__).resolve().parents[2])
    tags = {
        "identity": identity,
        "run_dir": str(Path(run_dir).resolve()),
        "overrides": overrides,
        "git_commit": commit,
        "name": name,
    }
    task_config = {k: v for k, v in config.items() if k != "hydra"}
    params, untrained = split_untrained(flatten_config(task_config))
    new_run_id = logger.start(
        run_name=f"{name}:{overrides or 'default'}", params=params, tags={**tags, **untrained}, run_id=run_id
    )
    write_status(
        run_dir,
        state="running",
        run_id=new_run_id,
        identity=identity,
        overrides=overrides,
        max_steps=max_steps,
        name=name,
        **process_record(),
    )
    if run_id is None:
        config_file = Path(run_dir) / "resolved_config.yaml"
        config_file.write_text(OmegaConf.to_yaml(OmegaConf.create(task_config)))
        commit_file = Path(run_dir) / "git_commit.txt"
        commit_file.write_text(commit + "\n")
        logger.log_artifact(config_file)
        logger.log_artifact(commit_file)
    return new_run_id


def process_record() -> dict[str, Any]:
    """Who writes this run's status: ``codec-sweep status`` tells a dead "running" run by these."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat": time.time()}


class RunRecorder:
    """The run's account of itself in ``status.json`` and in the tracker, written independently:
    a failure to write one (a deleted run directory, a full disk, a server that is down) never
    stops the other, and never hides the run's own outcome."""

    def __init__(self, run_dir: Path, logger: RunLogger) -> None:
        self.run_dir = Path(run_dir)
        self.logger = logger
        self.reserve = self.run_dir / RESERVE_FILE

    def keep_reserve(self) -> None:
        """Hold a little disk space for the final record (best effort)."""
        try:
            if not self.reserve.exists():
                self.reserve.write_bytes(bytes(RESERVE_BYTES))
        except OSError as error:
            self.reserve.unlink(missing_ok=True)
            log.warning("no disk space could be kept for the final record in %s: %s", self.run_dir, error)

    def heartbeat(self, **fields: Any) -> None:
        """Progress for the sweep status table, with the time it was written."""
        write_status(self.run_dir, heartbeat=time.time(), **fields)

    def end(self, state: str, tracker_status: str, tags: Mapping[str, str] | None = None, **fields: Any) -> dict:
        """Record the final ``state`` in status.json and ``tracker_status`` in the tracker, each on its own."""
        status = self._write_final(state=state, **fields)
        try:
            if tags:
                self.logger.set_tags(tags)
            self.logger.finish(tracker_status)
        except Exception as error:
            log.error("could not record the run's end (%s) in the tracker: %s", tracker_status, error)
        return status

    def _write_final(self, **fields: Any) -> dict[str, Any]:
        try:
            status = write_status(self.run_dir, **fields)
        except OSError as error:
            if not self.reserve.exists():
                log.error("could not write the final state to %s: %s", self.run_dir / "status.json", error)
                return dict(fields)
            self.reserve.unlink()  # the disk is full: give up the reserve, then write
            try:
                status = write_status(self.run_dir, **fields)
            except OSError as second:
                log.error("could not write the final state to %s: %s", self.run_dir / "status.json", second)
                return dict(fields)
            log.warning("the disk is full; the space kept for the final record was used to write it")
            return status
        self.reserve.unlink(missing_ok=True)
        return status
