"""The ``trainer`` config node as a typed object; unknown keys are rejected by name."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from codec.config import plain_dict
from codec.training.warm_start import PARTS as WARM_START_PARTS


class TrainerConfigError(ValueError):
    pass


@dataclass
class TrainerSettings:
    """Every ``trainer`` key, typed. The values live in one place, ``conf/trainer/default.yaml``
    (and the presets over it): no defaults here, so the two cannot drift apart."""

    max_steps: int
    batch_size: int
    accumulate_steps: int
    segment_seconds: float
    seed: int
    log_every: int
    eval_every: int
    eval_at_start: bool
    checkpoint_every: int
    keep_last: int
    best_metric: str
    best_mode: str
    discriminator_warmup_steps: int
    discriminator_start_step: int
    grad_clip: float | None
    generator_optimizer: dict[str, Any]
    discriminator_optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    ema_decay: float | None
    device: str
    bf16: bool
    cpu_bf16_discriminators: bool
    compile: bool | str
    fused_optimizer: bool | str
    retain_host_memory: bool | str
    real_features_without_grad: bool
    num_workers: int
    deterministic: bool
    max_requeues: int
    init_from: str | None
    init_parts: list[str]

    @classmethod
    def from_config(cls, node: DictConfig | dict) -> TrainerSettings:
        values = plain_dict(node) if isinstance(node, DictConfig) else dict(node)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TrainerConfigError(f"trainer.{unknown[0]} is not a trainer setting; known settings: {sorted(known)}")
        missing = sorted(known - set(values))
        if missing:
            raise TrainerConfigError(
                f"trainer.{missing[0]} is not set; conf/trainer/default.yaml gives every trainer setting a value"
            )
        types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        settings = cls(**{name: _typed(name, types[name], value) for name, value in values.items()})
        settings.check()
        return settings

    def check(self) -> None:
        positive = ("max_steps", "batch_size", "accumulate_steps", "log_every", "eval_every", "checkpoint_every")
        for name in (*positive, "keep_last"):
            if int(getattr(self, name)) < 1:
                raise TrainerConfigError(f"trainer.{name}={getattr(self, name)} must be a positive integer")
        for name in ("discriminator_warmup_steps", "discriminator_start_step"):
            if int(getattr(self, name)) < 0:
                raise TrainerConfigError(f"trainer.{name}={getattr(self, name)} must be 0 or more")
        if self.segment_seconds <= 0:
            raise TrainerConfigError(f"trainer.segment_seconds={self.segment_seconds} must be positive")
        if self.best_mode not in ("min", "max"):
            raise TrainerConfigError(f"trainer.best_mode={self.best_mode!r} must be 'min' or 'max'")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise TrainerConfigError(f"trainer.ema_decay={self.ema_decay} must lie in (0, 1) or be null")
        for name in ("generator_optimizer", "discriminator_optimizer"):
            lr = (getattr(self, name) or {}).get("lr")
            if lr is not None and not float(lr) > 0:
                raise TrainerConfigError(f"trainer.{name}.lr={lr} must be positive")
        for name in ("fused_optimizer", "compile", "retain_host_memory"):
            if getattr(self, name) not in (True, False, "auto"):
                raise TrainerConfigError(f"trainer.{name}={getattr(self, name)!r} must be true, false or auto")
        unknown_parts = sorted(set(self.init_parts or []) - set(WARM_START_PARTS))
        if unknown_parts or not self.init_parts:
            raise TrainerConfigError(
                f"trainer.init_parts={self.init_parts} must name one or more of {list(WARM_START_PARTS)}"
            )
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise TrainerConfigError(f"trainer.device={self.device!r} must be auto, cpu, cuda or cuda:N")


def _typed(name: str, annotation: str, value: Any) -> Any:
    """``value`` as the setting's declared number type: an integral float such as ``1e3`` is an int;
    anything else that is not a number is refused naming the key and the type expected."""
    if value is None or isinstance(value, bool) or annotation not in ("int", "float", "float | None", "int | None"):
        return value
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            expected = "an integer" if annotation.startswith("int") else "a number"
            raise TrainerConfigError(f"trainer.{name}={value!r} must be {expected}") from None
    if annotation.startswith("int"):
        if not float(value).is_integer():
            raise TrainerConfigError(f"trainer.{name}={value!r} must be an integer")
        return int(value)
    return float(value)


def adversarial_from(settings: TrainerSettings) -> int:
    """The first step whose generator loss has adversarial terms: never before the discriminators train."""
    return max(int(settings.discriminator_warmup_steps), int(settings.discriminator_start_step))


def enabled_on(value: bool | str, device_type: str, auto_on: str = "cuda") -> bool:
    """A true/false/``auto`` switch resolved for a device: ``auto`` means on ``auto_on`` only."""
    return device_type == auto_on if value == "auto" else bool(value)
