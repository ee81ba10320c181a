"""Everything a run says about itself: ``status.json``, the tracker's run, the log lines a user
reads to know where the run is and what to open next.

The trainer asks the recorder and never writes these itself. On ranks other than the main one
the recorder does nothing, so the trainer needs no rank checks for its record. The final state is
written to ``status.json`` and to the tracker independently: a failure to write one (a deleted run
directory, a full disk, a server that is down) never stops the other, and never hides the run's
own outcome.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from codec.evaluation import EvalResult
from codec.model import Codec
from codec.tracking import NullLogger, RunLogger
from codec.tracking.media import save_samples
from codec.training.guards import GuardStop
from codec.training.run_record import model_facts, start_run_record
from codec.training.status import read_status, write_status
from codec.training.timing import format_duration

log = logging.getLogger(__name__)

# Kept in each run directory while the run lives and given up when the disk is full, so the final
# state (a few kB of status.json) can still be written.
RESERVE_FILE = ".final_record_reserve"
RESERVE_BYTES = 256 * 1024


def without_spread(metrics: Mapping[str, float]) -> dict[str, float]:
    """Metrics without their ``*_std`` companions, for status.json."""
    return {k: v for k, v in metrics.items() if not k.endswith("_std")}


def prefixless(metrics: Mapping[str, float], prefix: str) -> dict[str, float]:
    """``{"cost/x": 1}`` -> ``{"x": 1}`` for the keys under ``prefix/``."""
    return {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith(prefix + "/")}


class RunRecorder:
    """The run's account of itself, on the main rank; silent on the others."""

    def __init__(self, run_dir: Path, logger: RunLogger, is_main: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.is_main = is_main
        self.logger: RunLogger = logger if is_main else NullLogger()
        self.logger.attach(self.run_dir)
        self.reserve = self.run_dir / RESERVE_FILE
        self.first_start = False  # set when the run is opened; the model facts follow the baseline

    # -- opening -------------------------------------------------------------------------------
    def open(self, config: Mapping[str, Any], identity: str, max_steps: int, run_id: str | None) -> str | None:
        """Open (or re-open) the tracker run; returns its id."""
        if not self.is_main:
            return run_id
        self.first_start = (run_id or read_status(self.run_dir).get("run_id")) is None
        return start_run_record(self.logger, self.run_dir, config, identity, max_steps, run_id)

    def announce(self, device: Any, cpu_budget: Any, tags: Mapping[str, str]) -> None:
        """The first line a user reads (where the run is, where it is tracked), and the run's tags."""
        if not self.is_main:
            return
        self.keep_reserve()
        log.info(
            "run directory %s | %s | device %s | %s",
            self.run_dir,
            self.logger.describe(),
            device,
            cpu_budget.describe(),
        )
        skipped = write_status(self.run_dir, cpu_budget=cpu_budget.record()).get("skipped_checkpoints")
        if skipped:
            tags = {**tags, "skipped_checkpoints": "; ".join(f"{k}: {v}" for k, v in skipped.items())[:5000]}
        self.logger.set_tags(dict(tags))

    def model_facts(self, codec: Codec, discriminator_params: int) -> None:
        """Sizes and rates, once per run, after the step-0 baseline: MLflow's run comparison colours
        by a run's first-logged metric, which should be its quality metric, not its size."""
        if self.first_start:
            self.logger.log_metrics(model_facts(codec, discriminator_params), 0)
            self.first_start = False

    # -- during the run ------------------------------------------------------------------------
    def metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.logger.log_metrics(metrics, step)

    def evaluation(self, split: str, result: EvalResult, step: int, first_key: str, sample_rate: int) -> dict:
        """An evaluation's metrics (``first_key`` first, so a first start logs it before anything
        else), per-codebook health and audio samples; returns the logged metrics."""
        metrics = {f"{split}/{k}": v for k, v in result.metrics.items()}
        if first_key in metrics:
            metrics = {first_key: metrics[first_key], **metrics}
        for key, values in result.codebook.items():
            for index, value in enumerate(values):
                metrics[f"{split}/codebook_{index:02d}_{key}"] = value
        self.logger.log_metrics(metrics, step)
        folder = f"{split}_step_{step:09d}"
        for path in save_samples(result.samples, sample_rate, self.run_dir / "samples" / folder):
            self.logger.log_artifact(path, f"samples/{folder}")
        shown = {k: v for k, v in without_spread(result.metrics).items() if not k.startswith("codebook_")}
        log.info("step %d %s: %s", step, split, ", ".join(f"{k}={v:.4g}" for k, v in shown.items()))
        return metrics

    def new_best(self, best: Mapping[str, float], step: int) -> None:
        self.logger.log_metrics({f"best/{k}": v for k, v in best.items()}, step)
        if self.is_main:
            write_status(self.run_dir, best=without_spread(best))

    def checkpoint_saved(self, step: int) -> None:
        if self.is_main:
            write_status(self.run_dir, step=step, checkpoint_step=step)

    def skipped_checkpoints(self, skipped: Mapping[str, str]) -> None:
        if self.is_main and skipped:
            write_status(self.run_dir, skipped_checkpoints=dict(skipped))

    def heartbeat(self, step: int, cost: Mapping[str, float]) -> None:
        """Progress, cost and pace for the sweep status table, with the time it was written."""
        if self.is_main:
            write_status(self.run_dir, heartbeat=time.time(), step=step, cost=dict(cost), **self._known_run_id())

    def probes(self, metrics: Mapping[str, float], step: int, seconds: float) -> None:
        self.logger.log_metrics(metrics, step)
        shown = {k.split("/", 1)[1]: v for k, v in metrics.items() if not k.startswith("probe/utterances")}
        log.info(
            "token probes in %s: %s", format_duration(seconds), ", ".join(f"{k}={v:.3g}" for k, v in shown.items())
        )

    # -- endings -------------------------------------------------------------------------------
    def finished(
        self, step: int, cost: Mapping[str, float], test: Mapping[str, float], checkpoint: Path, **fields: Any
    ) -> dict:
        """The run reached its budget: the final record, then where to look next."""
        self.logger.log_metrics(cost, step)
        status = self.end(
            "finished", "FINISHED", step=step, cost=prefixless(cost, "cost"), test=without_spread(test), **fields
        )
        log.info("finished at step %d; run directory %s", step, self.run_dir)
        for line in self.logger.where_to_look():
            log.info("open next: %s", line)
        log.info("open next: listen to %s", self.run_dir / "samples")
        log.info("open next: python -m codec encode IN.wav OUT.npz --checkpoint %s", checkpoint)
        return status

    def failed(self, error: BaseException, reopen: Callable[[], None]) -> None:
        """status.json and the tracker say FAILED with the reason; a failure before the run was
        opened still opens it (``reopen``) so that it can say so."""
        if not self.is_main:
            return
        reason = f"{type(error).__name__}: {error}"
        if not self.logger.started:
            try:
                reopen()
            except Exception as tracking_error:  # never hide the original failure behind a tracking one
                log.error("could not open the run in the tracker to record its failure: %s", tracking_error)
        self.end("failed", "FAILED", {"error": reason[:5000]}, error=reason)

    def guard_stopped(self, stop: GuardStop, guard_settings: Any, checkpoint: Path) -> None:
        """A guardrail ended the run: status and tracker say which and why; a sweep goes on."""
        if not self.is_main:
            return
        tags = {"guard": stop.guard, "stop_reason": stop.reason[:5000]}
        self.end(
            "stopped_early", "KILLED", tags, guard=stop.guard, reason=stop.reason,
            stopped_at_step=stop.step, guard_settings=guard_settings,
        )  # fmt: skip
        log.warning(
            "stopped early at step %d by guardrail %s: %s; checkpoint %s kept",
            stop.step,
            stop.guard,
            stop.reason,
            checkpoint,
        )

    def stopped(self, by_user: bool, reason: str) -> None:
        """A stop request (Ctrl-C: stopped; a cluster's signal: preempted) ended the run with a checkpoint."""
        if self.is_main:
            self.end("stopped" if by_user else "preempted", "KILLED", {"last_preemption": reason}, reason=reason)

    def aborted(self) -> None:
        """A second Ctrl-C: aborted mid-step; the last checkpoint stands."""
        if self.is_main:
            self.end("stopped", "KILLED", reason="aborted by a second Ctrl-C")

    def close(self) -> None:
        """Deliver what the tracker has pending; once the sender has the run's id, status.json names it."""
        self.logger.close()
        if not self.is_main or not self.logger.run_id or read_status(self.run_dir).get("run_id") == self.logger.run_id:
            return
        try:
            write_status(self.run_dir, run_id=self.logger.run_id)
        except OSError as error:  # a full or read-only disk: the journal still holds the run id
            log.warning("could not write the run id to %s: %s", self.run_dir / "status.json", error)

    def _known_run_id(self) -> dict[str, Any]:
        """The tracker's run id for status.json once the sender has it (it may still be on its way)."""
        return {"run_id": self.logger.run_id} if self.logger.run_id else {}

    # -- the final record ----------------------------------------------------------------------
    def keep_reserve(self) -> None:
        """Hold a little disk space for the final record (best effort)."""
        try:
            if not self.reserve.exists():
                self.reserve.write_bytes(bytes(RESERVE_BYTES))
        except OSError as error:
            self.reserve.unlink(missing_ok=True)
            log.warning("no disk space could be kept for the final record in %s: %s", self.run_dir, error)

    def end(self, state: str, tracker_status: str, tags: Mapping[str, str] | None = None, **fields: Any) -> dict:
        """Record the final ``state`` in status.json and ``tracker_status`` in the tracker, each on its own."""
        status = self._write_final(state=state, **{**self._known_run_id(), **fields})
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
