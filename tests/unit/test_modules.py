"""Encoder/decoder shapes, the codec's encode/decode and bitrate, and the loss functions."""

from __future__ import annotations

import pytest
import torch

from codec.discriminators import DiscriminatorOutput
from codec.losses import CodecLoss, discriminator_loss, feature_matching_loss, generator_adversarial_loss
from codec.model import Codec
from codec.modules import SEANetEncoder
from codec.quantization import GroupResidualVQ


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length", [1, 319, 320, 321, 1000, 4801])
def test_codec_output_length_equals_input_length(length: int, causal: bool) -> None:
    encoder = SEANetEncoder(channels=4, dimension=8, strides=[2, 4, 5, 8], lstm_layers=1, causal=causal)
    codec = Codec(
        encoder, GroupResidualVQ(dim=8, groups=2, layers=1, codebook_size=16, kmeans_init=False), sample_rate=16000
    ).eval()
    wav = torch.randn(2, 1, length)
    out = codec(wav)
    assert out.audio.shape == wav.shape
    frames = -(-length // 320)
    assert out.quantizer.codes.shape == (2, 2, frames)
    codes = codec.encode(wav)
    assert torch.equal(codes, out.quantizer.codes)
    assert codec.decode(codes, length=length).shape == wav.shape
    assert torch.allclose(codec.decode(codes, length=length), out.audio, atol=1e-5)


def test_causal_encoder_ignores_the_future() -> None:
    encoder = SEANetEncoder(channels=4, dimension=8, strides=[2, 2], lstm_layers=0, causal=True).eval()
    wav = torch.randn(1, 1, 64)
    changed = wav.clone()
    changed[..., 40:] = 0
    with torch.no_grad():
        a, b = encoder(wav), encoder(changed)
    assert torch.allclose(a[..., :10], b[..., :10])
    assert not torch.allclose(a, b)


def test_bitrate_and_token_rate() -> None:
    encoder = SEANetEncoder(channels=4, dimension=8, strides=[2, 4, 5, 6], lstm_layers=0)
    codec = Codec(encoder, GroupResidualVQ(dim=8, groups=2, layers=2, codebook_size=1024), sample_rate=24000)
    assert codec.frame_rate == 100.0
    assert codec.tokens_per_second() == 400.0
    assert codec.bitrate_kbps() == pytest.approx(4.0)
    assert codec.bitrate_kbps(n_layers=1) == pytest.approx(2.0)


def test_hinge_and_lsgan_losses_match_formulas() -> None:
    real = [torch.tensor([2.0, 0.5]), torch.tensor([-1.0])]
    fake = [torch.tensor([-2.0, 0.5]), torch.tensor([1.0])]
    # hinge D: mean(relu(1 - real)) + mean(relu(1 + fake)), averaged over discriminators
    expected = ((0 + 0.5) / 2 + (0 + 1.5) / 2 + 2.0 + 2.0) / 2
    assert float(discriminator_loss(real, fake, "hinge")) == pytest.approx(expected)
    assert float(generator_adversarial_loss(fake, "hinge")) == pytest.approx(((3 + 0.5) / 2 + 0) / 2)
    assert float(generator_adversarial_loss(fake, "lsgan")) == pytest.approx(((9 + 0.25) / 2 + 0) / 2)


def test_feature_matching_is_normalized_by_real_magnitude() -> None:
    real = [[torch.full((4,), 2.0), torch.full((2,), 10.0)]]
    fake = [[torch.full((4,), 1.0), torch.full((2,), 5.0)]]
    assert float(feature_matching_loss(real, fake)) == pytest.approx(0.5)
    scaled = feature_matching_loss([[100 * r for r in real[0]]], [[100 * f for f in fake[0]]])
    assert float(scaled) == pytest.approx(0.5)


def test_zero_weight_terms_are_reported_not_trained() -> None:
    loss = CodecLoss(16000, {"waveform_l1": 0.0, "mel": 1.0}, mel_windows=[64], mel_bins=[10])
    ref = torch.randn(1, 1, 800)
    est = torch.randn(1, 1, 800, requires_grad=True)
    terms = loss.generator_terms(ref, est, torch.tensor(0.0), None, None)
    assert terms["waveform_l1"] > 0
    total = loss.total(terms)
    assert float(total) == pytest.approx(float(terms["mel"]))
    outputs = [DiscriminatorOutput(torch.zeros(1, 3), [torch.ones(1, 2)])]
    with_adv = loss.generator_terms(ref, est, torch.tensor(0.0), outputs, outputs)
    assert {"adversarial", "feature"} <= set(with_adv)
    with pytest.raises(ValueError, match="every loss weight"):
        CodecLoss(16000, {"mel": 0.0}, mel_windows=[64], mel_bins=[10]).total(terms)


def test_shared_spectra_give_the_same_losses_and_gradients_as_separate_transforms() -> None:
    """One STFT bank over cat([real, fake]) serves the STFT discriminators and the mel loss;
    outputs and gradients must equal those of each consumer computing its own transform."""
    from codec.discriminators import (
        MultiBandMultiResolutionDiscriminator,
        MultiDiscriminator,
        MultiPeriodDiscriminator,
        MultiScaleSTFTDiscriminator,
    )
    from codec.spectral import detach_bank, spectrum_bank, split_bank

    torch.manual_seed(0)
    discriminator = MultiDiscriminator(
        {
            "msstft": MultiScaleSTFTDiscriminator(windows=(256, 128), filters=4),
            "mrd": MultiBandMultiResolutionDiscriminator(windows=(512,), channels=4),
            "mpd": MultiPeriodDiscriminator(periods=(2, 3), channels=(4, 8)),
        }
    )
    loss = CodecLoss(16000, {"mel": 1.0}, mel_windows=(64, 128, 512), mel_bins=(10, 20, 40))
    assert discriminator.stft_windows() == {128, 256, 512}
    real = torch.randn(2, 1, 4000)

    def run(shared: bool) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        fake = (0.5 * real).clone().requires_grad_(True)
        joint = torch.cat([real, fake])
        bank = spectrum_bank(joint, discriminator.stft_windows() | set(loss.mel.windows)) if shared else None
        outputs = discriminator(joint, bank)
        mel = loss.mel(real, fake, *(split_bank(bank, 2) if shared else (None, None)))
        detached = discriminator(joint.detach(), detach_bank(bank) if shared else None)
        sum(o.logits.mean() for o in detached).backward(retain_graph=True)
        assert fake.grad is None  # the discriminator step's pass reaches no generator input
        (mel + sum(o.logits.mean() for o in outputs)).backward()
        return [o.logits for o in outputs], mel, fake.grad

    own_logits, own_mel, own_grad = run(shared=False)
    shared_logits, shared_mel, shared_grad = run(shared=True)
    assert len(own_logits) == len(discriminator.names()) == 5
    for a, b in zip(own_logits, shared_logits):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(own_mel, shared_mel, atol=1e-6)
    assert own_grad.abs().sum() > 0
    assert torch.allclose(own_grad, shared_grad, atol=1e-6)


def test_detached_spectra_carry_no_gradient_to_the_generator() -> None:
    from codec.spectral import detach_bank, spectrum_bank

    fake = torch.randn(1, 1, 2000, requires_grad=True)
    bank = spectrum_bank(fake, (128, 256))
    assert all(spec.requires_grad for spec in bank.values())
    assert not any(spec.requires_grad for spec in detach_bank(bank).values())
    assert sorted(bank) == [128, 256] and bank[256].shape == (1, 129, 2000 // 64 + 1)


def test_discriminators_do_not_run_before_their_start_step(tmp_path) -> None:
    """Before trainer.discriminator_start_step: no discriminator update and no adversarial term;
    from it on, both (with a warm-up that ends at the same step)."""
    from codec.config import compose_config
    from codec.tracking import NullLogger
    from codec.training.trainer import Trainer

    cfg = compose_config(
        [
            "experiment=smoke",
            "trainer.discriminator_start_step=2",
            "trainer.discriminator_warmup_steps=0",
            f"paths.cache={tmp_path / 'cache'}",
            "logger=none",
            "trainer.eval_at_start=false",
        ]
    )
    trainer = Trainer(cfg, tmp_path / "run", logger=NullLogger())
    batch = torch.randn(2, 1, 4000) * 0.1
    before = [p.detach().clone() for p in trainer.discriminator.parameters()]
    for step in (0, 1):
        metrics = trainer.gan.train_step(batch, step)
        assert "train/loss_discriminator" not in metrics and float(metrics.get("train/adversarial", 0.0)) == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.discriminator.parameters()))
    metrics = trainer.gan.train_step(batch, 2)
    assert "train/loss_discriminator" in metrics and float(metrics.get("train/adversarial", 0.0)) != 0.0
    assert not all(torch.equal(a, b) for a, b in zip(before, trainer.discriminator.parameters()))


def test_step_speedups_keep_every_loss_and_update(tmp_path) -> None:
    """The CPU speed-ups of the training step change no number beyond float rounding: real audio
    through the generator's discriminator pass without autograd, in-place activations in the
    discriminators, and the retained host allocator, against the step as it ran before them
    (one batched pass with autograd, out-of-place activations, default allocator), over three
    steps of every discriminator from the same weights and batches."""
    from torch import nn

    from codec.config import compose_config
    from codec.tracking import NullLogger
    from codec.training.trainer import Trainer

    def trainer(name: str, optimized: bool) -> Trainer:
        overrides = [
            "experiment=smoke",
            "discriminator=[msstft,mpd,msd,mrd]",
            "discriminator.mrd.channels=4",
            "discriminator.msd.channels=[4,8,8,8,8,8,8]",
            "discriminator.mpd.channels=[4,8,8,8,8]",
            "trainer.discriminator_warmup_steps=0",
            f"paths.cache={tmp_path / 'cache'}",
            "logger=none",
            f"trainer.real_features_without_grad={optimized}",
            f"trainer.retain_host_memory={optimized}",
        ]
        built = Trainer(compose_config(overrides), tmp_path / name, logger=NullLogger())
        for module in built.discriminator.modules():
            if isinstance(module, nn.LeakyReLU):
                assert module.inplace  # the default now
                module.inplace = optimized
        return built

    before, after = trainer("before", optimized=False), trainer("after", optimized=True)
    assert after.gan.settings.real_features_without_grad and not before.gan.settings.real_features_without_grad
    generator = torch.Generator().manual_seed(0)
    for step in range(3):
        batch = 0.1 * torch.randn(2, 1, 4000, generator=generator)
        torch.manual_seed(step)  # the same dead-code draws on both sides
        old = before.gan.train_step(batch, step)
        torch.manual_seed(step)
        new = after.gan.train_step(batch, step)
        assert old.keys() == new.keys() and "train/feature" in new and "train/loss_discriminator" in new
        for key in old:
            assert torch.allclose(old[key], new[key], rtol=1e-5, atol=1e-6), (step, key, old[key], new[key])
        if step:
            continue
        # from the same weights, the same gradients (after it Adam magnifies rounding in near-zero ones)
        for model in ("codec", "discriminator"):
            for (name, a), b in zip(getattr(before, model).named_parameters(), getattr(after, model).parameters()):
                assert a.grad is not None and torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6), (step, model, name)


def test_cpu_bf16_discriminators_run_only_the_discriminators_in_bf16(tmp_path) -> None:
    """``trainer.cpu_bf16_discriminators``: every discriminator conv runs in bf16 on CPU, while
    every generator conv, the mel loss and the quantizer stay float32 (bit-identical to the fp32
    step); the discriminators' losses move only by bf16 rounding. Off by default."""
    from torch import nn

    from codec.config import compose_config
    from codec.tracking import NullLogger
    from codec.training.trainer import Trainer

    def trainer(name: str, bf16: bool | None) -> Trainer:
        overrides = [
            "experiment=smoke",
            "discriminator=[msstft,mpd,msd]",
            "discriminator.msd.channels=[4,8,8,8,8,8,8]",
            "discriminator.mpd.channels=[4,8,8,8,8]",
            "trainer.discriminator_warmup_steps=0",
            f"paths.cache={tmp_path / 'cache'}",
            "logger=none",
        ]
        if bf16 is not None:
            overrides.append(f"trainer.cpu_bf16_discriminators={bf16}")
        return Trainer(compose_config(overrides), tmp_path / name, logger=NullLogger())

    def conv_dtypes(module: nn.Module) -> tuple[list[torch.dtype], list]:
        seen: list[torch.dtype] = []
        hooks = [
            m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
            for m in module.modules()
            if isinstance(m, (nn.Conv1d, nn.Conv2d))
        ]
        return seen, hooks

    default, fp32, bf16 = trainer("default", None), trainer("fp32", False), trainer("bf16", True)
    assert not default.gan.discriminator_autocast_enabled and not fp32.gan.discriminator_autocast_enabled
    assert bf16.gan.discriminator_autocast_enabled and not bf16.gan.autocast_enabled
    batch = 0.1 * torch.randn(2, 1, 4000, generator=torch.Generator().manual_seed(0))
    results = {}
    for label, built in (("fp32", fp32), ("bf16", bf16)):
        disc_dtypes, disc_hooks = conv_dtypes(built.discriminator)
        codec_dtypes, codec_hooks = conv_dtypes(built.codec)
        torch.manual_seed(0)
        results[label] = built.gan.train_step(batch, 0)
        for hook in disc_hooks + codec_hooks:
            hook.remove()
        assert disc_dtypes and set(disc_dtypes) == {torch.bfloat16 if label == "bf16" else torch.float32}, label
        assert codec_dtypes and set(codec_dtypes) == {torch.float32}, label
    old, new = results["fp32"], results["bf16"]
    for key in ("train/mel", "train/commitment"):
        assert torch.equal(old[key], new[key]), key
    for key in ("train/loss_discriminator", "train/adversarial", "train/feature"):
        assert torch.isfinite(new[key]) and torch.allclose(old[key], new[key], rtol=5e-2, atol=1e-3), (
            key,
            old[key],
            new[key],
        )
