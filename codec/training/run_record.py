"""The record of a run: what it is (overrides, identity, git commit, model facts) and where it
is tracked (the MLflow run, ``status.json``, the resolved config beside the checkpoints)."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from codec.model import Codec
from codec.tracking import RunLogger, flatten_config
from codec.training.identity import trained_overrides
from codec.training.status import read_status, write_status


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


def start_run_record(
    logger: RunLogger,
    run_dir: Path,
    config: Mapping[str, Any],
    identity: str,
    max_steps: int,
    facts: Mapping[str, float],
    run_id: str | None = None,
) -> str | None:
    """Open (or re-open) the run's tracker entry and record it in ``status.json``.

    A run seen for the first time also gets its model facts, resolved config and git commit.
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
    new_run_id = logger.start(
        run_name=f"{name}:{overrides or 'default'}", params=flatten_config(task_config), tags=tags, run_id=run_id
    )
    write_status(
        run_dir,
        state="running",
        run_id=new_run_id,
        identity=identity,
        overrides=overrides,
        max_steps=max_steps,
        name=name,
    )
    if run_id is None:
        logger.log_metrics(dict(facts), 0)
        config_file = Path(run_dir) / "resolved_config.yaml"
        config_file.write_text(OmegaConf.to_yaml(OmegaConf.create(task_config)))
        commit_file = Path(run_dir) / "git_commit.txt"
        commit_file.write_text(commit + "\n")
        logger.log_artifact(config_file)
        logger.log_artifact(commit_file)
    return new_run_id
