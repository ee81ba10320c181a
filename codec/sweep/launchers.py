"""Hydra launchers that know about sweeps (used by conf/hydra/launcher/*.yaml).

On top of the stock launchers each one:
- plans the sweep on the launching side and skips runs that already finished;
- creates the MLflow experiment and a parent run once, and passes their ids to every job;
- waits for every job even when some fail, then marks the parent run and reports.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf

from codec.sweep.registry import Sweep, failed_return, skipped_return
from codec.sweep.slurm_queue import ENDED_STATES, array_states, cancel
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher

log = logging.getLogger(__name__)


class SweepAwareMixin:
    """Wraps a launcher's job submission (``_submit``) with sweep planning and bookkeeping."""

    config: Any
    hydra_context: Any

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        sweep = Sweep.plan(self.config, self.hydra_context, job_overrides)
        pending = [job for job in sweep.jobs if not job.finished]
        name = Path(sweep.sweep_dir).name
        log.info(
            "sweep '%s' in %s: %d runs, %d already finished, %d to launch; watch it with: python -m codec.sweep "
            "status %s",
            name,
            sweep.sweep_dir,
            len(sweep.jobs),
            len(sweep.jobs) - len(pending),
            len(pending),
            name,
        )
        extra = sweep.register(self.config) if pending else []
        sweep.save()
        returns: dict[int, JobReturn] = {job.index: skipped_return(job) for job in sweep.jobs if job.finished}
        if pending:
            names = sweep.child_run_names() if extra else {}
            try:
                launched = self._submit(
                    [
                        job.overrides + extra + ([f"logger.run_name='{names[job.index]}'"] if names else [])
                        for job in pending
                    ],
                    initial_job_idx,
                )
            except BaseException as error:  # Ctrl-C, a stop signal, a launcher error: the parent says so
                sweep.interrupt(error)
                raise
            returns.update({job.index: ret for job, ret in zip(pending, launched)})
        ordered = [returns[job.index] for job in sweep.jobs]
        counts = sweep.finish(ordered) if pending else {"skipped": len(sweep.jobs)}
        log.info("sweep %s done: %s", sweep.sweep_id, counts)
        for job, ret in zip(sweep.jobs, ordered):
            if ret.status.name == "FAILED":
                log.error("run failed: %s (%s): %s", " ".join(job.overrides), job.run_dir, ret._return_value)
        return ordered

    def _submit(self, job_overrides: list[list[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        raise NotImplementedError


class LocalSweepLauncher(SweepAwareMixin, BasicLauncher):
    """Runs the jobs one after another in this process (the default ``local`` profile)."""

    def _submit(self, job_overrides: list[list[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        return BasicLauncher.launch(self, job_overrides, initial_job_idx)


# How often the launcher looks at the queue while it waits, and how long a task that left the
# queue may take to show its result file (shared file systems can lag) before it counts as lost.
QUEUE_POLL_SECONDS = 2.0
LOCAL_POLL_SECONDS = 0.5
RESULT_GRACE_SECONDS = 30.0


class JobFailedError(RuntimeError):
    """Raised on the job side so that submitit records the failure and the process exits 1."""


class SubmititSweepMixin(SweepAwareMixin):
    """Submits one job array through submitit and collects every result, failed or not."""

    _EXECUTOR: str
    params: dict[str, Any]

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        """Job side. Hydra's run_job turns a task's exception into a FAILED JobReturn, which
        submitit would report as success (SLURM: COMPLETED); raising it here instead makes
        submitit write the error and the job exit non-zero (SLURM: FAILED)."""
        ret: JobReturn = super().__call__(*args, **kwargs)  # type: ignore[misc]  # the launcher mixed in has it
        if ret.status == JobStatus.FAILED:
            raise JobFailedError(f"{type(ret._return_value).__name__}: {ret._return_value}") from ret._return_value
        return ret

    def _executor(self) -> Any:
        import submitit

        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR,
            folder=self.params["submitit_folder"],
            **{f"{self._EXECUTOR}_max_num_timeout": self.params.get("max_num_timeout", 0)},
        )
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                key if key in shared else f"{self._EXECUTOR}_{key}": value
                for key, value in self.params.items()
                if key not in ("submitit_folder", "max_num_timeout")
            }
        )
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        return executor

    def _job_arguments(self, job_overrides: list[list[str]], initial_job_idx: int) -> list[tuple]:
        arguments = []
        for offset, overrides in enumerate(job_overrides):
            index = initial_job_idx + offset
            log.info("\t#%d : %s", index, " ".join(filter_overrides(overrides)))
            arguments.append((list(overrides), "hydra.sweep.dir", index, f"job_id_for_{index}", Singleton.get_state()))
        return arguments

    def _submit(self, job_overrides: list[list[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        executor = self._executor()
        arguments = self._job_arguments(job_overrides, initial_job_idx)
        jobs = executor.map_array(self, *zip(*arguments))
        log.info(
            "submitted %d job(s) as %s array %s",
            len(jobs),
            self._EXECUTOR,
            jobs[0].job_id.split("_")[0] if jobs else "-",
        )
        return self._collect(jobs, job_overrides)

    def _collect(self, jobs: list, job_overrides: list[list[str]]) -> list[JobReturn]:
        """Every job's result, failed or not; on SLURM also what the queue says while waiting."""
        returns: dict[int, JobReturn] = {}
        left_queue_at: dict[int, float] = {}
        while len(returns) < len(jobs):
            for index, (job, overrides) in enumerate(zip(jobs, job_overrides)):
                if index not in returns and (self._EXECUTOR != "slurm" or job.paths.result_pickle.exists()):
                    try:
                        returns[index] = job.results()[0]
                    except Exception as error:  # the job exited non-zero or died: record it, keep waiting for the rest
                        returns[index] = failed_return(overrides, error)
            if len(returns) < len(jobs):
                returns.update(self._queue_verdicts(jobs, job_overrides, returns, left_queue_at))
            if len(returns) < len(jobs):
                time.sleep(QUEUE_POLL_SECONDS)
        return [returns[index] for index in range(len(jobs))]

    def _queue_verdicts(
        self, jobs: list, job_overrides: list[list[str]], done: dict[int, JobReturn], left_queue_at: dict[int, float]
    ) -> dict[int, JobReturn]:
        """Failed returns for tasks SLURM will never start (the rest of the array is cancelled) and
        for tasks that left the queue without writing a result."""
        states = array_states(jobs[0].job_id.split("_")[0])
        if states is None:
            return {}
        verdicts: dict[int, JobReturn] = {}
        waiting = [i for i in range(len(jobs)) if i not in done]
        blocked = next(
            (states[jobs[i].job_id] for i in waiting if jobs[i].job_id in states and states[jobs[i].job_id].never_runs),
            None,
        )
        if blocked is not None:
            asked = ", ".join(
                f"{k}={self.params.get(k)}"
                for k in ("partition", "cpus_per_task", "gpus_per_node", "mem_gb", "timeout_min")
                if self.params.get(k) is not None
            )
            message = (
                f"SLURM will never start this array ({blocked.state}, reason {blocked.reason}): the request exceeds "
                "what the "
                f"partition offers ({asked}); cancelled. Ask for less (hydra.launcher.cpus_per_task=..., +cluster=...)"
            )
            log.error(message)
            cancel(jobs[0].job_id.split("_")[0])
            return {i: failed_return(job_overrides[i], RuntimeError(message)) for i in waiting}
        now = time.monotonic()
        for i in waiting:
            task = states.get(jobs[i].job_id)
            if task is not None and task.state not in ENDED_STATES:
                left_queue_at.pop(i, None)
                continue
            # Ended (or gone) without a result file: give the file a moment to appear, then say why.
            if now - left_queue_at.setdefault(i, now) < RESULT_GRACE_SECONDS or jobs[i].paths.result_pickle.exists():
                continue
            cause = (
                "cancelled (scancel)"
                if task is not None and task.state == "CANCELLED"
                else f"ended {task.state}"
                if task is not None
                else "left the SLURM queue"
            )
            message = (
                f"SLURM job {jobs[i].job_id} {cause} without a result; its run directory keeps the last checkpoint"
            )
            log.error(message)
            verdicts[i] = failed_return(job_overrides[i], RuntimeError(message))
        return verdicts


def core_slots(cpus_per_task: int | None, array_parallelism: int | None = None) -> list[list[int]]:
    """This machine's usable cores cut into one disjoint set of ``cpus_per_task`` cores per job slot:
    floor(cores / cpus_per_task) slots, fewer if ``array_parallelism`` says so, at least one."""
    cores = sorted(os.sched_getaffinity(0))
    per_task = max(1, min(int(cpus_per_task or 1), len(cores)))
    count = max(1, len(cores) // per_task)
    if array_parallelism:
        count = max(1, min(count, int(array_parallelism)))
    return [cores[i * per_task : (i + 1) * per_task] for i in range(count)]


class SubmititLocalSweepLauncher(SubmititSweepMixin, LocalLauncher):
    """submitit's local executor: jobs as background processes on this machine, at most one per
    slot of ``cpus_per_task`` cores at a time, each pinned to its slot's cores (``taskset``), so
    that runs side by side never share a core and each sizes its threads to its own cores.

    submitit's local executor starts every job of an array at once and ignores
    ``array_parallelism``; this launcher queues them itself."""

    def _submit(self, job_overrides: list[list[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        executor = self._executor()
        arguments = self._job_arguments(job_overrides, initial_job_idx)
        free = core_slots(self.params.get("cpus_per_task"), self.params.get("array_parallelism"))
        log.info("%d job(s), at most %d at once, on cores %s", len(arguments), len(free), free)
        queued = list(range(len(arguments)))
        running: dict[int, tuple[Any, list[int]]] = {}
        returns: dict[int, JobReturn] = {}
        while queued or running:
            while queued and free:
                index, cores = queued.pop(0), free.pop(0)
                executor.update_parameters(local_setup=[f"taskset -pc {','.join(map(str, cores))} $$ > /dev/null"])
                running[index] = (executor.submit(self, *arguments[index]), cores)
            for index, (job, cores) in list(running.items()):
                if job.done():
                    try:
                        returns[index] = job.results()[0]
                    except Exception as error:  # the job exited non-zero or died: record it and go on
                        returns[index] = failed_return(job_overrides[index], error)
                    del running[index]
                    free.append(cores)
            if running:  # every slot is busy, or nothing waits for one
                time.sleep(LOCAL_POLL_SECONDS)
        return [returns[index] for index in range(len(arguments))]


class SlurmSweepLauncher(SubmititSweepMixin, SlurmLauncher):
    """A SLURM job array per sweep."""
