"""Every option of every group builds exactly what its file says, alone and under presets.

The check is on the *built* objects (conv widths and strides, LSTM layers, codebook tensors, mel
filterbanks, the discriminator set), not on the composed config: the first round's preset
silently turned ``quantizer=rvq`` into the demo's 2x2 GRVQ while the config looked right.
A key that the preset sets over the chosen option must be named in the start-up message.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from codec.config import (
    MODEL_GROUPS,
    ConfigError,
    available_options,
    build_codec,
    build_discriminator,
    build_loss,
    compose_config,
    describe_preset_overrides,
    flatten,
    option_package,
    preset_overrides_of_choices,
)
from codec.config_search import option_file
from codec.quantization.base import BaseQuantizer

# The default experiment (demo), one that sets encoder keys and one that sets quantizer keys.
PRESETS = ["demo", "hificodec_24k_240x_8cb", "encodec_24k_320x_12cb"]
CASES = [(preset, group, option) for preset in PRESETS for group in MODEL_GROUPS for option in available_options(group)]


def option_values(group: str, option: str) -> dict[str, Any]:
    """The option file's own literal values, as ``package.key`` (interpolations left out)."""
    path = option_file(group, option)
    assert path is not None, f"{group}={option} is on no config search path"
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    values: dict[str, Any] = {}
    # An option built on another of its group (defaults: [seanet, _self_]) says what that one says, then its own keys.
    # A base from another group (/codebook_rule/ema@_here_) lands in this option's package.
    for base in node.pop("defaults", []):
        if isinstance(base, str) and base != "_self_":
            base_group, base_option = (group, base) if "/" not in base else base.split("@")[0].strip("/").split("/")
            values.update({k.split(".", 1)[1]: v for k, v in option_values(base_group, base_option).items()})
    values.update(flatten(node))
    for key in [k for k, v in values.items() if v is None]:  # an option that switches a base's node off
        values = {k: v for k, v in values.items() if not k.startswith(key + ".")}
    # Discriminator files nest their node under their own name inside the multi-select group.
    prefix = "discriminator." if group == "discriminator" else option_package(group, option) + "."
    return {
        prefix + k: v
        for k, v in values.items()
        if not k.endswith("_target_") and not (isinstance(v, str) and v.startswith("${"))
    }


def conv_layers(module: nn.Module, kind: type = nn.Conv1d) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, kind)]


def observed_encoder(encoder: nn.Module) -> dict[str, Any]:
    """Facts read off the built encoder's layers."""
    convs = conv_layers(encoder)
    lstms = [m for m in encoder.modules() if isinstance(m, nn.LSTM)]
    return {
        "channels": convs[0].out_channels,
        "dimension": convs[-1].out_channels,
        "strides": [c.stride[0] for c in convs if c.stride[0] > 1],
        "lstm_layers": sum(m.num_layers for m in lstms),
        "kernel_size": convs[0].kernel_size[0],
        "last_kernel_size": convs[-1].kernel_size[0],
    }


def observed_quantizer(quantizer: BaseQuantizer) -> dict[str, Any]:
    """Facts of any quantizer through its contract alone, so a new class needs no edit here: the
    built codebooks' shapes, ``facts()``, and codes from ``encode`` that fit them."""
    shapes = quantizer.codebook_shapes()
    assert len(shapes) == quantizer.num_codebooks and len({size for size, _ in shapes}) == 1, shapes
    latent = torch.randn(2, quantizer.dim, 5)
    codes = quantizer.eval().encode(latent)
    assert codes.shape == (2, quantizer.num_codebooks, 5) and codes.dtype == torch.int64
    assert 0 <= int(codes.min()) and int(codes.max()) < shapes[0][0]
    assert quantizer.decode(codes).shape == latent.shape
    facts = quantizer.facts()
    assert facts["bits_per_frame"] == pytest.approx(len(shapes) * math.log2(shapes[0][0]))
    return {**facts, "codebooks": len(shapes), "codebook_size": shapes[0][0]}


def observed_value(built: dict[str, Any], key: str) -> Any:
    """The built model's value for a dotted config key."""
    package, _, name = key.partition(".")
    if package == "encoder":
        facts = observed_encoder(built["codec"].encoder)
        if name in facts:
            return facts[name]
        encoder = built["codec"].encoder
        return getattr(encoder, name) if hasattr(encoder, name) else getattr(encoder.settings, name)
    if package == "quantizer":
        facts = observed_quantizer(built["codec"].quantizer)
        return facts[name] if name in facts else getattr(built["codec"].quantizer, name)
    if package == "loss":
        loss = built["loss"]
        if name == "mel_windows":
            return list(loss.mel.windows)
        if name == "mel_bins":
            return [fb.n_mels for fb in loss.mel.filterbanks]
        if name.startswith("weights."):
            return loss.weights[name.split(".", 1)[1]]
        if name.startswith("balancer."):
            return getattr(loss.balancer, name.split(".", 1)[1])
        return getattr(loss, name)
    if package == "discriminator":
        disc_name, _, attribute = name.partition(".")
        discriminator = built["discriminator"].discriminators[disc_name]
        if attribute in ("windows",):
            return [sub.n_fft for sub in discriminator.subs]
        if attribute == "periods":
            return [sub.period for sub in discriminator.subs]
        if attribute == "scales":
            return len(discriminator.subs)
        return getattr(discriminator, attribute)
    raise AssertionError(f"no observer for {key}")


def same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(float(a) - float(b)) < 1e-9
    return a == b


@pytest.mark.parametrize("preset,group,option", CASES, ids=[f"{p}-{g}={o}" for p, g, o in CASES])
def test_option_builds_what_its_file_says(preset: str, group: str, option: str) -> None:
    choice = f"discriminator=[{option}]" if group == "discriminator" else f"{group}={option}"
    overrides = [f"experiment={preset}", choice]
    cfg, choices = compose_config(overrides, with_choices=True)
    shadowed = preset_overrides_of_choices(choices, overrides)
    message = "\n".join(describe_preset_overrides(preset, shadowed))
    preset_keys = [k for keys in shadowed.values() for k in keys]
    try:
        built = {"codec": build_codec(cfg), "loss": build_loss(cfg), "discriminator": build_discriminator(cfg)}
    except ConfigError as error:
        # A preset key the option does not take (e.g. quantizer.layers for FSQ): refused, and both the
        # start-up message and the error name it.
        assert preset_keys and any(k.rsplit(".", 1)[1] in str(error) for k in preset_keys), error
        assert all(k in message for k in preset_keys)
        return
    if group == "discriminator":
        assert set(built["discriminator"].discriminators) == {option}
    checked = 0
    for key, expected in option_values(group, option).items():
        if key in preset_keys:
            assert key in message, f"{preset} sets {key} over {choice} but the start-up message does not say so"
            continue
        actual = observed_value(built, key)
        assert same(actual, expected), (
            f"{choice} under experiment={preset}: {key} built as {actual!r}, file says {expected!r}"
        )
        checked += 1
    assert checked > 0


def test_quantizer_options_are_four_different_models() -> None:
    """``-m quantizer=grvq,rvq,single_vq,fsq`` under the default experiment trains four models."""
    facts = {}
    for option in ("grvq", "rvq", "single_vq", "fsq"):
        quantizer = build_codec(compose_config([f"quantizer={option}"])).quantizer
        facts[option] = (type(quantizer).__name__, quantizer.groups, quantizer.layers, quantizer.codebook_size)
    assert facts == {
        "grvq": ("GroupResidualVQ", 2, 2, 1024),
        "rvq": ("GroupResidualVQ", 1, 8, 1024),
        "single_vq": ("GroupResidualVQ", 1, 1, 4096),
        "fsq": ("FiniteScalarQuantizer", 1, 1, 1000),
    }
