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
