"""What a run *is*: the keys that change what is trained, and the identity hash built from them.

:data:`UNTRAINED_KEYS` is the project's one list of config keys (and their sub-keys) that do
not change what is trained: where a run logs, how often it reports, how long it runs, where its
files go. It drives all three places that need it:

- the run identity (a resumed run must have the same identity as its checkpoint);
- run directory names (``conf/train.yaml`` builds them with the ``run_dir_name`` resolver);
- the overrides shown as MLflow run names and tags.

So raising ``trainer.max_steps`` continues the same run in the same directory and MLflow run,
and a different ``data.path`` is a different run with its own directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from codec.config import ConfigError, flatten

log = logging.getLogger(__name__)

UNTRAINED_KEYS = (
    # where it runs, logs and writes, and the names it goes by
    "hydra",
    "logger",
    "paths",
    "name",
    "sweep_name",
    "sweep",
    "cluster",
    "data.cache_dir",
    # how it is evaluated and reported, and when a doomed run is stopped
    "eval",
    "guard",
    "probe",
    "trainer.log_every",
    "trainer.eval_every",
    "trainer.eval_at_start",
    "trainer.best_metric",
    "trainer.best_mode",
    # how long it runs and how it is kept
    "trainer.max_steps",
    "trainer.checkpoint_every",
    "trainer.keep_last",
    "trainer.max_requeues",
    # how fast, not what (same losses within float tolerance)
    "trainer.num_workers",
    "trainer.device",
    "trainer.compile",
    "trainer.fused_optimizer",
    "trainer.retain_host_memory",
    "trainer.real_features_without_grad",
)


# Trained options added after runs were first made, each with the value that keeps the behaviour
# from before it existed. A checkpoint saved before an option existed resumes when the option sits
# at this value (the saved config lacks the key; nothing it trained differs).
ADDED_OPTION_DEFAULTS: dict[str, Any] = {
    "trainer.init_from": None,
    "trainer.init_parts": ["encoder", "decoder"],
    "trainer.cpu_bf16_discriminators": False,
    "quantizer.gradient_estimator": "ste",
    "loss.balancer": None,
    "loss.semantic": None,
}


def is_untrained_key(key: str) -> bool:
    """Whether a dotted config key (or a command-line override's key, e.g. ``+cluster`` or
    ``hydra/launcher``) is, or lies under, one of :data:`UNTRAINED_KEYS`."""
    key = key.lstrip("+~").replace("/", ".")
    return any(key == excluded or key.startswith(excluded + ".") for excluded in UNTRAINED_KEYS)


def trained_overrides(overrides: Iterable[str]) -> list[str]:
    """The command-line overrides that change what is trained, sorted as Hydra sorts them."""
    return sorted(o for o in overrides if not is_untrained_key(o.split("=", 1)[0]))


# What the identity reads through the effective batch instead: the per-rank batch and the
# accumulation. A run moved to half the GPUs with accumulate_steps doubled stays the same run.
PER_RANK_BATCH_KEYS = ("trainer.batch_size", "trainer.accumulate_steps")
EFFECTIVE_BATCH_KEY = "effective_batch_size"


def identity_items(config: Mapping[str, Any]) -> dict[str, Any]:
    """The trained keys of a config, the batch as the effective one (``effective_batch_size``,
    put there by the run; a config saved before it existed gives batch_size x accumulate_steps)."""
    items = {key: value for key, value in flatten(config).items() if not is_untrained_key(key)}
    per_rank = {key: items.pop(key, None) for key in PER_RANK_BATCH_KEYS}
    if EFFECTIVE_BATCH_KEY not in items and per_rank["trainer.batch_size"] is not None:
        accumulate = int(per_rank["trainer.accumulate_steps"] or 1)
        items[EFFECTIVE_BATCH_KEY] = int(per_rank["trainer.batch_size"]) * accumulate
    return items


def run_identity(config: Mapping[str, Any]) -> str:
    """Stable 16-hex-digit hash of the identity items of a resolved config."""
    payload = json.dumps(identity_items(config), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def identity_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The trained keys that differ between a saved config and a new one, as "key: old -> new".
    An option the saved config predates (see :data:`ADDED_OPTION_DEFAULTS`) counts only when
    the new config moves it off its former behaviour."""
    a, b = identity_items(old), identity_items(new)
    predated = {key for key in predated_options(old) if b.get(key) == ADDED_OPTION_DEFAULTS[key]}
    return [
        f"{key}: {a.get(key)!r} -> {b.get(key)!r}"
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key) and key not in predated
    ]


def predated_options(old: Mapping[str, Any]) -> list[str]:
    """The options of :data:`ADDED_OPTION_DEFAULTS` that a saved config predates (lacks)."""
    saved = identity_items(old)
    return [key for key in ADDED_OPTION_DEFAULTS if key not in saved]


def check_resumable(saved: Mapping[str, Any], config: Mapping[str, Any], identity: str, run_dir: Any) -> None:
    """Refuse (``ConfigError`` naming the changed keys) a checkpoint of another configuration;
    a checkpoint that only predates options added since resumes, saying so."""
    if saved.get("identity") == identity:
        return
    changes = identity_diff(saved.get("config", {}), config)
    if changes:
        raise ConfigError(
            f"{run_dir} holds a checkpoint of a different configuration; refusing to resume. "
            f"Changed keys: {changes[:10]}. Use another run directory (hydra.run.dir=...) to start afresh."
        )
    log.info(
        "the checkpoint predates options added since (%s); they keep its behaviour, resuming",
        ", ".join(predated_options(saved.get("config", {}))),
    )
