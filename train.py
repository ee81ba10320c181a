"""Train any codec composition: ``python train.py [overrides]`` or ``python train.py -m ...``.

The run directory (runs/<name>/<overrides>) is deterministic, so running the same command
again resumes from its last checkpoint, and a sweep re-run skips the runs that finished.
"""

from __future__ import annotations

import logging
import signal
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from codec.config import ConfigError, describe_preset_overrides, preset_overrides_of_choices, register_resolvers
from codec.data import AudioFileError, DataError
from codec.sweep.job import (
    TIME_LIMIT_SIGNAL,
    in_slurm_job,
    in_submitit_job,
    record_failure,
    requeue_after_time_limit,
    slurm_will_rerun,
    stop_signals,
)
from codec.tracking.loggers import TrackingStoreError
from codec.training.checkpoint import CheckpointError
from codec.training.run_lock import RunDirectoryBusy
from codec.training.trainer import NonFiniteLossError, StopRequested, Trainer

log = logging.getLogger("train")
USER_ERRORS = (
    ConfigError,
    DataError,
    AudioFileError,
    NonFiniteLossError,
    CheckpointError,
    RunDirectoryBusy,
    TrackingStoreError,
)

register_resolvers()
# Our conf/hydra/launcher/submitit_*.yaml extend the plugin's schema of the same name on purpose.
warnings.filterwarnings("ignore", message=".*is validated against ConfigStore schema with the same name.*")


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> dict | None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    choices = dict(hydra_cfg.runtime.choices)
    shadowed = preset_overrides_of_choices(choices, list(hydra_cfg.overrides.task))
    for line in describe_preset_overrides(str(choices.get("experiment")), shadowed):
        log.warning(line)
    trainer = None
    try:
        trainer = Trainer(cfg, run_dir)
        with stop_signals(trainer):
            return trainer.fit()
    except StopRequested:
        if trainer.stop_signal == signal.SIGINT:
            raise SystemExit(130) from None  # Ctrl-C: stopped with a checkpoint; the same command resumes
        if in_slurm_job():
            requeued = trainer.stop_signal == TIME_LIMIT_SIGNAL and requeue_after_time_limit(
                trainer.settings.max_requeues, run_dir
            )
            if requeued or slurm_will_rerun():
                # Exit without a result: the same job runs again in this run directory and resumes.
                raise SystemExit(143) from None
        if in_submitit_job():
            raise  # stopped for good: the sweep records the stop as this job's outcome
        raise SystemExit(143) from None  # a local run or local sweep that was told to stop stops as a whole
    except KeyboardInterrupt:
        raise SystemExit(f"aborted; the last checkpoint in {run_dir / 'checkpoints'} is kept") from None
    except Exception as error:
        if trainer is None and not isinstance(error, RunDirectoryBusy):  # the busy run's records are not ours
            record_failure(cfg, run_dir, error)
        log.error("run failed: %s", error)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # Hydra marks this job failed; the other jobs of the sweep still run
        if isinstance(error, USER_ERRORS):
            raise SystemExit(f"error: {error}") from None
        raise


if __name__ == "__main__":
    sys.exit(main())
