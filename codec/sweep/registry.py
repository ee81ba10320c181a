"""Launching-side bookkeeping of a sweep: its jobs, run directories, identities, and its one
MLflow experiment and parent run, recorded in ``<sweep dir>/sweep.json``."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf, open_dict

from codec.config import plain_dict
from codec.messages import error_summary
from codec.training.identity import run_identity
from codec.training.status import read_status

if TYPE_CHECKING:
    from codec.tracking.loggers import MLflowLogger

log = logging.getLogger(__name__)
SWEEP_FILE = "sweep.json"


@dataclass
class PlannedJob:
    index: int
    overrides: list[str]
    run_dir: str
    identity: str
    finished: bool = False
    max_steps: int | None = None  # so a point that never started still counts in the progress


@dataclass
class Sweep:
    sweep_id: str
    sweep_dir: str
    jobs: list[PlannedJob]
    tracking_uri: str | None = None
    experiment_id: str | None = None
    parent_run_id: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    # Hydra-side overrides of the command (the launcher, its profile), so more seeds can be
    # launched the same way later (codec-sweep decide).
    launcher_overrides: list[str] = field(default_factory=list)
    # True when the runs join another sweep's parent run (a decide round): that parent is not closed here.
    adopted_parent: bool = False

    # -- planning ----------------------------------------------------------------------------
    @classmethod
    def plan(cls, master: DictConfig, hydra_context, job_overrides: Sequence[Sequence[str]]) -> Sweep:
        """Compose every job's config as its job will, to learn its run dir and identity."""
        sweep_dir = str(master.hydra.sweep.dir)
        jobs = []
        try:
            for index, overrides in enumerate(job_overrides):
                job_cfg = hydra_context.config_loader.load_sweep_config(master, list(overrides))
                with open_dict(job_cfg.hydra.job):
                    job_cfg.hydra.job.num = index
                HydraConfig.instance().set_config(job_cfg)
                run_dir = str((Path(str(job_cfg.hydra.sweep.dir)) / str(job_cfg.hydra.sweep.subdir)).resolve())
                task_cfg = plain_dict(OmegaConf.masked_copy(job_cfg, [str(k) for k in job_cfg if k != "hydra"]))
                identity = run_identity(task_cfg)
                status = read_status(Path(run_dir))
                # Finished at a step budget at least this job's: a raised trainer.max_steps continues the run.
                done = (
                    status.get("state") == "finished"
                    and status.get("identity") == identity
                    and int(status.get("step", 0)) >= int(float(task_cfg["trainer"]["max_steps"]))
                )
                # Stopped by a guardrail under the same guard settings: running it again would stop it again.
                done = done or (
                    status.get("state") == "stopped_early"
                    and status.get("identity") == identity
                    and status.get("guard_settings") == task_cfg.get("guard")
                )
                max_steps = int(float(task_cfg["trainer"]["max_steps"]))
                jobs.append(PlannedJob(index, list(overrides), run_dir, identity, done, max_steps))
        finally:
            HydraConfig.instance().set_config(master)
        key = [str(Path(sweep_dir).resolve()), sorted(" ".join(j.overrides) for j in jobs)]
        digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]
        sweep = cls(digest, sweep_dir, jobs)
        previous = cls.load(Path(sweep_dir))
        if previous is not None and previous.sweep_id == sweep.sweep_id:
            sweep.experiment_id, sweep.parent_run_id, sweep.history = (
                previous.experiment_id,
                previous.parent_run_id,
                previous.history,
            )
        sweep.tracking_uri = _mlflow_uri(master)
        sweep.launcher_overrides = [
            o for o in master.hydra.overrides.hydra if o.split("=", 1)[0].lstrip("+~").startswith("hydra/launcher")
        ]
        return sweep

    def child_run_names(self) -> dict[int, str]:
        """Each job's MLflow run name: the overrides that vary across the sweep, by their last key
        component (``groups=2 layers=1``), the full key where two would read the same."""
        parsed = [dict(o.lstrip("+~").split("=", 1) for o in job.overrides if "=" in o) for job in self.jobs]
        keys = sorted({k for p in parsed for k in p})
        varying = [k for k in keys if len({p.get(k) for p in parsed}) > 1]
        short = {k: k.rsplit(".", 1)[-1] for k in varying}
        label = {k: short[k] if list(short.values()).count(short[k]) == 1 else k for k in varying}
        names = {}
        for job, values in zip(self.jobs, parsed):
            parts = [f"{label[k]}={values[k]}" for k in varying if k in values]
            names[job.index] = (" ".join(parts) or " ".join(job.overrides) or "default").replace("'", "")
        return names

    # -- MLflow ------------------------------------------------------------------------------
    def register(self, master: DictConfig) -> list[str]:
        """Create (or reopen) the experiment and parent run once; returns the job overrides.

        A tracking server that cannot be reached does not stop the sweep: its runs start without a
        parent run, each keeping its records in its journal until the server answers."""
        if self.tracking_uri is None:
            return []
        adopted = master.logger.get("parent_run_id")
        if adopted:  # a round of `codec-sweep decide`: the runs join the sweep that asked for them
            self.parent_run_id, self.adopted_parent = str(adopted), True
            self.experiment_id, self.sweep_id = str(master.logger.experiment_id), str(master.logger.sweep_id)
            return self._logger_overrides()
        from codec.tracking.background import fail_fast_client

        fail_fast_client()
        try:
            return self._register(master, self.tracking_uri)
        except Exception as error:
            log.warning(
                "tracking server %s cannot be reached (%s): the sweep starts without an MLflow parent run; "
                "each run keeps its records in its journal and sends them when the server answers",
                self.tracking_uri,
                error_summary(error, 200),
            )
            self.parent_run_id = None
            return [f"logger.sweep_id={self.sweep_id}"]

    def _parent(self, experiment_name: str = "") -> MLflowLogger:
        """The sweep's parent run, through the same logger class its runs use."""
        from codec.tracking.loggers import MLflowLogger

        assert self.tracking_uri is not None
        parent = MLflowLogger(self.tracking_uri, experiment_name, self.experiment_id)
        parent.run_id = self.parent_run_id
        return parent

    def _register(self, master: DictConfig, tracking_uri: str) -> list[str]:
        from codec.tracking.loggers import ensure_experiment
        from codec.tracking.store import artifact_location

        parent = self._parent(str(master.logger.experiment_name))
        if self.experiment_id is None:
            name = parent.experiment_name
            self.experiment_id = ensure_experiment(parent.client, name, artifact_location(tracking_uri, name))
            parent.experiment_id = self.experiment_id
        tags = {
            "sweep_id": self.sweep_id,
            "sweep_dir": str(Path(self.sweep_dir).resolve()),
            "role": "sweep",
            "sweep_overrides": " ".join(master.hydra.overrides.task)[:5000],
        }
        name = f"sweep {Path(self.sweep_dir).name}"
        try:  # a re-run of the sweep reopens its parent run
            self.parent_run_id = parent.start(name, {}, tags, run_id=self.parent_run_id) if self.parent_run_id else None
        except Exception:
            self.parent_run_id = None
        if self.parent_run_id is None:
            self.parent_run_id = parent.start(name, {}, tags)
        return self._logger_overrides()

    def _logger_overrides(self) -> list[str]:
        return [
            f"logger.experiment_id={self.experiment_id}",
            f"logger.parent_run_id={self.parent_run_id}",
            f"logger.sweep_id={self.sweep_id}",
        ]

    def finish(self, returns: Sequence[JobReturn]) -> dict[str, int]:
        """Record the outcome; the parent run is FAILED if any job failed."""
        counts = {"finished": 0, "failed": 0, "skipped": sum(j.finished for j in self.jobs)}
        for job, ret in zip(self.jobs, returns):
            if job.finished:
                continue
            counts["failed" if ret.status == JobStatus.FAILED else "finished"] += 1
        self.history.append({"time": time.time(), **counts})
        self.save()
        if self.tracking_uri is not None and self.parent_run_id is not None and not self.adopted_parent:
            try:
                parent = self._parent()
                parent.log_metrics({f"sweep/{key}": value for key, value in counts.items()}, len(self.history))
                parent.finish("FAILED" if counts["failed"] else "FINISHED")
            except Exception as error:  # the runs' own records are safe in their journals
                log.warning("could not close the sweep's MLflow parent run %s: %s", self.parent_run_id, error)
        return counts

    def interrupt(self, error: BaseException) -> None:
        """The launcher stopped before every job returned: record it and close the parent run KILLED."""
        reason = "interrupted (Ctrl-C)" if isinstance(error, KeyboardInterrupt) else error_summary(error, 500)
        self.history.append({"time": time.time(), "interrupted": reason})
        self.save()
        if self.tracking_uri is None or self.parent_run_id is None or self.adopted_parent:
            return
        try:
            parent = self._parent()
            parent.set_tags({"interrupted": reason})
            parent.finish("KILLED")
        except Exception as tracking_error:
            log.warning("could not close the sweep's MLflow parent run %s: %s", self.parent_run_id, tracking_error)

    # -- persistence -------------------------------------------------------------------------
    def save(self) -> None:
        path = Path(self.sweep_dir) / SWEEP_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{SWEEP_FILE}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, sweep_dir: Path) -> Sweep | None:
        path = Path(sweep_dir) / SWEEP_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data["jobs"] = [PlannedJob(**j) for j in data["jobs"]]
        return cls(**data)


def _mlflow_uri(master: DictConfig) -> str | None:
    logger = master.get("logger") or {}
    if "MLflowLogger" not in str(logger.get("_target_", "")):
        return None
    return str(logger.get("tracking_uri"))


def skipped_return(job: PlannedJob) -> JobReturn:
    """What a finished run 'returns' when a re-run sweep skips it."""
    ret = JobReturn(overrides=job.overrides, working_dir=job.run_dir, task_name="train", status=JobStatus.COMPLETED)
    ret._return_value = read_status(Path(job.run_dir))
    return ret


def failed_return(overrides: Sequence[str], error: BaseException) -> JobReturn:
    ret = JobReturn(overrides=list(overrides), task_name="train", status=JobStatus.FAILED)
    ret._return_value = error
    return ret
