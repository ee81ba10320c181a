"""The training loop: resume, cadence, checkpoints, non-finite checks, evaluation and best tracking.

The parts come from :func:`codec.training.build.build_run`; the update of one batch is
:class:`codec.training.gan_step.GANStep`; what the run says about itself (``status.json``, the
tracker, the log lines a user reads) goes through :class:`codec.training.recorder.RunRecorder`.
Running it again on the same run directory resumes from ``checkpoints/latest.pt``.
"""

from __future__ import annotations

import logging
import math
import re
import signal
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from codec.config import ConfigError, build
from codec.data.split_record import checkpoint_record
from codec.evaluation import EvalResult
from codec.tracking import NullLogger, RunLogger
from codec.training.build import build_run
from codec.training.checkpoint import rng_state, set_rng_state
from codec.training.distributed import any_rank
from codec.training.gan_step import micro_batches
from codec.training.guards import GuardStop
from codec.training.identity import check_resumable
from codec.training.recorder import RunRecorder, prefixless
from codec.training.status import read_status
from codec.training.timing import LogWindow, format_duration

log = logging.getLogger(__name__)
# Per-codebook validation keys (valid/codebook_07_usage, ...): logged per evaluation, never as best/*.
PER_CODEBOOK_KEY = re.compile(r"codebook_\d+_")


class NonFiniteLossError(RuntimeError):
    """A NaN or infinite loss; training stops and the last good checkpoint is kept."""


class StopRequested(Exception):
    """Raised inside the loop after a preemption/time-limit signal once a checkpoint is saved."""


class StoppedByGuardrail(Exception):
    """Raised inside the loop when a guardrail (codec.training.guards) ends the run early."""

    def __init__(self, stop: GuardStop) -> None:
        super().__init__(stop.reason)
        self.stop = stop


class Trainer:
    """Trains the parts built from ``cfg`` in ``run_dir``."""

    def __init__(self, cfg: DictConfig, run_dir: Path, logger: RunLogger | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.parts = parts = build_run(cfg, self.run_dir)
        self.settings, self.device, self.dist = parts.settings, parts.device, parts.dist
        self.codec, self.discriminator, self.gan, self.data = parts.codec, parts.discriminator, parts.gan, parts.data
        self.guards, self.checkpoints, self.evaluator = parts.guards, parts.checkpoints, parts.evaluator
        if not self.dist.is_main:
            tracker: RunLogger = NullLogger()  # only rank 0 talks to the tracker
        else:
            tracker = logger if logger is not None else build(cfg.logger, "logger")
        self.recorder = RunRecorder(self.run_dir, tracker, self.dist.is_main)
        self.stop_requested, self.stop_reason, self.stop_signal = False, "", None
        self.step = 0
        self.best_value: float | None = None
        self.best_metrics: dict[str, float] = {}
        self.run_id: str | None = None
        self.guard_verdict: GuardStop | None = None
        self._utterances: dict[str, list] = {}

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        p = self.parts
        return {
            "step": self.step,
            "config": p.config,
            "identity": p.identity,
            "codec": self.codec.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            **self.gan.state_dict(),
            "best_value": self.best_value,
            "best_metrics": self.best_metrics,
            "run_id": self.run_id,
            "rng": rng_state(),
            "guards": self.guards.state_dict() if self.guards is not None else {},
            "cost": p.cost.state_dict(),
            "splits": checkpoint_record(p.split_record),
            "data_position": self.data.position(self.step),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_resumable(state, self.parts.config, self.parts.identity, self.run_dir)
        self.step = int(state["step"])
        self.codec.load_state_dict(state["codec"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.gan.load_state_dict(state)
        self.best_value = state.get("best_value")
        self.best_metrics = state.get("best_metrics", {})
        self.run_id = state.get("run_id")
        if self.guards is not None:
            self.guards.load_state_dict(state.get("guards", {}))
        self.parts.cost.load_state_dict(state.get("cost", {}))
        self.data.restore_position(state.get("data_position"))
        set_rng_state(state["rng"])

    def save_checkpoint(self) -> Path | None:
        self._raise_if_nonfinite(all_ranks=False)
        if not self.dist.is_main:
            return None
        path = self.checkpoints.save(self.state_dict(), self.step)
        self.recorder.checkpoint_saved(self.step)
        return path

    def train_step(self, batch: torch.Tensor | list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """One GAN update at the current step (see :class:`~codec.training.gan_step.GANStep`)."""
        if isinstance(batch, list):
            return self.gan.accumulated_step(batch, self.step)
        return self.gan.train_step(batch, self.step)

    def _raise_if_nonfinite(self, all_ranks: bool = True) -> None:
        """Checked where the loop syncs anyway and before every checkpoint, so bad weights are never saved.

        ``all_ranks=False`` checks this rank only (for calls that not every rank makes); under DDP
        a NaN on one rank reaches every rank's weights through the gradient all-reduce anyway.
        """
        first = self.gan.nonfinite_step()
        if any_rank(first > 0, self.dist, self.device) if all_ranks else first > 0:
            kept = self.checkpoints.latest if self.checkpoints.latest.exists() else "none yet"
            where = f"at step {first}" if first else "on another rank"
            raise NonFiniteLossError(
                f"non-finite loss {where}; training stopped and the weights since then are discarded. "
                f"Last good checkpoint: {kept}. Lower the learning rate or check the data."
            )

    # -- evaluation --------------------------------------------------------------------------
    def evaluate(self, split: str, across_ranks: bool = True) -> EvalResult:
        """The eval model on ``split`` (valid: at most ``eval.max_utterances``), utterances read once;
        split across the ranks (every rank calls it) unless ``across_ranks`` is false."""
        if split not in self._utterances:
            limit = self.evaluator.max_utterances if split == "valid" else None
            self._utterances[split] = self.data.utterances(split, limit, self.evaluator.max_seconds)
        grammar = self.data.asr_grammar()
        return self.evaluator.evaluate(
            self.gan.eval_model,
            self._utterances[split],
            self.device,
            self.data.transcripts(split),
            str(grammar) if grammar else None,
            rank=self.dist.rank if across_ranks else 0,
            world_size=self.dist.world_size if across_ranks else 1,
        )

    def _log_eval(self, split: str, result: EvalResult) -> dict[str, float]:
        return self.recorder.evaluation(split, result, self.step, self.settings.best_metric, self.codec.sample_rate)

    def _is_better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best_value is None:
            return True
        return value < self.best_value if self.settings.best_mode == "min" else value > self.best_value

    def _validate_and_track_best(self) -> None:
        self._raise_if_nonfinite(all_ranks=False)
        result = self.evaluate("valid")  # every rank scores its share
        if not self.dist.is_main:
            return
        metrics = self._log_eval("valid", result)
        if self.guards is not None and self.guard_verdict is None:
            self.guard_verdict = self.guards.after_evaluation(self.step, result.metrics, result.codebook)
        key = self.settings.best_metric
        if key not in metrics:
            raise ConfigError(
                f"trainer.best_metric={key!r} is not among the validation metrics {sorted(metrics)[:12]}..."
            )
        if self._is_better(metrics[key]):
            self.best_value = metrics[key]
            self.best_metrics = {k.split("/", 1)[1]: v for k, v in metrics.items() if not PER_CODEBOOK_KEY.search(k)}
            self.best_metrics["step"] = self.step
            step_file = self.save_checkpoint()
            if step_file is not None:
                self.checkpoints.mark_best(step_file)
            self.recorder.new_best(self.best_metrics, self.step)

    # -- the run -----------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to ``max_steps`` (resuming if a checkpoint exists); returns the final status.

        Everything from the checkpoint load on is inside the failure handling, so any failure
        leaves ``status.json`` and the MLflow run FAILED with the reason (never RUNNING).
        """
        try:
            self._resume()
            self.parts.cost.start(self.step)
            done = self._nothing_to_do()
            if done is not None:
                return done
            self._open_run()
            self._loop()
            return self._finish()
        except StoppedByGuardrail as stopped:
            self.recorder.guard_stopped(stopped.stop, self.parts.config.get("guard"), self.checkpoints.latest)
            return read_status(self.run_dir)
        except StopRequested:
            self.recorder.stopped(self.stop_signal == signal.SIGINT, self.stop_reason)
            raise
        except KeyboardInterrupt:
            self.recorder.aborted()
            raise
        except BaseException as error:
            self.recorder.failed(error, reopen=self._start_record)
            raise
        finally:
            self.evaluator.close()
            self.recorder.close()
            if self.parts.run_lock is not None:
                self.parts.run_lock.release()

    def _resume(self) -> None:
        """Load the newest checkpoint that loads; skipped files are logged and recorded."""
        loaded = self.checkpoints.load(map_location=self.device)
        if loaded is not None:
            self.load_state_dict(loaded.state)
            log.info("resumed from %s at step %d", loaded.path, self.step)
            self.recorder.skipped_checkpoints(loaded.skipped)

    def _nothing_to_do(self) -> dict[str, Any] | None:
        """The run's status when it finished at this budget, or a guardrail stopped it under the same
        guard settings; None when there is training to do."""
        status = read_status(self.run_dir)
        if status.get("state") == "finished" and self.step >= self.settings.max_steps:
            log.info("run in %s already finished at step %d; nothing to do", self.run_dir, self.step)
            return status
        if status.get("state") == "stopped_early" and status.get("guard_settings") == self.parts.config.get("guard"):
            log.info(
                "run in %s was stopped at step %d by a guardrail (%s); nothing to do. Loosen guard.* or pick "
                "guard=off to train it on", self.run_dir, self.step, status.get("reason"),
            )  # fmt: skip
            return status
        return None

    def _start_record(self) -> None:
        p = self.parts
        self.run_id = self.recorder.open(p.config, p.identity, self.settings.max_steps, self.run_id)

    def _open_run(self) -> None:
        """Open the tracker run, say where the run is, then the step-0 baseline and the model facts."""
        if not self.dist.is_main:
            return
        self._start_record()
        tags = {f"metric_package.{name}": version for name, version in self.evaluator.packages().items()}
        start = self.parts.warm_start
        if start is not None:
            tags["warm_start"] = f"{','.join(start['parts'])} from {start['file']} (step {start['step']})"
        self.recorder.announce(self.device, self.parts.cpu_budget, tags)
        if self.step == 0 and self.settings.eval_at_start:
            baseline = self.evaluate("valid", across_ranks=False)  # the untrained model, as step 0 of the curves
            self._log_eval("valid", baseline)
            if self.guards is not None:
                self.guards.after_evaluation(0, baseline.metrics, baseline.codebook)
        self.recorder.model_facts(self.codec, sum(p.numel() for p in self.discriminator.parameters()))

    def _loop(self) -> None:
        s = self.settings
        if self.step >= s.max_steps:
            return
        k = s.accumulate_steps  # the loader serves micro-batches: k per step
        loader = self.data.train_loader(
            s.batch_size, s.segment_seconds, s.seed, self.step * k, s.max_steps * k,
            num_workers=self.parts.cpu_budget.workers(s.num_workers), pin_memory=self.device.type == "cuda",
            rank=self.dist.rank, world_size=self.dist.world_size,
        )  # fmt: skip
        window = LogWindow(self.step)
        self.codec.train()
        self.discriminator.train()
        for batch in micro_batches(loader, k, self.device):
            metrics = self.train_step(batch)
            self.step += 1
            window.add(metrics)
            if self.step % s.log_every == 0 or self.step == s.max_steps:
                self._report(window)
            if self.step % s.eval_every == 0 and self.step < s.max_steps:
                self._validate_and_track_best()
            if self.step % s.checkpoint_every == 0:
                self.save_checkpoint()
            self._stop_if_asked()

    def _report(self, window: LogWindow) -> None:
        """The log step: tracker metrics, guardrails, the console line and the status heartbeat."""
        self._raise_if_nonfinite()
        s = self.settings
        values = window.close(s.batch_size * s.accumulate_steps * s.segment_seconds)
        values["train/lr_generator"] = self.gan.opt_g.param_groups[0]["lr"]
        values.update(self.parts.cost.metrics(self.step))
        self.recorder.metrics(values, self.step)
        if self.guards is not None and self.guard_verdict is None:
            self.guard_verdict = self.guards.after_log(self.step, values)
        loss_d = values.get("train/loss_discriminator")
        log.info(
            "step %d/%d (%d%%): loss_g=%.4f loss_d=%s mel=%.4f (%.1f audio-s/s) ETA %s",
            self.step, s.max_steps, 100 * self.step // s.max_steps, values["train/loss_generator"],
            "off" if loss_d is None else f"{loss_d:.4f}", values["train/mel"],
            values["train/throughput_audio_seconds_per_second"], format_duration(window.eta(self.step, s.max_steps)),
        )  # fmt: skip
        self.recorder.heartbeat(self.step, prefixless(values, "cost"))

    def _stop_if_asked(self) -> None:
        """After a step: a guardrail or a stop request on any rank ends the loop with a checkpoint."""
        if not any_rank(self.stop_requested or self.guard_verdict is not None, self.dist, self.device):
            return
        self.save_checkpoint()
        if self.guard_verdict is not None:
            raise StoppedByGuardrail(self.guard_verdict)
        self.stop_reason = self.stop_reason or "a stop request on another rank"
        log.warning(
            "stopped at step %d after %s; checkpoint %s saved; the same command resumes",
            self.step, self.stop_reason, self.checkpoints.latest,
        )  # fmt: skip
        raise StopRequested(self.stop_reason)

    def _finish(self) -> dict[str, Any]:
        self._raise_if_nonfinite()
        if self.dist.enabled:  # each rank's codebooks, so their agreement across ranks can be checked
            path = self.run_dir / "ranks" / f"rank{self.dist.rank}_quantizer.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({k: v.cpu() for k, v in self.codec.quantizer.state_dict().items()}, path)
        self._validate_and_track_best()
        test = self.evaluate("test")
        if not self.dist.is_main:
            return {"state": "finished", "step": self.step, "rank": self.dist.rank}
        self._log_eval("test", test)
        self.save_checkpoint()
        probes: dict[str, float] = {}
        if self.parts.probes is not None:  # token probes on the final (EMA when kept) codec
            start = time.monotonic()
            probes = self.parts.probes.run(self.gan.eval_model, self.data)
            self.recorder.probes(probes, self.step, time.monotonic() - start)
        best = self.checkpoints.best if self.checkpoints.best.exists() else self.checkpoints.latest
        return self.recorder.finished(self.step, self.parts.cost.metrics(self.step), test.metrics, best, probe=probes)
