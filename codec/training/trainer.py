"""The training loop: resume, cadence, checkpoints, non-finite checks, evaluation and best tracking.

Everything the loop needs comes from the composed config; everything it produces lands in
the run directory (checkpoints, status, samples) and in the run logger (MLflow or none).
Running it again on the same run directory resumes from ``checkpoints/latest.pt``. The update of
one batch lives in :mod:`codec.training.gan_step`, the run's record in :mod:`codec.training.run_record`.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from codec.config import ConfigError, build, build_codec, build_discriminator, build_loss, plain_dict, validate
from codec.data.split_record import checkpoint_record, read_record, write_record
from codec.evaluation import EvalResult, Evaluator
from codec.probe import ProbeDataError, TokenProbes
from codec.tracking import NullLogger, RunLogger
from codec.tracking.media import save_samples
from codec.training.checkpoint import CheckpointManager
from codec.training.cost import RunCost
from codec.training.cpu_budget import apply_cpu_budget, cpu_budget
from codec.training.distributed import DistributedContext, any_rank, init_distributed, launch_rank
from codec.training.gan_step import GANStep
from codec.training.guards import Guardrails, GuardStop
from codec.training.host_memory import retain_freed_host_memory
from codec.training.identity import identity_diff, predated_options, run_identity
from codec.training.run_lock import RunLock
from codec.training.run_record import RunRecorder, model_facts, start_run_record
from codec.training.settings import TrainerConfigError, TrainerSettings, enabled_on
from codec.training.status import read_status, write_status
from codec.training.timing import format_duration
from codec.training.warm_start import WarmStartError, warm_start

log = logging.getLogger(__name__)
# Per-codebook validation keys (valid/codebook_07_usage, ...): logged per evaluation, never as best/*.
PER_CODEBOOK_KEY = re.compile(r"codebook_\d+_")


class NonFiniteLossError(RuntimeError):
    """A NaN or infinite loss; training stops and the last good checkpoint is kept."""


class StopRequested(Exception):
    """Raised inside the loop after a preemption/time-limit signal once a checkpoint is saved."""


class GuardStopped(Exception):
    """Raised inside the loop when a guardrail (codec.training.guards) ends the run early."""

    def __init__(self, stop: GuardStop) -> None:
        super().__init__(stop.reason)
        self.stop = stop


def rng_state() -> dict[str, Any]:
    """Every random generator's state as tensors and plain values (loadable with weights_only)."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(position),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
    }


def set_rng_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    numpy_state = rng["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["gauss"],
        )
    )
    version, internal, gauss_next = rng["python"]
    random.setstate((version, tuple(internal), gauss_next))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class LogWindow:
    """The steps since the last log line: their count and time, and the running maxima of the
    ``*_max`` metrics (maxima over every step of the window, not the last step's)."""

    def __init__(self, first_step: int) -> None:
        self.loop_start = self.start = time.perf_counter()
        self.first_step = first_step
        self.steps = 0
        self.maxima: dict[str, torch.Tensor] = {}
        self.last: dict[str, torch.Tensor] = {}

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        self.steps += 1
        self.last = metrics
        for key in [k for k in metrics if k.endswith("_max")]:
            self.maxima[key] = metrics[key] if key not in self.maxima else torch.maximum(self.maxima[key], metrics[key])

    def close(self, audio_seconds_per_step: float) -> dict[str, float]:
        """The last step's metrics with the window's maxima and throughput; starts the next window."""
        now = time.perf_counter()
        values = {k: float(v) for k, v in {**self.last, **self.maxima}.items()}
        values["train/throughput_audio_seconds_per_second"] = (
            self.steps * audio_seconds_per_step / max(now - self.start, 1e-9)
        )
        self.start, self.steps, self.maxima = now, 0, {}
        return values

    def eta(self, step: int, max_steps: int) -> float:
        """Seconds to ``max_steps`` at the pace since the loop started."""
        return (self.start - self.loop_start) / max(step - self.first_step, 1) * (max_steps - step)


class Trainer:
    """Builds every part from ``cfg`` and trains it in ``run_dir``."""

    def __init__(self, cfg: DictConfig, run_dir: Path, logger: RunLogger | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run_lock = self._lock_run_dir()
        self.config = plain_dict(cfg)
        self.settings = self._settings(cfg)
        validate(cfg)
        self._seed()  # before any module is built, so initial weights follow trainer.seed
        self.identity = run_identity(self.config)
        self._place()
        self.stop_requested = False
        self.stop_reason = ""
        self.stop_signal: int | None = None
        self._build_parts(cfg)
        if not self.dist.is_main:
            self.logger: RunLogger = NullLogger()  # only rank 0 talks to the tracker
        else:
            self.logger = logger if logger is not None else build(cfg.logger, "logger")
        self.logger.attach(self.run_dir)
        self.recorder = RunRecorder(self.run_dir, self.logger)
        self.gan = GANStep(self.codec, self.discriminator, self.loss, self.settings, self.device, self.dist)
        self._check_segment()

        self.checkpoints = self._checkpoint_manager()
        s = self.settings
        self.cost = RunCost(self.device, self.dist.world_size, s.batch_size * s.segment_seconds * self.dist.world_size)
        self.step = 0
        self.best_value: float | None = None
        self.best_metrics: dict[str, float] = {}
        self.run_id: str | None = None
        self.first_start = False  # set when the tracker run is opened; the model facts follow the baseline
        self._valid_utterances: list | None = None
        self._test_utterances: list | None = None

    def _lock_run_dir(self) -> RunLock | None:
        """One writer per run directory (rank 0 holds it for the whole job); a second identical
        command stops here, before it has touched status.json, MLflow or a checkpoint."""
        try:
            return RunLock(self.run_dir).acquire() if launch_rank() == 0 else None
        except PermissionError as error:
            raise ConfigError(
                f"{self.run_dir} is not writable ({error.strerror}); choose another run directory "
                "(paths.runs=... or hydra.run.dir=...) or fix its permissions"
            ) from error

    @staticmethod
    def _settings(cfg: DictConfig) -> TrainerSettings:
        try:
            return TrainerSettings.from_config(cfg.trainer)
        except TrainerConfigError as error:
            raise ConfigError(str(error)) from error
        except TypeError as error:
            raise ConfigError(f"invalid config 'trainer': {error}") from error

    def _place(self) -> None:
        """The device, the process group and this process's share of the CPU."""
        self.device = resolve_device(self.settings.device)
        self.dist: DistributedContext = init_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        if enabled_on(self.settings.retain_host_memory, self.device.type, auto_on="cpu"):
            retain_freed_host_memory()
        self.cpu_budget = cpu_budget()
        apply_cpu_budget(self.cpu_budget)

    def _build_parts(self, cfg: DictConfig) -> None:
        """Model, losses, data (prepared and split), evaluator, guardrails and probes, in an order
        that keeps initial weights a function of the seed and fails bad data before training."""
        self.codec = build_codec(cfg).to(self.device)
        self._check_training_scale()
        self.discriminator = build_discriminator(cfg).to(self.device)
        self.warm_start: dict[str, Any] | None = self._warm_start()
        self.loss = build_loss(cfg).to(self.device)
        self.data = build(cfg.data, "data")
        self.data.prepare()  # missing paths and unusable folders fail here, before training
        self.split_record = self._fix_split()
        self.evaluator: Evaluator = build(cfg.eval, "eval")
        self.evaluator.workers = self.cpu_budget.workers(self.evaluator.workers)
        # Guardrails that end a run which cannot succeed (guard=off: none).
        self.guards: Guardrails | None = build(cfg.guard, "guard") if cfg.get("guard") else None
        self.guard_stop: GuardStop | None = None
        # Token probes on the frozen codes once training ends (probe=none: none).
        self.probes: TokenProbes | None = build(cfg.probe, "probe") if cfg.get("probe") else None
        if self.probes is not None:
            try:
                self.probes.check(self.data)
            except ProbeDataError as error:
                raise ConfigError(str(error)) from error

    def _fix_split(self) -> dict[str, Any]:
        """The split recorded at the run's first start is kept by every later start (a resume, a
        requeue, a rerun over changed data: ``codec.data.split_record`` says why and how)."""
        record = read_record(self.run_dir)
        if record is None:
            record = self.data.split_record()
            if self.dist.is_main:
                write_record(self.run_dir, record)
        else:
            for warning in self.data.keep_recorded_split(record):
                log.warning(warning)
        empty = [split for split in ("valid", "test") if not self.data.split(split)]
        if empty:
            raise ConfigError(
                f"the {' and '.join(empty)} split(s) hold no files, so the run could not be evaluated; "
                f"set data.valid_count and data.test_count to at least 1"
            )
        return record

    def _checkpoint_manager(self) -> CheckpointManager:
        """The checkpoint directory, checked writable now rather than at the first checkpoint."""
        directory = self.run_dir / "checkpoints"
        try:
            manager = CheckpointManager(directory, self.settings.keep_last)
            probe = directory / f".write_test.{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise ConfigError(
                f"{directory} is not writable ({error.strerror}); choose another run directory "
                "(paths.runs=... or hydra.run.dir=...) or fix its permissions"
            ) from error
        return manager

    def _check_segment(self) -> None:
        """Training crops must cover two latent frames and the longest STFT window in use."""
        s = self.settings
        samples = round(s.segment_seconds * self.codec.sample_rate)
        needed = max(2 * self.codec.hop_length, *self.gan.stft_windows)
        if samples < needed:
            raise ConfigError(
                f"trainer.segment_seconds={s.segment_seconds} gives {samples} samples at {self.codec.sample_rate} "
                "Hz; at least "
                f"{needed} are needed (two hops of {self.codec.hop_length} samples and the longest STFT window, "
                f"{max(self.gan.stft_windows)}): raise trainer.segment_seconds to "
                f"{needed / self.codec.sample_rate:.3f} or more"
            )

    def _warm_start(self) -> dict[str, Any] | None:
        """Copy ``trainer.init_parts`` from ``trainer.init_from`` (before the optimizers and the
        weight EMA are built from these modules). A run with checkpoints of its own resumes from
        them instead, so a requeued or continued run never goes back to the source weights."""
        if not self.settings.init_from:
            return None
        if any((self.run_dir / "checkpoints").glob("*.pt")):
            log.info("trainer.init_from not applied: %s has checkpoints of its own to resume from", self.run_dir)
            return None
        try:
            done = warm_start(self.codec, self.discriminator, self.settings.init_from, self.settings.init_parts)
        except WarmStartError as error:
            raise ConfigError(str(error)) from error
        log.info(
            "warm start: %s from %s (its step %d, %s weights)",
            ", ".join(done["parts"]),
            done["file"],
            done["step"],
            done["weights"],
        )
        return done

    def _check_training_scale(self) -> None:
        """Refuse, before training, a quantizer setting that cannot work at this batch."""
        s = self.settings
        frames = math.ceil(round(s.segment_seconds * self.codec.sample_rate) / self.codec.hop_length)
        vectors = s.batch_size * self.dist.world_size * frames
        try:
            self.codec.quantizer.check_training_scale(vectors)
        except ValueError as error:
            raise ConfigError(
                f"{error} (the batch: trainer.batch_size={s.batch_size} x trainer.segment_seconds={s.segment_seconds} "
                f"x {self.codec.frame_rate:g} frames/s x {self.dist.world_size} rank(s) = {vectors} frames)"
            ) from error

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            "step": self.step,
            "config": self.config,
            "identity": self.identity,
            "codec": self.codec.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            **self.gan.state_dict(),
            "best_value": self.best_value,
            "best_metrics": self.best_metrics,
            "run_id": self.run_id,
            "rng": rng_state(),
            "guards": self.guards.state_dict() if self.guards is not None else {},
            "cost": self.cost.state_dict(),
            "splits": checkpoint_record(self.split_record),
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("identity") != self.identity:
            changes = identity_diff(state.get("config", {}), self.config)
            if changes:
                raise ConfigError(
                    f"{self.run_dir} holds a checkpoint of a different configuration; refusing to resume. "
                    f"Changed keys: {changes[:10]}. Use another run directory (hydra.run.dir=...) to start afresh."
                )
            log.info(
                "the checkpoint predates options added since (%s); they keep its behaviour, resuming",
                ", ".join(predated_options(state.get("config", {}))),
            )
        self.step = int(state["step"])
        self.codec.load_state_dict(state["codec"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.gan.load_state_dict(state)
        self.best_value = state.get("best_value")
        self.best_metrics = state.get("best_metrics", {})
        self.run_id = state.get("run_id")
        if self.guards is not None:
            self.guards.load_state_dict(state.get("guards", {}))
        self.cost.load_state_dict(state.get("cost", {}))
        set_rng_state(state["rng"])

    def save_checkpoint(self) -> Path | None:
        self._raise_if_nonfinite(all_ranks=False)
        if not self.dist.is_main:
            return None
        path = self.checkpoints.save(self.state_dict(), self.step)
        write_status(self.run_dir, step=self.step, checkpoint_step=self.step)
        return path

    # -- setup -------------------------------------------------------------------------------
    def _seed(self) -> None:
        seed = self.settings.seed
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        if self.settings.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False

    def _start_logging(self) -> None:
        self.first_start = (self.run_id or read_status(self.run_dir).get("run_id")) is None
        self.run_id = start_run_record(
            self.logger, self.run_dir, self.config, self.identity, self.settings.max_steps, self.run_id
        )

    def _log_model_facts(self) -> None:
        """Sizes and rates, once per run, after the step-0 baseline: MLflow's run comparison colours by
        a run's first-logged metric, which should be its quality metric, not its parameter count."""
        if self.first_start:
            discriminator_params = sum(p.numel() for p in self.discriminator.parameters())
            self.logger.log_metrics(model_facts(self.codec, discriminator_params), 0)
            self.first_start = False

    def train_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """One GAN update at the current step (see :class:`~codec.training.gan_step.GANStep`)."""
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
    def evaluate(self, split: str) -> EvalResult:
        if split == "valid":
            if self._valid_utterances is None:
                self._valid_utterances = self.data.utterances(
                    "valid", self.evaluator.max_utterances, self.evaluator.max_seconds
                )
            utterances = self._valid_utterances
        else:
            if self._test_utterances is None:
                self._test_utterances = self.data.utterances("test", None, self.evaluator.max_seconds)
            utterances = self._test_utterances
        grammar = self.data.asr_grammar()
        return self.evaluator.evaluate(
            self.gan.eval_model,
            utterances,
            self.device,
            self.data.transcripts(split),
            str(grammar) if grammar else None,
        )

    def _log_eval(self, split: str, result: EvalResult) -> dict[str, float]:
        metrics = {f"{split}/{k}": v for k, v in result.metrics.items()}
        if self.settings.best_metric in metrics:  # first, so a first start logs it before anything else
            metrics = {self.settings.best_metric: metrics[self.settings.best_metric], **metrics}
        for key, values in result.codebook.items():
            for index, value in enumerate(values):
                metrics[f"{split}/codebook_{index:02d}_{key}"] = value
        self.logger.log_metrics(metrics, self.step)
        sample_dir = self.run_dir / "samples" / f"{split}_step_{self.step:09d}"
        for path in save_samples(result.samples, self.codec.sample_rate, sample_dir):
            self.logger.log_artifact(path, f"samples/{split}_step_{self.step:09d}")
        summary = ", ".join(
            f"{k}={v:.4g}"
            for k, v in result.metrics.items()
            if not k.endswith("_std") and not k.startswith("codebook_")
        )
        log.info("step %d %s: %s", self.step, split, summary)
        return metrics

    def _is_better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best_value is None:
            return True
        return value < self.best_value if self.settings.best_mode == "min" else value > self.best_value

    def _validate_and_track_best(self) -> None:
        self._raise_if_nonfinite(all_ranks=False)
        if not self.dist.is_main:
            return
        result = self.evaluate("valid")
        metrics = self._log_eval("valid", result)
        if self.guards is not None and self.guard_stop is None:
            self.guard_stop = self.guards.after_evaluation(self.step, result.metrics, result.codebook)
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
            self.logger.log_metrics({f"best/{k}": v for k, v in self.best_metrics.items()}, self.step)
            write_status(
                self.run_dir, best={k: self.best_metrics[k] for k in self.best_metrics if not k.endswith("_std")}
            )

    # -- the loop ----------------------------------------------------------------------------
    def _resume(self) -> None:
        """Load the newest checkpoint that loads; skipped files are logged and recorded."""
        loaded = self.checkpoints.load(map_location=self.device)
        if loaded is None:
            return
        self.load_state_dict(loaded.state)
        log.info("resumed from %s at step %d", loaded.path, self.step)
        if loaded.skipped and self.dist.is_main:
            write_status(self.run_dir, skipped_checkpoints=loaded.skipped)

    def fit(self) -> dict[str, Any]:
        """Train to ``max_steps`` (resuming if a checkpoint exists); returns the final status.

        Everything from the checkpoint load on is inside the failure handling, so any failure
        leaves ``status.json`` and the MLflow run FAILED with the reason (never RUNNING).
        """
        try:
            self._resume()
            self.cost.start(self.step)
            done = self._nothing_to_do()
            if done is not None:
                return done
            if self.dist.is_main:
                self._open_run()
                if self.step == 0 and self.settings.eval_at_start:
                    self._baseline()
                self._log_model_facts()
            self._loop()
            return self._finish()
        except GuardStopped as stopped:
            if self.dist.is_main:
                self._record_guard_stop(stopped.stop)
            return read_status(self.run_dir)
        except StopRequested:
            if self.dist.is_main:
                by_user = self.stop_signal == signal.SIGINT
                self.recorder.end(
                    "stopped" if by_user else "preempted",
                    "KILLED",
                    {"last_preemption": self.stop_reason},
                    reason=self.stop_reason,
                )
            raise
        except KeyboardInterrupt:
            if self.dist.is_main:  # a second Ctrl-C: aborted mid-step, the last checkpoint stands
                self.recorder.end("stopped", "KILLED", reason="aborted by a second Ctrl-C")
            raise
        except BaseException as error:
            if self.dist.is_main:
                self._record_failure(error)
            raise
        finally:
            self._close()

    def _close(self) -> None:
        self.evaluator.close()
        self.logger.close()
        self._record_run_id()
        if self.run_lock is not None:
            self.run_lock.release()

    def _nothing_to_do(self) -> dict[str, Any] | None:
        """The run's status when it finished at this budget, or a guardrail stopped it under the same
        guard settings; None when there is training to do."""
        status = read_status(self.run_dir)
        if status.get("state") == "finished" and self.step >= self.settings.max_steps:
            log.info("run in %s already finished at step %d; nothing to do", self.run_dir, self.step)
            return status
        if status.get("state") == "stopped_early" and status.get("guard_settings") == self.config.get("guard"):
            log.info(
                "run in %s was stopped at step %d by a guardrail (%s); nothing to do. Loosen guard.* or pick "
                "guard=off to train it on",
                self.run_dir,
                self.step,
                status.get("reason"),
            )
            return status
        return None

    def _open_run(self) -> None:
        """Open (or reopen) the tracker run and say where the run is, what scores it and how it started."""
        self.recorder.keep_reserve()
        self._start_logging()
        log.info(
            "run directory %s | %s | device %s | %s",
            self.run_dir,
            self.logger.describe(),
            self.device,
            self.cpu_budget.describe(),
        )
        write_status(self.run_dir, cpu_budget=self.cpu_budget.record())
        tags = {f"metric_package.{name}": version for name, version in self.evaluator.packages().items()}
        if self.warm_start is not None:
            start = self.warm_start
            tags["warm_start"] = f"{','.join(start['parts'])} from {start['file']} (step {start['step']})"
        skipped = read_status(self.run_dir).get("skipped_checkpoints")
        if skipped:
            tags["skipped_checkpoints"] = "; ".join(f"{k}: {v}" for k, v in skipped.items())[:5000]
        self.logger.set_tags(tags)

    def _baseline(self) -> None:
        """The untrained model on the valid split, as step 0 of the curves."""
        baseline = self.evaluate("valid")
        self._log_eval("valid", baseline)
        if self.guards is not None:
            self.guards.after_evaluation(0, baseline.metrics, baseline.codebook)

    def _record_run_id(self) -> None:
        """Once the sender has sent the run's opening, status.json names the tracker's run."""
        if not self.logger.run_id or read_status(self.run_dir).get("run_id") == self.logger.run_id:
            return
        try:
            write_status(self.run_dir, run_id=self.logger.run_id)
        except OSError as error:  # a full or read-only disk: the journal still holds the run id
            log.warning("could not write the run id to %s: %s", self.run_dir / "status.json", error)

    def _known_run_id(self) -> dict[str, Any]:
        """The tracker's run id for status.json once the sender has it (it may still be on its way)."""
        return {"run_id": self.logger.run_id} if self.logger.run_id else {}

    def _record_failure(self, error: BaseException) -> None:
        """status.json and the MLflow run say FAILED with the reason; a failure before the run was
        opened still opens it (re-using the id a previous attempt recorded) so it can say so."""
        reason = f"{type(error).__name__}: {error}"
        if not self.logger.started:
            try:
                self._start_logging()
            except Exception as tracking_error:  # never hide the original failure behind a tracking one
                log.error("could not open the run in the tracker to record its failure: %s", tracking_error)
        self.recorder.end("failed", "FAILED", {"error": reason[:5000]}, error=reason)

    def _record_guard_stop(self, stop: GuardStop) -> None:
        """A guardrail ended the run: status, tracker tag and status say which and why; the sweep goes on."""
        self.recorder.end(
            "stopped_early",
            "KILLED",
            {"guard": stop.guard, "stop_reason": stop.reason[:5000]},
            guard=stop.guard,
            reason=stop.reason,
            stopped_at_step=stop.step,
            guard_settings=self.config.get("guard"),
        )
        log.warning(
            "stopped early at step %d by guardrail %s: %s; checkpoint %s kept",
            stop.step,
            stop.guard,
            stop.reason,
            self.checkpoints.latest,
        )

    def _save_rank_quantizer_state(self) -> None:
        """Each rank's codebooks, so their agreement across ranks can be checked."""
        path = self.run_dir / "ranks" / f"rank{self.dist.rank}_quantizer.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.cpu() for k, v in self.codec.quantizer.state_dict().items()}, path)

    def _loop(self) -> None:
        s = self.settings
        if self.step >= s.max_steps:
            return
        loader = self.data.train_loader(
            s.batch_size,
            s.segment_seconds,
            s.seed,
            self.step,
            s.max_steps,
            num_workers=self.cpu_budget.workers(s.num_workers),
            pin_memory=self.device.type == "cuda",
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        window = LogWindow(self.step)
        self.codec.train()
        self.discriminator.train()
        for batch in loader:
            metrics = self.train_step(batch.to(self.device, non_blocking=True))
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
        values = window.close(s.batch_size * s.segment_seconds)
        values["train/lr_generator"] = self.gan.opt_g.param_groups[0]["lr"]
        values.update(self.cost.metrics(self.step))
        self.logger.log_metrics(values, self.step)
        if self.guards is not None and self.guard_stop is None:
            self.guard_stop = self.guards.after_log(self.step, values)
        loss_d = values.get("train/loss_discriminator")
        log.info(
            "step %d/%d (%d%%): loss_g=%.4f loss_d=%s mel=%.4f (%.1f audio-s/s) ETA %s",
            self.step,
            s.max_steps,
            100 * self.step // s.max_steps,
            values["train/loss_generator"],
            "off" if loss_d is None else f"{loss_d:.4f}",
            values["train/mel"],
            values["train/throughput_audio_seconds_per_second"],
            format_duration(window.eta(self.step, s.max_steps)),
        )
        if self.dist.is_main:  # heartbeat, cost and pace for the sweep status table
            self.recorder.heartbeat(
                step=self.step,
                cost={k.split("/", 1)[1]: v for k, v in values.items() if k.startswith("cost/")},
                **self._known_run_id(),
            )

    def _stop_if_asked(self) -> None:
        """After a step: a guardrail or a stop request on any rank ends the loop with a checkpoint."""
        if not any_rank(self.stop_requested or self.guard_stop is not None, self.dist, self.device):
            return
        self.save_checkpoint()
        if self.guard_stop is not None:
            raise GuardStopped(self.guard_stop)
        self.stop_reason = self.stop_reason or "a stop request on another rank"
        log.warning(
            "stopped at step %d after %s; checkpoint %s saved; the same command resumes",
            self.step,
            self.stop_reason,
            self.checkpoints.latest,
        )
        raise StopRequested(self.stop_reason)

    def _run_probes(self) -> dict[str, float]:
        """The token probes on the final (EMA when kept) codec, logged as ``probe/*``."""
        if self.probes is None:
            return {}
        start = time.monotonic()
        metrics = self.probes.run(self.gan.eval_model, self.data)
        self.logger.log_metrics(metrics, self.step)
        log.info(
            "token probes in %s: %s",
            format_duration(time.monotonic() - start),
            ", ".join(
                f"{k.split('/', 1)[1]}={v:.3g}" for k, v in metrics.items() if not k.startswith("probe/utterances")
            ),
        )
        return metrics

    def _finish(self) -> dict[str, Any]:
        self._raise_if_nonfinite()
        if self.dist.enabled:
            self._save_rank_quantizer_state()
        if not self.dist.is_main:
            return {"state": "finished", "step": self.step, "rank": self.dist.rank}
        self._validate_and_track_best()
        test = self.evaluate("test")
        self._log_eval("test", test)
        self.save_checkpoint()
        probes = self._run_probes()
        cost = self.cost.metrics(self.step)
        self.logger.log_metrics(cost, self.step)
        status = self.recorder.end(
            "finished",
            "FINISHED",
            step=self.step,
            cost={k.split("/", 1)[1]: v for k, v in cost.items()},
            test={k: v for k, v in test.metrics.items() if not k.endswith("_std")},
            probe=probes,
            **self._known_run_id(),
        )
        log.info("finished at step %d; run directory %s", self.step, self.run_dir)
        for line in self.logger.where_to_look():
            log.info("open next: %s", line)
        log.info("open next: listen to %s", self.run_dir / "samples")
        log.info(
            "open next: python -m codec encode IN.wav OUT.npz --checkpoint %s",
            self.checkpoints.best if self.checkpoints.best.exists() else self.checkpoints.latest,
        )
        return status
