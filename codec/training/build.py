"""``build_run``: every part of a run, built from its config in the order that keeps initial
weights a function of the seed and refuses a bad config or bad data before training.

The trainer receives a :class:`RunParts` and only trains; what the run says about itself goes
through :class:`codec.training.recorder.RunRecorder`.
"""

from __future__ import annotations

import logging
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from codec.config import ConfigError, build, build_codec, build_discriminator, build_loss, plain_dict, validate
from codec.data.split_record import read_record, write_record
from codec.discriminators import MultiDiscriminator
from codec.evaluation import Evaluator
from codec.losses import CodecLoss
from codec.losses.semantic import SemanticSupervisionError
from codec.model import Codec
from codec.probe import ProbeDataError, TokenProbes
from codec.training.checkpoint import CheckpointManager
from codec.training.cost import RunCost
from codec.training.cpu_budget import CpuBudget, apply_cpu_budget, cpu_budget
from codec.training.distributed import DistributedContext, init_distributed, launch_rank, resolve_device
from codec.training.gan_step import GANStep
from codec.training.guards import Guardrails
from codec.training.host_memory import retain_freed_host_memory
from codec.training.identity import EFFECTIVE_BATCH_KEY, run_identity
from codec.training.run_lock import RunLock
from codec.training.settings import TrainerConfigError, TrainerSettings, enabled_on
from codec.training.warm_start import WarmStartError, warm_start

log = logging.getLogger(__name__)


@dataclass
class RunParts:
    """What one run trains, evaluates and writes with."""

    config: dict[str, Any]
    settings: TrainerSettings
    identity: str
    device: torch.device
    dist: DistributedContext
    cpu_budget: CpuBudget
    codec: Codec
    discriminator: MultiDiscriminator
    loss: CodecLoss
    data: Any
    split_record: dict[str, Any]
    evaluator: Evaluator
    guards: Guardrails | None
    probes: TokenProbes | None
    warm_start: dict[str, Any] | None
    gan: GANStep
    checkpoints: CheckpointManager
    cost: RunCost
    run_lock: RunLock | None


def build_run(cfg: DictConfig, run_dir: Path) -> RunParts:
    """Lock the run directory, check the config, place the process, then build every part."""
    run_lock = lock_run_dir(run_dir)
    settings = trainer_settings(cfg)
    validate(cfg)
    check_accumulation(cfg, settings)
    seed_everything(settings)  # before any module is built, so initial weights follow trainer.seed
    device, dist, budget = place(settings)
    codec = build_codec(cfg).to(device)
    check_training_scale(codec, settings, dist)
    discriminator = build_discriminator(cfg).to(device)
    started_from = warm_start_parts(codec, discriminator, settings, run_dir)
    loss = build_loss(cfg).to(device)
    data = build(cfg.data, "data")
    data.prepare()  # missing paths and unusable folders fail here, before training
    split_record = fix_split(data, run_dir, dist)
    attach_semantic(loss, codec, data, settings.seed, device)
    evaluator: Evaluator = build(cfg.eval, "eval")
    evaluator.workers = budget.workers(evaluator.workers)
    guards, probes = optional_part(cfg, "guard"), probes_for(cfg, data)
    gan = GANStep(codec, discriminator, loss, settings, device, dist)
    check_segment(codec, gan, settings)
    config = plain_dict(cfg)
    effective_batch = settings.batch_size * settings.accumulate_steps * dist.world_size
    config[EFFECTIVE_BATCH_KEY] = effective_batch
    audio_seconds_per_step = effective_batch * settings.segment_seconds
    return RunParts(
        config, settings, run_identity(config), device, dist, budget, codec, discriminator, loss, data,
        split_record, evaluator, guards, probes, started_from, gan, checkpoint_manager(run_dir, settings),
        RunCost(device, dist.world_size, audio_seconds_per_step), run_lock,
    )  # fmt: skip


def lock_run_dir(run_dir: Path) -> RunLock | None:
    """One writer per run directory (rank 0 holds it for the whole job); a second identical
    command stops here, before it has touched status.json, MLflow or a checkpoint."""
    try:
        return RunLock(run_dir).acquire() if launch_rank() == 0 else None
    except PermissionError as error:
        raise ConfigError(
            f"{run_dir} is not writable ({error.strerror}); choose another run directory "
            "(paths.runs=... or hydra.run.dir=...) or fix its permissions"
        ) from error


def trainer_settings(cfg: DictConfig) -> TrainerSettings:
    try:
        return TrainerSettings.from_config(cfg.trainer)
    except TrainerConfigError as error:
        raise ConfigError(str(error)) from error
    except TypeError as error:
        raise ConfigError(f"invalid config 'trainer': {error}") from error


def check_accumulation(cfg: DictConfig, settings: TrainerSettings) -> None:
    """Gradient accumulation needs losses that are means over the batch; EnCodec's balancer
    normalises each backward pass's gradient by its own norm, so it is refused with it."""
    if settings.accumulate_steps > 1 and cfg.loss.get("balancer") is not None:
        raise ConfigError(
            f"trainer.accumulate_steps={settings.accumulate_steps} cannot be used with loss.balancer (it balances "
            "each backward pass on its own); use loss=encodec_fixed, or accumulate_steps=1 with a larger batch"
        )


def seed_everything(settings: TrainerSettings) -> None:
    random.seed(settings.seed)
    np.random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    if settings.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def place(settings: TrainerSettings) -> tuple[torch.device, DistributedContext, CpuBudget]:
    """The device, the process group and this process's share of the CPU."""
    device = resolve_device(settings.device)
    dist = init_distributed(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    if enabled_on(settings.retain_host_memory, device.type, auto_on="cpu"):
        retain_freed_host_memory()
    budget = cpu_budget()
    apply_cpu_budget(budget)
    return device, dist, budget


def check_training_scale(codec: Codec, settings: TrainerSettings, dist: DistributedContext) -> None:
    """Refuse, before training, a quantizer setting that cannot work at this batch."""
    frames = math.ceil(round(settings.segment_seconds * codec.sample_rate) / codec.hop_length)
    vectors = settings.batch_size * dist.world_size * frames
    try:
        codec.quantizer.check_training_scale(vectors)
    except ValueError as error:
        raise ConfigError(
            f"{error} (the batch: trainer.batch_size={settings.batch_size} x "
            f"trainer.segment_seconds={settings.segment_seconds} x {codec.frame_rate:g} frames/s x "
            f"{dist.world_size} rank(s) = {vectors} frames)"
        ) from error


def warm_start_parts(
    codec: Codec, discriminator: MultiDiscriminator, settings: TrainerSettings, run_dir: Path
) -> dict[str, Any] | None:
    """Copy ``trainer.init_parts`` from ``trainer.init_from`` (before the optimizers and the
    weight EMA are built from these modules). A run with checkpoints of its own resumes from
    them instead, so a requeued or continued run never goes back to the source weights."""
    if not settings.init_from:
        return None
    if any((Path(run_dir) / "checkpoints").glob("*.pt")):
        log.info("trainer.init_from not applied: %s has checkpoints of its own to resume from", run_dir)
        return None
    try:
        done = warm_start(codec, discriminator, settings.init_from, settings.init_parts)
    except WarmStartError as error:
        raise ConfigError(str(error)) from error
    parts = ", ".join(done["parts"])
    log.info("warm start: %s from %s (its step %d, %s weights)", parts, done["file"], done["step"], done["weights"])
    return done


def fix_split(data: Any, run_dir: Path, dist: DistributedContext) -> dict[str, Any]:
    """The split recorded at the run's first start is kept by every later start (a resume, a
    requeue, a rerun over changed data: ``codec.data.split_record`` says why and how)."""
    record = read_record(run_dir)
    if record is None:
        record = data.split_record()
        if dist.is_main:
            write_record(run_dir, record)
    else:
        for warning in data.keep_recorded_split(record):
            log.warning(warning)
    empty = [split for split in ("valid", "test") if not data.split(split)]
    if empty:
        raise ConfigError(
            f"the {' and '.join(empty)} split(s) hold no files, so the run could not be evaluated; "
            f"set data.valid_count and data.test_count to at least 1"
        )
    return record


def attach_semantic(loss: CodecLoss, codec: Codec, data: Any, seed: int, device: torch.device) -> None:
    """Give ``loss.semantic`` the training split's transcribed utterances and build its head
    (before the optimizers, which train it with the generator)."""
    if loss.semantic is None:
        return
    transcripts = data.transcripts("train")
    pairs = [(entry, transcripts[entry.name]) for entry in data.split("train") if entry.name in transcripts]
    try:
        loss.semantic.attach(codec, pairs, seed)
    except SemanticSupervisionError as error:
        raise ConfigError(str(error)) from error
    loss.semantic.to(device)
    log.info(
        "loss.semantic: CTC on %s of group %d's first %d layer(s), %d transcribed utterance(s), weight %g",
        loss.semantic.units_name, loss.semantic.group, loss.semantic.layers, len(loss.semantic.utterances),
        loss.semantic.weight,
    )  # fmt: skip


def optional_part(cfg: DictConfig, key: str) -> Any:
    """A part a config group may switch off (guard=off, probe=none): None then."""
    return build(cfg[key], key) if cfg.get(key) else None


def probes_for(cfg: DictConfig, data: Any) -> TokenProbes | None:
    """Token probes on the frozen codes once training ends, checked against the data now."""
    probes = optional_part(cfg, "probe")
    if probes is not None:
        try:
            probes.check(data)
        except ProbeDataError as error:
            raise ConfigError(str(error)) from error
    return probes


def checkpoint_manager(run_dir: Path, settings: TrainerSettings) -> CheckpointManager:
    """The checkpoint directory, checked writable now rather than at the first checkpoint."""
    directory = Path(run_dir) / "checkpoints"
    try:
        manager = CheckpointManager(directory, settings.keep_last)
        probe = directory / f".write_test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ConfigError(
            f"{directory} is not writable ({error.strerror}); choose another run directory "
            "(paths.runs=... or hydra.run.dir=...) or fix its permissions"
        ) from error
    return manager


def check_segment(codec: Codec, gan: GANStep, settings: TrainerSettings) -> None:
    """Training crops must cover two latent frames and the longest STFT window in use."""
    samples = round(settings.segment_seconds * codec.sample_rate)
    needed = max(2 * codec.hop_length, *gan.stft_windows)
    if samples < needed:
        raise ConfigError(
            f"trainer.segment_seconds={settings.segment_seconds} gives {samples} samples at {codec.sample_rate} "
            f"Hz; at least {needed} are needed (two hops of {codec.hop_length} samples and the longest STFT "
            f"window, {max(gan.stft_windows)}): raise trainer.segment_seconds to "
            f"{needed / codec.sample_rate:.3f} or more"
        )
