"""Every preset and every option of every model config group composes, builds and trains a step."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from codec.config import (
    DEVELOPMENT_PRESETS,
    MODEL_GROUPS,
    ConfigError,
    available_options,
    build_codec,
    build_discriminator,
    build_loss,
    compose_config,
    config_dir,
    plain_dict,
    reference_presets,
)
from tests.conftest import REPO_ROOT

PRESETS = reference_presets()  # every preset of conf/experiment but demo and smoke


def forward_backward(overrides: list[str], seconds: float = 0.15) -> dict[str, float]:
    """One generator and one discriminator backward pass on a short clip; returns the loss terms."""
    cfg = compose_config(overrides)
    codec = build_codec(cfg).train()
    discriminator = build_discriminator(cfg)
    loss = build_loss(cfg)
    wav = 0.1 * torch.randn(2, 1, int(seconds * codec.sample_rate))
    out = codec(wav)
    assert out.audio.shape == wav.shape
    real = discriminator(wav)
    fake = discriminator(out.audio)
    terms = loss.generator_terms(wav, out.audio, out.quantizer.losses["total"], real, fake)
    loss.total(terms).backward()
    grads = [p.grad for p in codec.encoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    d_loss = loss.discriminator(discriminator(wav), discriminator(out.audio.detach()))
    d_loss.backward()
    assert any(p.grad is not None for p in discriminator.parameters())
    assert out.quantizer.codes.shape[1] == codec.num_codebooks
    return {k: float(v.detach()) for k, v in terms.items()}


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_trains_one_step(preset: str) -> None:
    terms = forward_backward([f"experiment={preset}"])
    assert set(terms) == {"waveform_l1", "mel", "quantizer", "adversarial", "feature"}
    assert all(torch.isfinite(torch.tensor(v)) for v in terms.values())


def test_every_development_preset_exists() -> None:
    assert set(DEVELOPMENT_PRESETS) <= set(available_options("experiment")) and len(PRESETS) >= 9


MODEL_GROUP_OPTIONS = [
    (group, option)
    for group in MODEL_GROUPS
    if group != "discriminator"  # a multi-select group: tested by name below
    for option in available_options(group)
]


@pytest.mark.parametrize("group,option", MODEL_GROUP_OPTIONS)
def test_every_model_option_trains_one_step(group: str, option: str) -> None:
    overrides = [f"{group}={option}"]
    if group == "encoder":
        # Keep the DAC option small on CPU; its topology (Snake, 3 dilated units) is unchanged.
        overrides += ["encoder.channels=8", "encoder.dimension=64"]
    terms = forward_backward(overrides)
    assert all(torch.isfinite(torch.tensor(v)) for v in terms.values())


@pytest.mark.parametrize("option", available_options("discriminator"))
def test_every_discriminator_alone(option: str) -> None:
    terms = forward_backward([f"discriminator=[{option}]"])
    assert terms["adversarial"] > 0 and terms["feature"] > 0


def test_full_discriminator_mix() -> None:
    cfg = compose_config(["discriminator=[msstft,mpd,msd,mrd]"])
    discriminator = build_discriminator(cfg)
    outputs = discriminator(torch.randn(1, 1, 4000))
    assert len(outputs) == len(discriminator.names()) == 5 + 5 + 3 + 3
    for logits, features in outputs:
        assert torch.isfinite(logits).all() and len(features) >= 2


def test_groups_must_divide_latent_dim() -> None:
    cfg = compose_config(["encoder.dimension=30", "quantizer.groups=4"])
    with pytest.raises(ConfigError, match=r"quantizer\.groups=4.*encoder\.dimension=30"):
        build_codec(cfg)


def test_codebook_dim_above_group_dim_is_rejected() -> None:
    cfg = compose_config(["encoder.dimension=32", "quantizer.groups=2", "quantizer.codebook_dim=24"])
    with pytest.raises(ConfigError, match=r"quantizer\.codebook_dim=24"):
        build_codec(cfg)


def test_unknown_discriminator_is_rejected_by_name() -> None:
    with pytest.raises(ConfigError, match=r"discriminator/wavenet"):
        compose_config(["discriminator=[msstft,wavenet]"])


def test_stray_discriminator_node_is_rejected_by_key() -> None:
    cfg = compose_config(["+discriminator.wavenet.channels=4"])
    with pytest.raises(ConfigError, match=r"discriminator\.wavenet"):
        build_discriminator(cfg)


def test_constructor_errors_name_the_config_key() -> None:
    cfg = compose_config(["quantizer.rule=hebbian"])
    with pytest.raises(ConfigError, match=r"quantizer\.rule='hebbian'"):
        build_codec(cfg)
    cfg = compose_config(["encoder.activation=swish"])
    with pytest.raises(ConfigError, match=r"encoder\.activation='swish'"):
        build_codec(cfg)
    cfg = compose_config(["+loss.weights.perceptual=1.0"])
    with pytest.raises(ConfigError, match=r"loss\.weights.*perceptual"):
        build_loss(cfg)


def test_run_dir_names_stay_within_filesystem_limits() -> None:
    from codec.config import run_dir_name

    assert run_dir_name("") == "default"
    assert run_dir_name("data.path=/a/b,quantizer.groups=2") == "data.path=_a_b,quantizer.groups=2"
    long_a = ",".join(f"key{i}=value{i}" for i in range(40))
    long_b = long_a.replace("value39", "other")
    assert len(run_dir_name(long_a)) <= 200
    assert run_dir_name(long_a) != run_dir_name(long_b)
    assert run_dir_name(long_a) == run_dir_name(long_a)


def trainer_values(**changes: Any) -> dict[str, Any]:
    """``conf/trainer/default.yaml`` as composed, with ``changes``."""
    return {**plain_dict(compose_config([]).trainer), **changes}


def test_trainer_settings_reject_bad_values_by_name() -> None:
    from codec.training.settings import TrainerConfigError, TrainerSettings, enabled_on

    with pytest.raises(TrainerConfigError, match=r"trainer\.compile='sometimes' must be true, false or auto"):
        TrainerSettings.from_config(trainer_values(compile="sometimes"))
    with pytest.raises(TrainerConfigError, match=r"trainer\.batchsize is not a trainer setting"):
        TrainerSettings.from_config(trainer_values(batchsize=8))
    default = TrainerSettings.from_config(compose_config([]).trainer)
    assert default.compile == "auto" and default.fused_optimizer == "auto"
    # auto: the fast kernels on CUDA only; CPU runs stay eager unless asked
    assert enabled_on("auto", "cuda") and not enabled_on("auto", "cpu")
    assert enabled_on(True, "cpu") and not enabled_on(False, "cuda")


def test_trainer_numbers_accept_integral_floats_and_refuse_words_naming_the_key() -> None:
    """``trainer.max_steps=1e3`` reaches the trainer as a float: it is the integer 1000. A word, or a
    fraction where an integer is needed, is refused before training with the key and the type."""
    from codec.training.settings import TrainerConfigError, TrainerSettings

    settings = TrainerSettings.from_config(trainer_values(max_steps=1e3, segment_seconds="0.5", ema_decay=0.999))
    assert settings.max_steps == 1000 and isinstance(settings.max_steps, int) and settings.segment_seconds == 0.5
    with pytest.raises(TrainerConfigError, match=r"trainer\.batch_size='two' must be an integer"):
        TrainerSettings.from_config(trainer_values(batch_size="two"))
    with pytest.raises(TrainerConfigError, match=r"trainer\.max_steps=1.5 must be an integer"):
        TrainerSettings.from_config(trainer_values(max_steps=1.5))
    with pytest.raises(TrainerConfigError, match=r"trainer\.segment_seconds='long' must be a number"):
        TrainerSettings.from_config(trainer_values(segment_seconds="long"))


def test_the_trainer_schema_has_one_source_of_values() -> None:
    """Found: the dataclass defaults and conf/trainer/default.yaml disagreed (scheduler None against
    ExponentialLR, no betas). Now the dataclass only types the keys: the YAML holds every value, and
    a setting the YAML lacks is named rather than silently defaulted."""
    import dataclasses

    from codec.training.settings import TrainerConfigError, TrainerSettings

    fields = dataclasses.fields(TrainerSettings)
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING for f in fields)
    yaml_keys = set(OmegaConf.load(config_dir() / "trainer" / "default.yaml"))
    assert yaml_keys == {f.name for f in fields}
    values = trainer_values()
    del values["grad_clip"]
    with pytest.raises(TrainerConfigError, match=r"trainer\.grad_clip is not set; conf/trainer/default.yaml"):
        TrainerSettings.from_config(values)


def test_an_exception_with_an_empty_message_is_named_by_its_type() -> None:
    from codec.messages import error_summary

    assert error_summary(EOFError()) == "EOFError"
    assert error_summary(ValueError("first\nsecond"), limit=3) == "ValueError: fir"


def sweep_points(name: str) -> list[list[str]]:
    """Every override list a ready sweep definition expands to (the sweeper's cross product)."""
    from codec.sweep.plan import expand_points

    return expand_points(name)


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO_ROOT / "sweeps").glob("*.yaml")))
def test_every_ready_sweep_composes_and_builds_its_first_and_last_point(name: str) -> None:
    points = sweep_points(name)
    assert len(points) >= 2
    for overrides in (points[0], points[-1]):
        cfg = compose_config(overrides)
        assert cfg.sweep_name == name
        build_codec(cfg)


def test_demo_bitrate_ladder_builds_point_two_to_point_eight_kbps_codecs_from_the_demo() -> None:
    points = sweep_points("demo_bitrate_ladder")
    assert len(points) == 9
    built = {}
    for overrides in points:
        cfg = compose_config(overrides)
        codec = build_codec(cfg)
        built.setdefault(codec.bitrate_kbps(), set()).add(int(cfg.trainer.seed))
        assert (codec.quantizer.groups, codec.quantizer.codebook_size, cfg.trainer.max_steps) == (2, 4, 300)
        assert len(codec.quantizer.codebooks) == 2 * codec.quantizer.layers
        assert cfg.trainer.init_from == "runs/demo/default" and list(cfg.trainer.init_parts) == ["encoder", "decoder"]
    assert built == {0.2: {1, 2, 3}, 0.4: {1, 2, 3}, 0.8: {1, 2, 3}}


def test_equal_codebook_sweeps_build_the_same_budget_in_every_arrangement() -> None:
    for name, shapes in (
        ("equal_codebooks_4", {(1, 4), (2, 2), (4, 1)}),
        ("equal_codebooks_8", {(1, 8), (2, 4), (4, 2), (8, 1)}),
    ):
        points = sweep_points(name)
        assert len(points) == 3 * len(shapes)
        built: dict[tuple[int, int], set[int]] = {}
        for overrides in points:
            cfg = compose_config(overrides)
            codec = build_codec(cfg)
            q = codec.quantizer
            built.setdefault((q.groups, q.layers), set()).add(int(cfg.trainer.seed))
            assert len(q.codebooks) == q.groups * q.layers == (4 if name.endswith("4") else 8)
            assert codec.bitrate_kbps() == (2.0 if name.endswith("4") else 4.0)  # 1024 codes at 50 Hz
        assert built == {shape: {1, 2, 3} for shape in shapes}


def test_equal_bitrate_quantizers_build_nine_quantizers_at_ten_bits_per_frame() -> None:
    from codec.quantization import GroupResidualVQ
    from codec.quantization.bsq import BinarySphericalQuantizer
    from codec.quantization.fsq import FiniteScalarQuantizer

    seen = {}
    for overrides in sweep_points("equal_bitrate_quantizers"):
        cfg = compose_config(overrides)
        codec = build_codec(cfg)
        q = codec.quantizer
        assert q.bits_per_frame() == pytest.approx(10.0) and codec.bitrate_kbps() == pytest.approx(0.5)
        option = next(o.split("=", 1)[1] for o in overrides if o.startswith("quantizer="))
        if isinstance(q, FiniteScalarQuantizer):
            seen[option] = ("fsq", tuple(q.levels), q.groups, q.layers)
        elif isinstance(q, BinarySphericalQuantizer):
            seen[option] = ("bsq" if q.spherical else "lfq", q.groups, q.bits)
        else:
            assert isinstance(q, GroupResidualVQ)
            seen[option] = (q.rule, q.groups, q.layers, q.codebook_size)
    assert seen == {
        "grvq_10bit": ("ema", 2, 1, 32),
        "rvq_10bit": ("ema", 1, 2, 32),
        "single_vq_10bit": ("ema", 1, 1, 1024),
        "fsq_10bit": ("fsq", (4, 4, 4, 4, 4), 1, 1),
        "simvq": ("simvq", 1, 1, 1024),
        "residual_simvq_10bit": ("simvq", 1, 2, 32),
        "residual_fsq_10bit": ("fsq", (8, 4), 1, 2),
        "bsq": ("bsq", 1, 10),
        "lfq": ("lfq", 1, 10),
    }


def test_every_ready_sweep_has_seeds_as_an_axis() -> None:
    from omegaconf import OmegaConf

    for path in sorted((REPO_ROOT / "sweeps").glob("*.yaml")):
        params = OmegaConf.load(path).hydra.sweeper.params
        assert "trainer.seed" in params, path.name
        assert len(str(params["trainer.seed"]).split(",")) >= 3, path.name


def test_added_option_defaults_are_the_configured_defaults() -> None:
    """An option listed as added (a checkpoint older than it resumes while it sits at this value)
    must default to that value, or an old checkpoint would resume under a changed behaviour."""
    from omegaconf import OmegaConf

    from codec.training.identity import ADDED_OPTION_DEFAULTS, is_untrained_key

    cfg = compose_config([])
    for key, value in ADDED_OPTION_DEFAULTS.items():
        assert not is_untrained_key(key), key
        default = OmegaConf.select(cfg, key, default="missing")
        default = OmegaConf.to_container(default) if OmegaConf.is_config(default) else default
        assert default == value, (key, default, value)
