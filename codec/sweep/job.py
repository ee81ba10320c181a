"""Job-side handling: stop signals, SLURM requeue, and recording failures where users look.

SLURM sends SIGUSR2 shortly before a time limit (submitit's ``--signal``) and SIGTERM on
preemption, ``scontrol requeue`` or ``scancel``. Either way the trainer finishes its step,
saves a checkpoint and stops; on SIGUSR2 the job also requeues itself, up to
``trainer.max_requeues`` times. A requeued job re-runs in the same run directory and resumes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig

from codec.training.status import write_status

log = logging.getLogger(__name__)

TIME_LIMIT_SIGNAL = signal.SIGUSR2


def in_slurm_job() -> bool:
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and "SLURM_JOB_ID" in os.environ


def in_submitit_job() -> bool:
    """True inside a job started by submitit (SLURM or its local executor): one process per job."""
    return bool(os.environ.get("SUBMITIT_EXECUTOR"))


def slurm_will_rerun() -> bool:
    """Whether SLURM is about to run this job again (requeue or preemption), not cancel it."""
    try:
        state = subprocess.run(
            ["squeue", "-h", "-j", slurm_job_id(), "-o", "%T"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "CANCEL" not in state.upper() and bool(state.strip())


REASONS = {
    TIME_LIMIT_SIGNAL: "time limit",
    signal.SIGTERM: "termination (preemption, requeue or cancel)",
    signal.SIGINT: "interrupt (Ctrl-C)",
}


@contextlib.contextmanager
def stop_signals(trainer) -> Iterator[None]:
    """Route SIGUSR2, SIGTERM and SIGINT (Ctrl-C) to a graceful stop of ``trainer``: finish the
    step, checkpoint, exit. A second Ctrl-C aborts at once. The process's helpers (loader and
    evaluation workers) ignore these signals (:mod:`codec.signals`), so a signal to the whole
    process group stops the run once, here."""

    def request_stop(signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        if trainer.stop_requested:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt  # the second Ctrl-C: abort now
            return  # the same stop, signalled again (SLURM signals the whole group)
        if signum == signal.SIGINT:
            log.warning("Ctrl-C: stopping after this step with a checkpoint (Ctrl-C again aborts at once)")
        else:
            log.warning("received %s: %s; stopping after this step", name, REASONS[signal.Signals(signum)])
        trainer.stop_requested = True
        trainer.stop_reason = f"{name}: {REASONS[signal.Signals(signum)]}"
        trainer.stop_signal = signum

    previous = {sig: signal.signal(sig, request_stop) for sig in REASONS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def slurm_job_id() -> str:
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array_job}_{array_task}" if array_job and array_task else os.environ["SLURM_JOB_ID"]


def requeue_after_time_limit(max_requeues: int, run_dir: Path) -> bool:
    """Requeue this SLURM job unless it has been requeued ``max_requeues`` times already."""
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    if restarts >= max_requeues:
        log.warning("not requeueing: already restarted %d times (trainer.max_requeues=%d)", restarts, max_requeues)
        return False
    job = slurm_job_id()
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=60)
    write_status(run_dir, state="preempted", requeued=restarts + 1)
    log.warning("requeued SLURM job %s (restart %d of at most %d)", job, restarts + 1, max_requeues)
    return True


def record_failure(cfg: DictConfig, run_dir: Path, error: BaseException) -> None:
    """A job that failed before its trainer existed still shows up as failed, with the reason.

    The trainer records its own failures; this covers construction errors (bad config, data).
    """
    reason = f"{type(error).__name__}: {error}"
    try:  # status.json and MLflow are told independently: one failing never stops the other
        status = write_status(run_dir, state="failed", error=reason)
    except OSError as status_error:
        log.error("could not write the failure to %s: %s", Path(run_dir) / "status.json", status_error)
        status = {}
    if status.get("run_id") or "MLflowLogger" not in str(cfg.logger.get("_target_", "")):
        return
    try:
        from hydra.utils import instantiate

        from codec.tracking import flatten_config

        logger = instantiate(cfg.logger)
        logger.attach(run_dir)
        name = f"{cfg.get('name')}:{status.get('overrides') or run_dir.name}"
        run_id = logger.start(
            run_name=name,
            params=flatten_config({"overrides": run_dir.name}),
            tags={"run_dir": str(Path(run_dir).resolve()), "error": reason[:5000]},
        )
        logger.finish("FAILED")
        logger.close()
        if run_id or logger.run_id:
            write_status(run_dir, run_id=run_id or logger.run_id)
    except Exception as tracking_error:  # never hide the original failure behind a tracking one
        log.error("could not record the failure in MLflow: %s", tracking_error)
