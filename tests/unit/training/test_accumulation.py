"""trainer.accumulate_steps: two micro-batches of B give the gradients of one batch of 2B, for
both the generator and the discriminator; the run identity follows the effective batch."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from codec.config import build_codec, build_discriminator, build_loss, compose_config
from codec.data.demo_corpus import synthesize_utterance
from codec.training.distributed import DistributedContext
from codec.training.gan_step import GANStep
from codec.training.identity import identity_diff, run_identity
from codec.training.settings import TrainerSettings


def gan_steps(*overrides: str) -> tuple[GANStep, GANStep]:
    cfg = compose_config(["experiment=smoke", "quantizer=fsq", "trainer.grad_clip=null", *overrides])
    torch.manual_seed(0)
    codec, discriminator, loss = build_codec(cfg), build_discriminator(cfg), build_loss(cfg)
    settings = TrainerSettings.from_config(cfg.trainer)
    made = []
    for _ in range(2):
        made.append(GANStep(copy.deepcopy(codec), copy.deepcopy(discriminator), copy.deepcopy(loss), settings,
                            torch.device("cpu"), DistributedContext()))  # fmt: skip
    return made[0], made[1]


def speech_batch(items: int, samples: int) -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.from_numpy(
        np.stack([synthesize_utterance(rng, samples / 16000, 16000)[:samples] for _ in range(items)])
    )[:, None].float()


def gradients(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in module.parameters() if p.grad is not None]


def test_two_micro_batches_give_the_gradients_of_the_whole_batch() -> None:
    # The discriminators train from step 0; the generator's adversarial terms start later (warm-up).
    whole, accumulated = gan_steps("trainer.discriminator_start_step=0", "trainer.discriminator_warmup_steps=100")
    batch = speech_batch(4, 4000)
    whole.train_step(batch, step=0)
    accumulated.accumulated_step([batch[:2], batch[2:]], step=0)
    for part in ("codec", "discriminator"):
        a, b = gradients(getattr(whole, part)), gradients(getattr(accumulated, part))
        assert len(a) == len(b) > 0
        for x, y in zip(a, b):
            assert torch.allclose(x, y, rtol=1e-4, atol=1e-6), f"{part}: max difference {float((x - y).abs().max())}"
    for x, y in zip(whole.codec.parameters(), accumulated.codec.parameters()):
        assert torch.allclose(x, y, atol=1e-6), "the same update follows from the same gradients"


def test_micro_batches_that_differ_change_the_gradient() -> None:
    """The check above can fail: halves swapped for other audio give other gradients."""
    whole, accumulated = gan_steps()
    batch = speech_batch(4, 4000)
    whole.train_step(batch, step=0)
    accumulated.accumulated_step([batch[:2], batch[:2].flip(-1)], step=0)
    differences = [float((x - y).abs().max()) for x, y in zip(gradients(whole.codec), gradients(accumulated.codec))]
    assert max(differences) > 1e-4


def test_the_identity_follows_the_effective_batch() -> None:
    def config(batch: int, accumulate: int, world: int) -> dict:
        return {
            "trainer": {"batch_size": batch, "accumulate_steps": accumulate},
            "effective_batch_size": batch * accumulate * world,
        }

    assert run_identity(config(16, 1, 2)) == run_identity(config(16, 2, 1)) == run_identity(config(8, 4, 1))
    assert run_identity(config(16, 1, 1)) != run_identity(config(16, 1, 2))
    saved_before_accumulation = {"trainer": {"batch_size": 16}}  # a checkpoint from before the option
    assert identity_diff(saved_before_accumulation, config(16, 1, 1)) == []
    assert identity_diff(saved_before_accumulation, config(16, 1, 2)) == ["effective_batch_size: 16 -> 32"]


def test_accumulation_with_the_balancer_is_refused() -> None:
    from codec.config import ConfigError
    from codec.training.build import check_accumulation

    cfg = compose_config(["experiment=smoke", "loss=encodec", "trainer.accumulate_steps=2"])
    with pytest.raises(ConfigError, match="accumulate_steps=2 cannot be used with loss.balancer"):
        check_accumulation(cfg, TrainerSettings.from_config(cfg.trainer))
