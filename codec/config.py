"""Compose, validate and build codec parts from the Hydra config tree in ``conf/``.

Construction errors are re-raised as :class:`ConfigError` naming the config key, so an
impossible composition fails before any training starts.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException, InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from codec.config_search import config_dir, option_file, options
from codec.discriminators import MultiDiscriminator
from codec.losses import CodecLoss
from codec.model import Codec

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A composition that cannot work; the message names the offending config key."""


def plain_dict(node: Any) -> dict[str, Any]:
    """A config node as plain, resolved Python containers; refuses anything but a mapping."""
    value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    if not isinstance(value, dict):
        raise TypeError(f"expected a config mapping, got {type(value).__name__}")
    return {str(key): item for key, item in value.items()}


MAX_RUN_DIR_NAME = 200


def run_dir_name(overrides: str | Sequence[str]) -> str:
    """A run directory name from its overrides: readable, filesystem-safe and unique.

    Given the job's override list (``${hydra:overrides.task}``), the overrides that do not
    change what is trained (:data:`codec.training.identity.UNTRAINED_KEYS`) are left out and the
    rest joined sorted, as Hydra's ``override_dirname`` does. An empty list (plain
    ``python train.py``) gives ``default``; names longer than :data:`MAX_RUN_DIR_NAME` are cut
    and suffixed with a hash of the whole override string.
    """
    if not isinstance(overrides, str):
        from codec.training.identity import trained_overrides

        overrides = ",".join(trained_overrides(str(o) for o in overrides))
    name = overrides.replace("/", "_") or "default"
    if len(name) > MAX_RUN_DIR_NAME:
        digest = hashlib.sha1(overrides.encode()).hexdigest()[:10]
        name = f"{name[: MAX_RUN_DIR_NAME - 12]}__{digest}"
    return name


def register_resolvers() -> None:
    """Resolvers the config tree uses; safe to call repeatedly."""
    if not OmegaConf.has_resolver("run_dir_name"):
        OmegaConf.register_new_resolver("run_dir_name", run_dir_name)


def compose_config(overrides: Sequence[str] = (), config_name: str = "train", with_choices: bool = False):
    """Compose ``conf/<config_name>.yaml`` with command-line style overrides.

    With ``with_choices`` also returns the option picked in each group (Hydra's runtime choices).
    """
    register_resolvers()
    try:
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose(config_name, overrides=list(overrides), return_hydra_config=with_choices)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(f"cannot compose config with overrides {list(overrides)}: {error}") from error
    if not with_choices:
        return cfg
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


# The config groups that choose a part of the model; the others choose data, training, tracking
# and where a run goes. Tests and tools that go over "every model option" read this list.
MODEL_GROUPS = ("encoder", "quantizer", "codebook_rule", "codebook_layout", "loss", "discriminator")
# Presets for working on the project, not compositions of a published codec.
DEVELOPMENT_PRESETS = ("demo", "smoke")


def reference_presets() -> list[str]:
    """The presets that compose a published codec (every ``experiment`` but the development ones)."""
    return [name for name in available_options("experiment") if name not in DEVELOPMENT_PRESETS]


def available_options(group: str) -> list[str]:
    """The option names of a config group across the search path, e.g. the known discriminators."""
    return options(group)


def option_package(group: str, option: str) -> str:
    """Where an option's keys land: its ``# @package`` header, else the group's own name."""
    path = option_file(group, option)
    if path is not None:
        for line in path.read_text().splitlines()[:5]:
            match = re.match(r"#\s*@package\s+(\S+)", line)
            if match:
                return match.group(1)
    return group


def preset_overrides_of_choices(choices: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, list[str]]:
    """Keys the chosen preset (``experiment=``) sets inside a group whose option the user picked
    on the command line, e.g. ``{"quantizer=single_vq": ["quantizer.layers"]}``.

    Hydra applies a preset after the group options, so these keys win over the chosen option's
    file; train.py and ``codec info`` name them so that an ablation never silently changes.
    Keys the user also set explicitly on the command line are not listed (the user's value wins).
    """
    experiment = choices.get("experiment")
    preset_file = option_file("experiment", str(experiment)) if experiment else None
    if preset_file is None:
        return {}
    preset = plain_dict(OmegaConf.load(preset_file))
    preset.pop("defaults", None)
    preset_keys = list(flatten(preset))
    explicit = {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o}
    groups = {p.name for p in config_dir().iterdir() if p.is_dir()} - {"experiment", "hydra"}
    shadowed: dict[str, list[str]] = {}
    for override in overrides:
        group, _, option = override.lstrip("+~").partition("=")
        if group not in groups or not option:
            continue
        if group == "discriminator":  # multi-select: each selected name is its own node
            prefixes = [f"discriminator.{name.strip()}." for name in option.strip("[]").split(",")]
        else:
            prefixes = [option_package(group, option) + "."]
        keys = [k for k in preset_keys if k.startswith(tuple(prefixes)) and k not in explicit]
        if keys:
            shadowed[override.lstrip("+~")] = keys
    return shadowed


def describe_preset_overrides(experiment: str, shadowed: Mapping[str, list[str]]) -> list[str]:
    """One line per command-line choice whose option file a preset overrides."""
    return [
        f"experiment={experiment} sets {', '.join(keys)} over your choice {choice} "
        f"(set them on the command line to choose other values)"
        for choice, keys in shadowed.items()
    ]


_ARGUMENT_MESSAGE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)[=.]")


def build(node: Any, key: str) -> Any:
    """``hydra.utils.instantiate`` with errors that name the config key ``key``."""
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(f"config node '{key}' has no _target_ to build")
    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as error:
        cause = error.__cause__ or error
        message = str(cause.args[0]) if getattr(cause, "args", None) else str(cause)
        # Constructors phrase errors as "argument=value ..." or "argument.key ..."; prefix the node to get the full key.
        if _ARGUMENT_MESSAGE.match(message) and not message.startswith((f"{key}.", f"{key}=")):
            message = f"{key}.{message}"
        raise ConfigError(f"invalid config '{key}': {message}") from error
    except OmegaConfBaseException as error:
        raise ConfigError(f"invalid config '{key}': {error}") from error


def check_semantic_target(semantic: Any, groups: int, layers: int) -> None:
    """``loss.semantic`` must name a group and a layer count the quantizer has."""
    group, depth = int(semantic.get("group", 0)), int(semantic.get("layers", 1))
    if not 0 <= group < groups:
        raise ConfigError(f"loss.semantic.group={group}, but the quantizer has {groups} group(s) (0..{groups - 1})")
    if not 1 <= depth <= layers:
        raise ConfigError(f"loss.semantic.layers={depth}, but the quantizer has {layers} layer(s) per group")


def validate(cfg: DictConfig) -> None:
    """Cross-key checks that no single constructor can make, run before anything is built."""
    dim = int(cfg.encoder.dimension)
    groups = int(cfg.quantizer.get("groups", 1))
    if groups < 1 or dim % groups:
        raise ConfigError(
            f"quantizer.groups={groups} must divide encoder.dimension={dim} (each group gets dimension/groups channels)"
        )
    semantic = cfg.loss.get("semantic")
    if semantic is not None:
        check_semantic_target(semantic, groups, int(cfg.quantizer.get("layers", 1)))
    codebook_dim = cfg.quantizer.get("codebook_dim")
    if codebook_dim is not None and int(codebook_dim) > dim // groups:
        raise ConfigError(
            f"quantizer.codebook_dim={codebook_dim} is above the group dimension "
            f"encoder.dimension/quantizer.groups={dim // groups}"
        )
    selected_discriminators(cfg)


def selected_discriminators(cfg: DictConfig) -> dict[str, DictConfig]:
    """The discriminator nodes picked by ``discriminator=[...]``.

    A node without ``_target_`` holds settings for a known discriminator that is not selected
    (e.g. an experiment's size tweak); it is ignored with a log line. An unknown name fails.
    """
    known = available_options("discriminator")
    selected = {}
    for name, node in cfg.discriminator.items():
        if isinstance(node, DictConfig) and "_target_" in node:
            selected[name] = node
        elif name in known:
            log.info("discriminator.%s has settings but is not selected; ignoring them", name)
        else:
            raise ConfigError(
                f"discriminator.{name} is not a known discriminator (known: {known}); select discriminators with "
                "discriminator=[...]"
            )
    if not selected:
        raise ConfigError(f"discriminator must select at least one of {known}")
    return selected


def build_codec(cfg: DictConfig) -> Codec:
    validate(cfg)
    encoder = build(cfg.encoder, "encoder")
    quantizer = build(cfg.quantizer, "quantizer")
    try:
        return Codec(encoder, quantizer, sample_rate=int(cfg.sample_rate))
    except ValueError as error:
        raise ConfigError(f"invalid codec composition: {error}") from error


def build_discriminator(cfg: DictConfig) -> MultiDiscriminator:
    validate(cfg)
    return MultiDiscriminator(
        {name: build(node, f"discriminator.{name}") for name, node in selected_discriminators(cfg).items()}
    )


def build_loss(cfg: DictConfig) -> CodecLoss:
    return build(cfg.loss, "loss")


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {"a.b.c": value}; lists and scalars are leaves."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def count_parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(cfg: DictConfig) -> dict[str, Any]:
    """The facts `python -m codec info` prints: rates, codebooks, bitrate and model sizes."""
    codec = build_codec(cfg)
    discriminator = build_discriminator(cfg)
    return {
        "name": cfg.get("name"),
        "sample_rate": codec.sample_rate,
        "hop_length": codec.hop_length,
        "frame_rate": codec.frame_rate,
        **codec.quantizer.facts(),
        "bitrate_kbps": round(codec.bitrate_kbps(), 4),
        "tokens_per_second": codec.tokens_per_second(),
        "discriminators": list(selected_discriminators(cfg)),
        "params_generator": count_parameters(codec),
        "params_discriminator": count_parameters(discriminator),
    }
