"""loss.semantic: the quantizer's view of one group, the step's utterances, and a CTC loss that
teaches the encoder (through that group's channels alone) to carry the transcript."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from codec.config import ConfigError, build_codec, build_discriminator, build_loss, compose_config, validate
from codec.data.espeak import EspeakSynthesizer, Voice
from codec.data.manifest import AudioEntry
from codec.losses.semantic import SemanticSupervision, SemanticSupervisionError
from codec.text import CHARACTERS
from codec.training.distributed import DistributedContext
from codec.training.gan_step import GANStep
from codec.training.settings import TrainerSettings
from tests.unit.training.test_accumulation import speech_batch

SENTENCES = ["the cat sat on the mat", "a quick brown fox", "we sing in the rain", "open the red door"]


@pytest.fixture(scope="module")
def transcribed(tmp_path_factory) -> list[tuple[AudioEntry, str]]:
    """Real speech (espeak-ng, in process) at 16 kHz with its transcripts."""
    folder = tmp_path_factory.mktemp("speech")
    synthesizer = EspeakSynthesizer()
    pairs = []
    for index, text in enumerate(SENTENCES):
        audio = synthesizer.synthesize(text, Voice("en-us", "m1" if index % 2 else "f1"))
        audio = soxr.resample(audio, synthesizer.sample_rate, 16000).astype(np.float32)
        path = folder / f"utterance_{index}.wav"
        sf.write(path, audio, 16000)
        pairs.append((AudioEntry(str(path), len(audio), 16000), text))
    return pairs


def smoke_codec(*overrides: str):
    return build_codec(compose_config(["experiment=smoke", *overrides]))


@pytest.mark.parametrize("quantizer", ["grvq_ema", "rvq", "fsq", "residual_fsq", "bsq", "simvq"])
def test_the_view_is_one_groups_output_with_gradient_to_its_channels_only(quantizer: str) -> None:
    codec = smoke_codec(f"quantizer={quantizer}", "quantizer.groups=2")
    q = codec.quantizer.train()
    before = {k: v.clone() for k, v in q.state_dict().items()}
    latent = torch.randn(2, q.dim, 12, requires_grad=True)
    view = q.semantic_view(latent, group=1, n_layers=1)
    width = q.dim // 2
    assert view.shape == (2, width, 12)
    expected = q.decode(q.encode(latent.detach(), 1))[:, width:]
    assert torch.allclose(view, expected, atol=1e-5)
    view.sum().backward()
    assert latent.grad is not None
    assert torch.all(latent.grad[:, :width] == 0) and torch.all(latent.grad[:, width:] == 1)
    after = q.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the view must not update codebook statistics"


def semantic(**overrides) -> SemanticSupervision:
    return SemanticSupervision(**{"weight": 1.0, "utterances_per_step": 2, **overrides})


def test_a_steps_utterances_are_a_function_of_seed_step_and_rank(transcribed) -> None:
    codec = smoke_codec("quantizer.groups=2")
    first, second = semantic(), semantic()
    first.attach(codec, transcribed, seed=3)
    second.attach(codec, transcribed, seed=3)
    a, b = first.batch(7, rank=0), second.batch(7, rank=0)
    assert torch.equal(a.audio, b.audio) and torch.equal(a.targets, b.targets)
    draws = {tuple(first.batch(step, rank).target_lengths.tolist()) for step in range(6) for rank in range(2)}
    assert len(draws) > 1, "steps and ranks must draw different utterances"
    assert int(a.samples.max()) == a.audio.shape[-1] and len(a.target_lengths) == 2


def test_ctc_through_one_group_teaches_the_encoder(transcribed) -> None:
    """40 updates of the semantic loss alone on 4 utterances: the CTC loss falls by more than half,
    and the encoder's weights move (the gradient reaches it through the group's channels)."""
    torch.manual_seed(0)
    codec = smoke_codec("quantizer.groups=2").train()
    loss = semantic(utterances_per_step=4)
    loss.attach(codec, transcribed, seed=0)
    encoder_before = [p.detach().clone() for p in codec.encoder.parameters()]
    optimizer = torch.optim.Adam([*codec.encoder.parameters(), *loss.parameters()], lr=1e-2)
    values = []
    for step in range(40):
        optimizer.zero_grad()
        value = loss(codec, step)
        value.backward()
        optimizer.step()
        values.append(float(value))
    assert np.mean(values[-5:]) < 0.5 * np.mean(values[:5]), values
    assert any(not torch.equal(a, b) for a, b in zip(encoder_before, codec.encoder.parameters()))


def test_phonemes_come_from_espeak_and_differ_from_characters(transcribed) -> None:
    codec = smoke_codec("quantizer.groups=2")
    characters, phonemes = semantic(), semantic(units="phonemes")
    characters.attach(codec, transcribed, seed=0)
    phonemes.attach(codec, transcribed, seed=0)
    assert characters.classes == 29
    symbols = phonemes.units.symbols  # espeak-ng's IPA: stress marks and letters English spelling lacks
    assert 10 < phonemes.classes < 80 and "ˈ" in symbols and any(s not in CHARACTERS for s in symbols)
    a, b = characters.batch(0), phonemes.batch(0)
    assert torch.equal(a.audio, b.audio) and a.targets.tolist() != b.targets.tolist()


def test_the_built_loss_carries_the_semantic_term_and_its_weight() -> None:
    cfg = compose_config(["experiment=smoke", "semantic=phonemes", "loss.semantic.weight=0.5"])
    loss = build_loss(cfg)
    assert loss.semantic is not None and loss.semantic.units_name == "phonemes"
    assert loss.weights["semantic"] == 0.5
    assert build_loss(compose_config(["experiment=smoke"])).semantic is None


def test_the_weight_ramps_from_start_step_over_warmup_steps() -> None:
    ramp = semantic(start_step=10, warmup_steps=4).ramp
    assert [ramp(step) for step in (0, 9, 10, 11, 12, 13, 14, 1000)] == [0, 0, 0.25, 0.5, 0.75, 1, 1, 1]
    assert semantic().ramp(0) == 1.0 and semantic(start_step=3).ramp(2) == 0.0 and semantic(start_step=3).ramp(3) == 1


def test_before_start_step_the_training_step_has_no_ctc_pass_and_the_head_stays(transcribed) -> None:
    step, semantic = gated_step(
        transcribed,
        "loss.semantic.start_step=2",
        "loss.semantic.warmup_steps=2",
        "loss.semantic.start_entropy_bits=null",
    )
    head = [p.detach().clone() for p in semantic.parameters()]
    batch = speech_batch(2, 4000)
    for index in range(2):
        assert "train/semantic" not in step.train_step(batch, step=index)
    assert all(torch.equal(a, b) for a, b in zip(head, semantic.parameters())), "the head trained early"
    ramped = float(step.train_step(batch, step=2)["train/semantic"])
    assert any(not torch.equal(a, b) for a, b in zip(head, semantic.parameters()))
    with torch.no_grad():
        unramped = float(semantic(step.codec, 2))  # the same draw on the codec just after the update
    assert 0.3 * unramped < ramped < 0.7 * unramped, (ramped, unramped)


def gan_step(*overrides: str, transcribed=()) -> GANStep:
    """A smoke GANStep; with ``loss.semantic`` set, its head is attached first (the optimizer takes it)."""
    cfg = compose_config(["experiment=smoke", *overrides])
    torch.manual_seed(0)
    codec, discriminator, loss = build_codec(cfg), build_discriminator(cfg), build_loss(cfg)
    if loss.semantic is not None:
        loss.semantic.attach(codec, transcribed, seed=0)
    return GANStep(codec, discriminator, loss, TrainerSettings.from_config(cfg.trainer), torch.device("cpu"),
                   DistributedContext())  # fmt: skip


def gated_step(transcribed, *overrides: str) -> tuple[GANStep, SemanticSupervision]:
    step = gan_step("semantic=characters", *overrides, transcribed=transcribed)
    assert step.loss.semantic is not None
    return step, step.loss.semantic


def test_the_entropy_gate_starts_the_term_once_the_codes_carry_enough_bits(transcribed) -> None:
    batch = speech_batch(2, 4000)
    closed, semantic = gated_step(transcribed, "loss.semantic.start_step=1", "loss.semantic.start_entropy_bits=20")
    for index in range(3):  # 20 bits per token: more than any smoke codebook can carry
        assert "train/semantic" not in closed.train_step(batch, step=index)
    baseline = gan_step()  # the same seed; its steps draw from the global RNG as the closed run's did
    for index in range(3):
        baseline.train_step(batch, step=index)
    assert int(semantic.started_at) == -1 and 0 < float(semantic.entropy_average) < 20
    for name, value in baseline.codec.state_dict().items():  # the head's seed is its own
        assert torch.equal(closed.codec.state_dict()[name], value), f"{name}: the waiting run left the baseline's path"
    opened, semantic = gated_step(transcribed, "loss.semantic.start_step=1", "loss.semantic.start_entropy_bits=0.0")
    metrics = opened.train_step(batch, step=0)
    assert "train/semantic" not in metrics and int(semantic.started_at) == -1, "start_step still comes first"
    metrics = opened.train_step(batch, step=1)
    assert "train/semantic" in metrics and float(metrics["train/codebook_entropy_bits_mean"]) >= 0
    assert int(semantic.started_at) == 1
    resumed, again = gated_step(transcribed, "loss.semantic.start_step=1", "loss.semantic.start_entropy_bits=20")
    resumed.load_state_dict(opened.state_dict())
    assert int(again.started_at) == 1 and "train/semantic" in resumed.train_step(batch, step=2), "the latch resumes"
    older = opened.state_dict()
    older["semantic"] = {k: v for k, v in older["semantic"].items() if k != "_extra_state"}
    resumed.load_state_dict(older)  # a checkpoint from before the gate


def test_settings_that_cannot_work_are_refused(transcribed, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"loss.semantic.group=2, but the quantizer has 2 group"):
        validate(compose_config(["experiment=smoke", "semantic=characters", "loss.semantic.group=2"]))
    with pytest.raises(ConfigError, match=r"loss.semantic.layers=3, but the quantizer has 2 layer"):
        validate(compose_config(["experiment=smoke", "semantic=characters", "loss.semantic.layers=3"]))
    with pytest.raises(SemanticSupervisionError, match="weight=0 must be > 0"):
        semantic(weight=0)
    with pytest.raises(SemanticSupervisionError, match="start_step=-1 and warmup_steps=0 must be >= 0"):
        semantic(start_step=-1)
    with pytest.raises(SemanticSupervisionError, match="start_entropy_bits=-1 must be >= 0 or null"):
        semantic(start_entropy_bits=-1)
    with pytest.raises(SemanticSupervisionError, match="units='words' is unknown"):
        semantic(units="words")
    with pytest.raises(SemanticSupervisionError, match="none fits"):
        semantic(max_seconds=0.1).attach(smoke_codec(), transcribed, seed=0)
    with pytest.raises(SemanticSupervisionError, match="none fits"):
        semantic().attach(smoke_codec(), [], seed=0)
