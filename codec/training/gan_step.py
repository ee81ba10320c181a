"""The adversarial update of one batch, and the state it needs across steps.

This module owns optimizers, schedulers, autocast, the DDP/compile wrapping, the weight EMA and
the device-side non-finite flag; the loop (:mod:`codec.training.trainer`) owns everything about
*when* (resume, cadence, checkpoints, evaluation). The same split as AudioCraft's solver base
vs compression solver.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from hydra.utils import instantiate

from codec.discriminators import DiscriminatorOutput, MultiDiscriminator
from codec.losses import CodecLoss
from codec.model import Codec
from codec.quantization.base import QuantizedResult
from codec.quantization.distributed import all_reduce_mean_
from codec.spectral import SpectrumBank, detach_bank, spectrum_bank, split_bank
from codec.training.distributed import DistributedContext
from codec.training.settings import TrainerSettings, adversarial_from, enabled_on
from codec.training.timing import NO_TIMING, StepPhase

log = logging.getLogger(__name__)


def split_outputs(
    outputs: list[DiscriminatorOutput], batch: int
) -> tuple[list[DiscriminatorOutput], list[DiscriminatorOutput]]:
    """Split outputs of one pass over ``cat([real, fake])`` into real and fake halves."""
    real, fake = [], []
    for logits, features in outputs:
        real.append(DiscriminatorOutput(logits[:batch], [f[:batch] for f in features]))
        fake.append(DiscriminatorOutput(logits[batch:], [f[batch:] for f in features]))
    return real, fake


def as_float(outputs: list[DiscriminatorOutput], with_features: bool = True) -> list[DiscriminatorOutput]:
    """Discriminator outputs in fp32 for the losses (they may come out of bf16 autocast)."""
    return [
        DiscriminatorOutput(o.logits.float(), [f.float() for f in o.features] if with_features else []) for o in outputs
    ]


def log_cpu_bf16_discriminators() -> None:
    """Say that the discriminators run in bf16 on CPU, and warn where the CPU has no bf16 units
    (there autocast emulates bf16 and is slower than float32)."""
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        log.info(
            "trainer.cpu_bf16_discriminators: the discriminators run under bf16 autocast on CPU; "
            "the generator, quantizer, STFTs and losses stay float32"
        )
    else:
        log.warning(
            "trainer.cpu_bf16_discriminators is on, but this CPU has no native bf16 (AVX512-BF16/AMX): "
            "the discriminators will run slower than in float32; set it false here"
        )


def codebook_metrics(stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-codebook statistics as step metrics: their mean, and the max of the replaced fraction."""
    metrics = {}
    for key, values in stats.items():
        metrics[f"train/codebook_{key}_mean"] = values.float().mean()
        if key == "replaced_fraction":
            metrics[f"train/codebook_{key}_max"] = values.float().max()
    return metrics


class GANStep:
    """One discriminator update then one generator update per batch."""

    def __init__(
        self,
        codec: Codec,
        discriminator: MultiDiscriminator,
        loss: CodecLoss,
        settings: TrainerSettings,
        device: torch.device,
        dist: DistributedContext,
    ) -> None:
        self.codec = codec
        self.discriminator = discriminator
        self.loss = loss
        self.settings = settings
        self.device = device
        s = settings
        self.rank = dist.rank
        # The generator's optimizer also trains the semantic loss's head, when there is one.
        self.semantic_head = list(loss.semantic.parameters()) if loss.semantic is not None else []
        self.generator_parameters = [*codec.parameters(), *self.semantic_head]
        self.opt_g = self._optimizer(s.generator_optimizer, self.generator_parameters)
        self.opt_d = self._optimizer(s.discriminator_optimizer, discriminator.parameters())
        self.sched_g = instantiate(s.scheduler)(self.opt_g) if s.scheduler else None
        self.sched_d = instantiate(s.scheduler)(self.opt_d) if s.scheduler else None
        self.ema_codec = copy.deepcopy(codec).eval() if s.ema_decay else None
        if self.ema_codec is not None:
            self.ema_codec.requires_grad_(False)
        self.autocast_enabled = s.bf16 and device.type == "cuda"
        self.discriminator_autocast_enabled = self.autocast_enabled or (
            s.cpu_bf16_discriminators and device.type == "cpu"
        )
        if self.discriminator_autocast_enabled and device.type == "cpu":
            log_cpu_bf16_discriminators()
        self.stft_windows = sorted(discriminator.stft_windows() | set(loss.mel.windows))
        self.first_nonfinite_step: torch.Tensor | None = None

        # Plain modules, DDP wrappers or compiled callables: each is only ever called.
        self.codec_forward: Callable[..., Any] = codec
        self.discriminator_forward: Callable[..., Any] = discriminator
        self.discriminator_generator_pass: Callable[..., Any] = discriminator
        self._wrap(dist)

    def _wrap(self, dist: DistributedContext) -> None:
        """DDP across ranks, then torch.compile where ``trainer.compile`` asks for it."""
        codec, discriminator, device, s = self.codec, self.discriminator, self.device, self.settings
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            # EMA buffers are reduced inside the quantizer, so DDP need not broadcast buffers.
            self.codec_forward = DDP(
                codec,
                device_ids=ids,
                broadcast_buffers=False,
                find_unused_parameters=codec.quantizer.skips_codebooks_in_training,
            )
            self.discriminator_forward = DDP(discriminator, device_ids=ids, broadcast_buffers=False)
        self.compile_enabled = enabled_on(s.compile, device.type)
        if self.compile_enabled:
            log.info("torch.compile is on (trainer.compile=%s): the first steps include compilation", s.compile)
            self.codec_forward = torch.compile(self.codec_forward)
            self.discriminator_forward = torch.compile(self.discriminator_forward)
            self.discriminator_generator_pass = (
                torch.compile(discriminator) if dist.enabled else self.discriminator_forward
            )

    def _optimizer(self, node: dict, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """The configured optimizer; Adam/AdamW get the fused kernel when ``trainer.fused_optimizer``
        allows it (``auto``: on CUDA)."""
        factory = instantiate(node)
        use_fused = enabled_on(self.settings.fused_optimizer, self.device.type)
        if use_fused and str(node.get("_target_", "")).endswith(("Adam", "AdamW")):
            return factory(parameters, fused=True)
        return factory(parameters)

    @property
    def eval_model(self) -> Codec:
        """The weights to evaluate and export: the EMA copy when kept, else the live codec."""
        return self.ema_codec if self.ema_codec is not None else self.codec

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict() if self.sched_g else None,
            "sched_d": self.sched_d.state_dict() if self.sched_d else None,
            "ema_codec": self.ema_codec.state_dict() if self.ema_codec is not None else None,
            "balancer": self.loss.balancer.state_dict() if self.loss.balancer is not None else None,
            "semantic": self.loss.semantic.state_dict() if self.loss.semantic is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if self.sched_g and self.sched_d and state.get("sched_g"):
            self.sched_g.load_state_dict(state["sched_g"])
            self.sched_d.load_state_dict(state["sched_d"])
        if self.ema_codec is not None and state.get("ema_codec"):
            self.ema_codec.load_state_dict(state["ema_codec"])
        if self.loss.balancer is not None and state.get("balancer") is not None:
            self.loss.balancer.load_state_dict(state["balancer"])
        if self.loss.semantic is not None and state.get("semantic") is not None:
            # Checkpoints from before the entropy gate lack its latch: they keep the configured start.
            latch = {"_extra_state": self.loss.semantic.get_extra_state()}
            self.loss.semantic.load_state_dict({**latch, **state["semantic"]})

    # -- one step --------------------------------------------------------------------------------
    def _autocast(self, enabled: bool | None = None):
        """bf16 autocast: the generator's switch by default, ``enabled`` for the discriminators'."""
        enabled = self.autocast_enabled if enabled is None else enabled
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _clip(self, parameters) -> torch.Tensor:
        max_norm = self.settings.grad_clip if self.settings.grad_clip else float("inf")
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)

    def train_step(self, batch: torch.Tensor, step: int, timer=NO_TIMING) -> dict[str, torch.Tensor]:
        """One discriminator update then one generator update on ``batch`` [B, 1, T] at ``step``
        (steps done before this one). Returns device tensors; nothing here syncs with the host.

        Before ``discriminator_start_step`` the discriminators are not run at all (reconstruction
        only, at the generator's cost); adversarial terms start at :func:`adversarial_from`.

        Real and fake audio go through the discriminators' update in one batched pass, and each
        STFT window is computed once over both and shared by the discriminators and the mel loss.
        Micro-batches (``trainer.accumulate_steps``) go to :meth:`accumulated_step`.
        """
        size = batch.shape[0]
        train_discriminator = step >= self.settings.discriminator_start_step
        adversarial = step >= adversarial_from(self.settings)
        with timer.phase(StepPhase.GENERATOR_FORWARD):
            with self._autocast():
                out = self.codec_forward(batch)
            fake = out.audio.float()
            joint = torch.cat([batch, fake])
            spectra = spectrum_bank(joint, self.stft_windows)

        discriminator_metrics = (
            self._discriminator_update(joint, spectra, size, step, timer) if train_discriminator else {}
        )

        with timer.phase(StepPhase.GENERATOR_FORWARD):
            terms = self._generator_terms(batch, fake, joint, spectra, out.quantizer, adversarial, step, step)
            loss_g = self.loss.total(terms)
            self.track_finite({"generator": loss_g, **terms}, step)
        with timer.phase(StepPhase.GENERATOR_BACKWARD):
            self.opt_g.zero_grad(set_to_none=True)
            balancer_shares = self.loss.backward(terms, fake)
            self._sync_semantic_head()
            grad_norm_g = self._clip(self.generator_parameters)
        with timer.phase(StepPhase.OPTIMIZER):
            self.opt_g.step()
            self._after_update(train_discriminator)

        metrics = {f"train/{k}": v.detach() for k, v in terms.items()}
        metrics.update(
            {
                "train/loss_generator": loss_g.detach(),
                "train/grad_norm_generator": grad_norm_g.detach(),
                "train/commitment": out.quantizer.losses["commitment"].detach(),
                **{f"train/{k}": v.detach() for k, v in balancer_shares.items()},
                **discriminator_metrics,
            }
        )
        return {**metrics, **codebook_metrics(out.quantizer.stats)}

    def accumulated_step(self, micro: list[torch.Tensor], step: int, timer=NO_TIMING) -> dict[str, torch.Tensor]:
        """One update from ``k`` micro-batches, each loss divided by ``k``: both models' gradients
        are those of the whole batch. The generator and discriminator pass once per micro-batch,
        so the generator's adversarial terms see the discriminator as it was at the start of the
        step (with one batch it is updated first); under DDP only the last micro-batch syncs."""
        count, train_discriminator = len(micro), step >= self.settings.discriminator_start_step
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_d.zero_grad(set_to_none=True)
        logged: list[dict[str, torch.Tensor]] = []
        for index, batch in enumerate(micro):
            with self._unsynced(index < count - 1):
                logged.append(self._micro_step(batch, step, index, count, train_discriminator))
        with timer.phase(StepPhase.OPTIMIZER):
            metrics = {key: torch.stack([m[key] for m in logged]).mean() for key in logged[0]}
            if train_discriminator:
                metrics["train/grad_norm_discriminator"] = self._clip(self.discriminator.parameters()).detach()
                self.opt_d.step()
            self._sync_semantic_head()
            metrics["train/grad_norm_generator"] = self._clip(self.generator_parameters).detach()
            self.opt_g.step()
            self._after_update(train_discriminator)
        return metrics

    def _after_update(self, train_discriminator: bool) -> None:
        """What follows each optimizer update: the schedulers (the discriminator's only while it
        trains) and the generator's weight EMA."""
        for scheduler in (self.sched_g, self.sched_d if train_discriminator else None):
            if scheduler is not None:
                scheduler.step()
        self._update_ema()

    def _micro_step(
        self, batch: torch.Tensor, step: int, index: int, count: int, train_discriminator: bool
    ) -> dict[str, torch.Tensor]:
        """Forward and backward of one micro-batch (losses / ``count``); returns its metrics."""
        with self._autocast():
            out = self.codec_forward(batch)
        fake = out.audio.float()
        joint = torch.cat([batch, fake])
        spectra = spectrum_bank(joint, self.stft_windows)
        metrics: dict[str, torch.Tensor] = {}
        if train_discriminator:
            self.discriminator.requires_grad_(True)
            with self._autocast(self.discriminator_autocast_enabled):
                real_d, fake_d = split_outputs(
                    self.discriminator_forward(joint.detach(), detach_bank(spectra)), batch.shape[0]
                )
            loss_d = self.loss.discriminator(as_float(real_d, False), as_float(fake_d, False))
            self.track_finite({"discriminator": loss_d}, step)
            (loss_d / count).backward()
            metrics["train/loss_discriminator"] = loss_d.detach()
        adversarial = step >= adversarial_from(self.settings)
        terms = self._generator_terms(
            batch, fake, joint, spectra, out.quantizer, adversarial, step, step * count + index
        )
        loss_g = self.loss.total(terms)
        self.track_finite({"generator": loss_g, **terms}, step)
        (loss_g / count).backward()
        metrics.update({f"train/{k}": v.detach() for k, v in terms.items()})
        metrics["train/loss_generator"] = loss_g.detach()
        metrics["train/commitment"] = out.quantizer.losses["commitment"].detach()
        return {**metrics, **codebook_metrics(out.quantizer.stats)}

    def _unsynced(self, skip: bool) -> Any:
        """DDP's ``no_sync`` on both models while ``skip`` (gradients stay local until the last
        micro-batch); a no-op in one process."""
        stack = contextlib.ExitStack()
        if skip:
            for model in (self.codec_forward, self.discriminator_forward):
                no_sync = getattr(model, "no_sync", None)
                if no_sync is not None:
                    stack.enter_context(no_sync())
        return stack

    def _gate_semantic(self, step: int, stats: dict[str, torch.Tensor]) -> None:
        """Let ``loss.semantic``'s entropy gate see this step's codebook entropy, averaged over
        ranks so every rank starts the term at the same step. Only while the gate waits: then it
        reads one number to the host per step."""
        semantic = self.loss.semantic
        if semantic is None or not semantic.waiting():
            return
        if "entropy_bits" not in stats:
            raise ValueError(
                f"loss.semantic.start_entropy_bits needs codebook entropy; the quantizer gives {sorted(stats)}"
            )
        entropy = stats["entropy_bits"].detach().float().mean().clone()
        all_reduce_mean_(entropy)
        semantic.observe(step, float(entropy))

    def _sync_semantic_head(self) -> None:
        """The semantic head lives outside DDP: its gradients are averaged here, as DDP does the codec's."""
        for parameter in self.semantic_head:
            if parameter.grad is not None:
                all_reduce_mean_(parameter.grad)

    def _generator_terms(
        self,
        batch: torch.Tensor,
        fake: torch.Tensor,
        joint: torch.Tensor,
        spectra: Any,
        quantized: QuantizedResult,
        adversarial: bool,
        step: int,
        semantic_draw: int,
    ) -> dict[str, torch.Tensor]:
        """The generator's loss terms; the discriminators (frozen) judge the fake only from
        ``adversarial_from`` on; ``loss.semantic`` (ramped by ``step``) draws the utterances of
        ``semantic_draw`` (one draw per micro-batch)."""
        real_g = fake_g = None
        real_spectra, fake_spectra = split_bank(spectra, batch.shape[0])
        if adversarial:
            self.discriminator.requires_grad_(False)
            with self._autocast(self.discriminator_autocast_enabled):
                real_g, fake_g = self._generator_pass(batch, fake, joint, spectra, real_spectra, fake_spectra)
            real_g, fake_g = as_float(real_g), as_float(fake_g)
        terms = self.loss.generator_terms(
            batch, fake, quantized.losses["total"], real_g, fake_g, real_spectra, fake_spectra
        )
        self._gate_semantic(step, quantized.stats)
        share = self.loss.semantic.ramp(step) if self.loss.semantic is not None else 0.0
        if self.loss.semantic is not None and share > 0:  # no CTC pass before the term starts
            terms["semantic"] = share * self.loss.semantic(self.codec, semantic_draw, self.rank)
        return terms

    def _discriminator_update(
        self, joint: torch.Tensor, spectra: Any, size: int, step: int, timer: Any
    ) -> dict[str, torch.Tensor]:
        """One discriminator update on real and fake audio in one batched pass (fake detached)."""
        with timer.phase(StepPhase.DISCRIMINATOR_FORWARD_BACKWARD):
            self.discriminator.requires_grad_(True)
            with self._autocast(self.discriminator_autocast_enabled):
                real_d, fake_d = split_outputs(self.discriminator_forward(joint.detach(), detach_bank(spectra)), size)
            loss_d = self.loss.discriminator(as_float(real_d, False), as_float(fake_d, False))
            self.track_finite({"discriminator": loss_d}, step)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            grad_norm_d = self._clip(self.discriminator.parameters())
        with timer.phase(StepPhase.OPTIMIZER):
            self.opt_d.step()
        return {"train/loss_discriminator": loss_d.detach(), "train/grad_norm_discriminator": grad_norm_d.detach()}

    def _generator_pass(
        self,
        real: torch.Tensor,
        fake: torch.Tensor,
        joint: torch.Tensor,
        spectra: SpectrumBank,
        real_spectra: SpectrumBank,
        fake_spectra: SpectrumBank,
    ) -> tuple[list[DiscriminatorOutput], list[DiscriminatorOutput]]:
        """The discriminators' verdicts on real and fake audio for the generator's losses.

        Real features are only feature-matching targets (detached there), so with
        ``trainer.real_features_without_grad`` real audio runs without autograd and the backward
        pass covers the fake half only, with the same losses (the saving is measured in
        docs/performance.md). Otherwise one batched pass over both.
        Not the DDP wrapper: D's weights are in sync across ranks and need no gradient here.
        """
        if not self.settings.real_features_without_grad:
            return split_outputs(self.discriminator_generator_pass(joint, spectra), real.shape[0])
        with torch.no_grad():
            real_outputs = self.discriminator_generator_pass(real, real_spectra)
        return real_outputs, self.discriminator_generator_pass(fake, fake_spectra)

    def track_finite(self, losses: dict[str, torch.Tensor], step: int) -> None:
        """Record, on the device and without a host sync, the first step with a non-finite loss."""
        finite = torch.stack([torch.isfinite(v.detach()).all() for v in losses.values()]).all()
        marker = torch.full((), step + 1, dtype=torch.long, device=finite.device)
        if self.first_nonfinite_step is None:
            self.first_nonfinite_step = torch.zeros((), dtype=torch.long, device=finite.device)
        self.first_nonfinite_step = torch.where(
            (self.first_nonfinite_step == 0) & ~finite, marker, self.first_nonfinite_step
        )

    def nonfinite_step(self) -> int:
        """The first step with a non-finite loss, or 0 (this syncs with the device)."""
        return 0 if self.first_nonfinite_step is None else int(self.first_nonfinite_step)

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema_codec is None:
            return
        decay = self.settings.ema_decay
        assert decay is not None  # ema_codec exists only with a decay
        for ema_p, p in zip(self.ema_codec.parameters(), self.codec.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - decay)
        for ema_b, b in zip(self.ema_codec.buffers(), self.codec.buffers()):
            ema_b.copy_(b)


def micro_batches(loader: Iterable[torch.Tensor], count: int, device: torch.device) -> Iterator[Any]:
    """The loader's batches on ``device``: one per step, or lists of ``count`` micro-batches."""
    group: list[torch.Tensor] = []
    for batch in loader:
        group.append(batch.to(device, non_blocking=True))
        if len(group) == count:
            yield group if count > 1 else group[0]
            group = []
