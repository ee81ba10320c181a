"""The GAN training loop: one discriminator step and one generator step per iteration.

Everything the loop needs comes from the composed config; everything it produces lands in
the run directory (checkpoints, status, samples) and in the run logger (MLflow or none).
Running it again on the same run directory resumes from ``checkpoints/latest.pt``.
"""
from __future__ import annotations

import copy
import logging
import math
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from codec.config import ConfigError, build, build_codec, build_discriminator, build_loss, validate
from codec.discriminators import DiscriminatorOutput
from codec.evaluation import EvalResult, Evaluator
from codec.spectral import detach_bank, spectrum_bank, split_bank
from codec.tracking import NullLogger, RunLogger, flatten_config
from codec.tracking.media import save_samples
from codec.training.checkpoint import CheckpointManager
from codec.training.distributed import DistributedContext, any_rank, init_distributed
from codec.training.identity import identity_diff, run_identity
from codec.training.settings import TrainerConfigError, TrainerSettings, enabled_on
from codec.training.status import read_status, write_status
from codec.training.timing import NO_TIMING

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """A NaN or infinite loss; training stops and the last good checkpoint is kept."""


class StopRequested(Exception):
    """Raised inside the loop after a preemption/time-limit signal once a checkpoint is saved."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def split_outputs(outputs: list[DiscriminatorOutput], batch: int) -> tuple[list[DiscriminatorOutput], list[DiscriminatorOutput]]:
    """Split outputs of one pass over ``cat([real, fake])`` into real and fake halves."""
    real, fake = [], []
    for logits, features in outputs:
        real.append(DiscriminatorOutput(logits[:batch], [f[:batch] for f in features]))
        fake.append(DiscriminatorOutput(logits[batch:], [f[batch:] for f in features]))
    return real, fake


def git_commit(directory: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class Trainer:
    """Builds every part from ``cfg`` and trains it in ``run_dir``."""

    def __init__(self, cfg: DictConfig, run_dir: Path, logger: RunLogger | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config = OmegaConf.to_container(cfg, resolve=True)
        try:
            self.settings = TrainerSettings.from_config(cfg.trainer)
        except TrainerConfigError as error:
            raise ConfigError(str(error)) from error
        except TypeError as error:
            raise ConfigError(f"invalid config 'trainer': {error}") from error
        validate(cfg)
        self._seed()  # before any module is built, so initial weights follow trainer.seed
        self.identity = run_identity(self.config)
        self.device = resolve_device(self.settings.device)
        self.dist: DistributedContext = init_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.stop_requested = False
        self.stop_reason = ""
        self.stop_signal: int | None = None
        self._first_nonfinite_step: torch.Tensor | None = None

        self.codec = build_codec(cfg).to(self.device)
        self.discriminator = build_discriminator(cfg).to(self.device)
        self.loss = build_loss(cfg).to(self.device)
        self.data = build(cfg.data, "data")
        self.data.prepare()  # missing paths and unusable folders fail here, before training
        self.evaluator: Evaluator = build(cfg.eval, "eval")
        if not self.dist.is_main:
            self.logger: RunLogger = NullLogger()  # only rank 0 talks to the tracker
        else:
            self.logger = logger if logger is not None else build(cfg.logger, "logger")

        s = self.settings
        self.opt_g = self._optimizer(s.generator_optimizer, self.codec.parameters())
        self.opt_d = self._optimizer(s.discriminator_optimizer, self.discriminator.parameters())
        self.sched_g = instantiate(s.scheduler)(self.opt_g) if s.scheduler else None
        self.sched_d = instantiate(s.scheduler)(self.opt_d) if s.scheduler else None
        self.ema_codec = copy.deepcopy(self.codec).eval() if s.ema_decay else None
        if self.ema_codec is not None:
            self.ema_codec.requires_grad_(False)
        self.autocast_enabled = s.bf16 and self.device.type == "cuda"
        self.stft_windows = sorted(self.discriminator.stft_windows() | set(self.loss.mel.windows))
        self.codec_forward: torch.nn.Module = self.codec
        self.discriminator_forward: torch.nn.Module = self.discriminator
        self.discriminator_generator_pass: torch.nn.Module = self.discriminator
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # Quantizer dropout leaves some codebooks unused in a step; EMA buffers are reduced
            # inside the quantizer, so DDP need not broadcast buffers.
            unused = float(cfg.quantizer.get("dropout_prob", 0.0)) > 0
            self.codec_forward = DDP(self.codec, device_ids=ids, broadcast_buffers=False, find_unused_parameters=unused)
            self.discriminator_forward = DDP(self.discriminator, device_ids=ids, broadcast_buffers=False)
        self.compile_enabled = enabled_on(s.compile, self.device.type)
        if self.compile_enabled:
            log.info("torch.compile is on (trainer.compile=%s): the first steps include compilation", s.compile)
            self.codec_forward = torch.compile(self.codec_forward)
            self.discriminator_forward = torch.compile(self.discriminator_forward)
            self.discriminator_generator_pass = (
                torch.compile(self.discriminator) if self.dist.enabled else self.discriminator_forward
            )

        self.checkpoints = CheckpointManager(self.run_dir / "checkpoints", s.keep_last)
        self.step = 0
        self.best_value: float | None = None
        self.best_metrics: dict[str, float] = {}
        self.run_id: str | None = None
        self._valid_utterances: list | None = None
        self._test_utterances: list | None = None

    def _optimizer(self, node: dict, parameters) -> torch.optim.Optimizer:
        """The configured optimizer; Adam/AdamW get the fused kernel when ``trainer.fused_optimizer``
        allows it (``auto``: on CUDA)."""
        factory = instantiate(node)
        use_fused = enabled_on(self.settings.fused_optimizer, self.device.type)
        target = str(node.get("_target_", ""))
        if use_fused and target.endswith(("Adam", "AdamW")):
            return factory(parameters, fused=True)
        return factory(parameters)

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            "step": self.step,
            "config": self.config,
            "identity": self.identity,
            "codec": self.codec.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict() if self.sched_g else None,
            "sched_d": self.sched_d.state_dict() if self.sched_d else None,
            "ema_codec": self.ema_codec.state_dict() if self.ema_codec is not None else None,
            "best_value": self.best_value,
            "best_metrics": self.best_metrics,
            "run_id": self.run_id,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("identity") != self.identity:
            changes = identity_diff(state.get("config", {}), self.config)
            raise ConfigError(
                f"{self.run_dir} holds a checkpoint of a different configuration; refusing to resume. "
                f"Changed keys: {changes[:10]}. Use another run directory (hydra.run.dir=...) to start afresh."
            )
        self.step = int(state["step"])
        self.codec.load_state_dict(state["codec"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if self.sched_g and state.get("sched_g"):
            self.sched_g.load_state_dict(state["sched_g"])
            self.sched_d.load_state_dict(state["sched_d"])
        if self.ema_codec is not None and state.get("ema_codec"):
            self.ema_codec.load_state_dict(state["ema_codec"])
        self.best_value = state.get("best_value")
        self.best_metrics = state.get("best_metrics", {})
        self.run_id = state.get("run_id")
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])

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
        status = read_status(self.run_dir)
        run_id = self.run_id or status.get("run_id")
        overrides = self._overrides()
        tags = {"identity": self.identity, "run_dir": str(self.run_dir.resolve()), "overrides": overrides,
                "git_commit": git_commit(Path(__file__).resolve().parents[2]), "name": str(self.cfg.get("name"))}
        params = flatten_config({k: v for k, v in self.config.items() if k != "hydra"})
        self.run_id = self.logger.start(run_name=f"{self.cfg.get('name')}:{overrides or 'default'}", params=params, tags=tags, run_id=run_id)
        write_status(self.run_dir, state="running", run_id=self.run_id, identity=self.identity, overrides=overrides,
                     max_steps=self.settings.max_steps, name=self.cfg.get("name"))
        if run_id is None:
            self.logger.log_metrics(self.model_facts(), 0)
            config_file = self.run_dir / "resolved_config.yaml"
            config_file.write_text(OmegaConf.to_yaml(OmegaConf.create({k: v for k, v in self.config.items() if k != "hydra"})))
            commit_file = self.run_dir / "git_commit.txt"
            commit_file.write_text(tags["git_commit"] + "\n")
            self.logger.log_artifact(config_file)
            self.logger.log_artifact(commit_file)

    def model_facts(self) -> dict[str, float]:
        """Sizes and rates of the composition, logged once so sweeps can be compared by them."""
        return {
            "model/params_generator": sum(p.numel() for p in self.codec.parameters()),
            "model/params_discriminator": sum(p.numel() for p in self.discriminator.parameters()),
            "model/bitrate_kbps": self.codec.bitrate_kbps(),
            "model/tokens_per_second": self.codec.tokens_per_second(),
            "model/frame_rate": self.codec.frame_rate,
            "model/codebooks": self.codec.num_codebooks,
        }

    def _overrides(self) -> str:
        try:
            from hydra.core.hydra_config import HydraConfig

            from codec.sweep.registry import TRACKING_OVERRIDES

            task = HydraConfig.get().overrides.task
            return ",".join(o for o in task if o.split("=", 1)[0].lstrip("+~") not in TRACKING_OVERRIDES)
        except (ValueError, ImportError):
            return ""

    # -- one iteration -----------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.autocast_enabled)

    def _clip(self, parameters) -> torch.Tensor:
        max_norm = self.settings.grad_clip if self.settings.grad_clip else float("inf")
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)

    def train_step(self, batch: torch.Tensor, timer=NO_TIMING) -> dict[str, torch.Tensor]:
        """One discriminator update then one generator update on ``batch`` [B, 1, T].

        Real and fake audio go through the discriminators in one batched pass, and each STFT
        window is computed once over both and shared by the discriminators and the mel loss.
        """
        size = batch.shape[0]
        adversarial = self.step >= self.settings.discriminator_warmup_steps
        with timer.phase("generator_forward"):
            with self._autocast():
                out = self.codec_forward(batch)
            fake = out.audio.float()
            joint = torch.cat([batch, fake])
            spectra = spectrum_bank(joint, self.stft_windows)

        with timer.phase("discriminator_forward_backward"):
            self.discriminator.requires_grad_(True)
            with self._autocast():
                real_d, fake_d = split_outputs(self.discriminator_forward(joint.detach(), detach_bank(spectra)), size)
            loss_d = self.loss.discriminator(
                [DiscriminatorOutput(o.logits.float(), []) for o in real_d], [DiscriminatorOutput(o.logits.float(), []) for o in fake_d]
            )
            self._track_finite({"discriminator": loss_d})
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            grad_norm_d = self._clip(self.discriminator.parameters())
        with timer.phase("optimizer"):
            self.opt_d.step()

        with timer.phase("generator_forward"):
            real_g = fake_g = None
            if adversarial:
                self.discriminator.requires_grad_(False)
                with self._autocast():
                    # Not the DDP wrapper: D's weights are in sync across ranks and need no gradient here.
                    real_g, fake_g = split_outputs(self.discriminator_generator_pass(joint, spectra), size)
                real_g = [DiscriminatorOutput(o.logits.float(), [f.float() for f in o.features]) for o in real_g]
                fake_g = [DiscriminatorOutput(o.logits.float(), [f.float() for f in o.features]) for o in fake_g]
            real_spectra, fake_spectra = split_bank(spectra, size)
            terms = self.loss.generator_terms(batch, fake, out.quantizer.losses["total"], real_g, fake_g, real_spectra, fake_spectra)
            loss_g = self.loss.total(terms)
            self._track_finite({"generator": loss_g, **terms})
        with timer.phase("generator_backward"):
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            grad_norm_g = self._clip(self.codec.parameters())
        with timer.phase("optimizer"):
            self.opt_g.step()
            for scheduler in (self.sched_g, self.sched_d):
                if scheduler is not None:
                    scheduler.step()
            self._update_ema()

        metrics = {f"train/{k}": v.detach() for k, v in terms.items()}
        metrics.update({
            "train/loss_generator": loss_g.detach(),
            "train/loss_discriminator": loss_d.detach(),
            "train/grad_norm_generator": grad_norm_g.detach(),
            "train/grad_norm_discriminator": grad_norm_d.detach(),
            "train/commitment": out.quantizer.losses["commitment"].detach(),
        })
        for key, values in out.quantizer.stats.items():
            metrics[f"train/codebook_{key}_mean"] = values.float().mean()
        return metrics

    def _track_finite(self, losses: dict[str, torch.Tensor]) -> None:
        """Record, on the device and without a host sync, the first step with a non-finite loss."""
        finite = torch.stack([torch.isfinite(v.detach()).all() for v in losses.values()]).all()
        step = torch.full((), self.step + 1, dtype=torch.long, device=finite.device)
        if self._first_nonfinite_step is None:
            self._first_nonfinite_step = torch.zeros((), dtype=torch.long, device=finite.device)
        self._first_nonfinite_step = torch.where((self._first_nonfinite_step == 0) & ~finite, step, self._first_nonfinite_step)

    def _raise_if_nonfinite(self, all_ranks: bool = True) -> None:
        """Checked where the loop syncs anyway and before every checkpoint, so bad weights are never saved.

        ``all_ranks=False`` checks this rank only (for calls that not every rank makes); under DDP
        a NaN on one rank reaches every rank's weights through the gradient all-reduce anyway.
        """
        first = 0 if self._first_nonfinite_step is None else int(self._first_nonfinite_step)
        if any_rank(first > 0, self.dist, self.device) if all_ranks else first > 0:
            kept = self.checkpoints.latest if self.checkpoints.latest.exists() else "none yet"
            where = f"at step {first}" if first else "on another rank"
            raise NonFiniteLossError(
                f"non-finite loss {where}; training stopped and the weights since then are discarded. "
                f"Last good checkpoint: {kept}. Lower the learning rate or check the data."
            )

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema_codec is None:
            return
        decay = self.settings.ema_decay
        for ema_p, p in zip(self.ema_codec.parameters(), self.codec.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - decay)
        for ema_b, b in zip(self.ema_codec.buffers(), self.codec.buffers()):
            ema_b.copy_(b)

    # -- evaluation --------------------------------------------------------------------------
    def evaluate(self, split: str) -> EvalResult:
        if split == "valid":
            if self._valid_utterances is None:
                self._valid_utterances = self.data.utterances("valid", self.evaluator.max_utterances, self.evaluator.max_seconds)
            utterances = self._valid_utterances
        else:
            if self._test_utterances is None:
                self._test_utterances = self.data.utterances("test", None, self.evaluator.max_seconds)
            utterances = self._test_utterances
        model = self.ema_codec if self.ema_codec is not None else self.codec
        return self.evaluator.evaluate(model, utterances, self.device)

    def _log_eval(self, split: str, result: EvalResult) -> dict[str, float]:
        metrics = {f"{split}/{k}": v for k, v in result.metrics.items()}
        for key, values in result.codebook.items():
            for index, value in enumerate(values):
                metrics[f"{split}/codebook_{index:02d}_{key}"] = value
        self.logger.log_metrics(metrics, self.step)
        sample_dir = self.run_dir / "samples" / f"{split}_step_{self.step:09d}"
        for path in save_samples(result.samples, self.codec.sample_rate, sample_dir):
            self.logger.log_artifact(path, f"samples/{split}_step_{self.step:09d}")
        summary = ", ".join(f"{k}={v:.4g}" for k, v in result.metrics.items() if not k.endswith("_std") and not k.startswith("codebook_"))
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
        metrics = self._log_eval("valid", self.evaluate("valid"))
        key = self.settings.best_metric
        if key not in metrics:
            raise ConfigError(f"trainer.best_metric={key!r} is not among the validation metrics {sorted(metrics)[:12]}...")
        if self._is_better(metrics[key]):
            self.best_value = metrics[key]
            self.best_metrics = {k.split("/", 1)[1]: v for k, v in metrics.items() if "codebook_0" not in k}
            self.best_metrics["step"] = self.step
            step_file = self.save_checkpoint()
            self.checkpoints.mark_best(step_file)
            self.logger.log_metrics({f"best/{k}": v for k, v in self.best_metrics.items()}, self.step)
            write_status(self.run_dir, best={k: self.best_metrics[k] for k in self.best_metrics if not k.endswith("_std")})

    # -- the loop ----------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to ``max_steps`` (resuming if a checkpoint exists); returns the final status."""
        state = self.checkpoints.load(map_location=self.device)
        if state is not None:
            self.load_state_dict(state)
            log.info("resumed from %s at step %d", self.checkpoints.latest, self.step)
        status = read_status(self.run_dir)
        if status.get("state") == "finished" and self.step >= self.settings.max_steps:
            log.info("run in %s already finished at step %d; nothing to do", self.run_dir, self.step)
            return status
        if self.dist.is_main:
            self._start_logging()
        try:
            if self.step == 0 and self.settings.eval_at_start and self.dist.is_main:
                self._log_eval("valid", self.evaluate("valid"))  # the untrained baseline
            self._loop()
            return self._finish()
        except StopRequested:
            if self.dist.is_main:
                write_status(self.run_dir, state="preempted", reason=self.stop_reason)
                self.logger.set_tags({"last_preemption": self.stop_reason})
                self.logger.finish("KILLED")
            raise
        except BaseException as error:
            if self.dist.is_main:
                write_status(self.run_dir, state="failed", error=f"{type(error).__name__}: {error}")
                self.logger.set_tags({"error": f"{type(error).__name__}: {error}"[:5000]})
                self.logger.finish("FAILED")
            raise
        finally:
            self.evaluator.close()

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
            s.batch_size, s.segment_seconds, s.seed, self.step, s.max_steps,
            num_workers=0 if s.deterministic else s.num_workers, pin_memory=self.device.type == "cuda",
            rank=self.dist.rank, world_size=self.dist.world_size,
        )
        window_start, window_steps = time.perf_counter(), 0
        self.codec.train()
        self.discriminator.train()
        for batch in loader:
            batch = batch.to(self.device, non_blocking=True)
            metrics = self.train_step(batch)
            self.step += 1
            window_steps += 1
            if self.step % s.log_every == 0 or self.step == s.max_steps:
                self._raise_if_nonfinite()
                elapsed = time.perf_counter() - window_start
                values = {k: float(v) for k, v in metrics.items()}
                values["train/throughput_audio_seconds_per_second"] = window_steps * s.batch_size * s.segment_seconds / max(elapsed, 1e-9)
                values["train/lr_generator"] = self.opt_g.param_groups[0]["lr"]
                self.logger.log_metrics(values, self.step)
                log.info("step %d: loss_g=%.4f loss_d=%.4f mel=%.4f (%.1f audio-s/s)", self.step, values["train/loss_generator"],
                         values["train/loss_discriminator"], values["train/mel"], values["train/throughput_audio_seconds_per_second"])
                if self.dist.is_main:
                    write_status(self.run_dir, step=self.step)  # heartbeat for the sweep status table
                window_start, window_steps = time.perf_counter(), 0
            if self.step % s.eval_every == 0 and self.step < s.max_steps:
                self._validate_and_track_best()
            if self.step % s.checkpoint_every == 0:
                self.save_checkpoint()
            if any_rank(self.stop_requested, self.dist, self.device):
                self.stop_reason = self.stop_reason or "a stop request on another rank"
                self.save_checkpoint()
                log.warning("stopping at step %d after %s; checkpoint saved", self.step, self.stop_reason)
                raise StopRequested(self.stop_reason)

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
        self.logger.log_metrics({f"best/{k}": v for k, v in self.best_metrics.items()}, self.step)
        status = write_status(self.run_dir, state="finished", step=self.step,
                              test={k: v for k, v in test.metrics.items() if not k.endswith("_std")})
        self.logger.finish("FINISHED")
        log.info("finished at step %d; run directory %s", self.step, self.run_dir)
        return status
