"""A run's identity: a hash of its resolved config without the keys that do not change what
is trained (launcher, logging, paths, evaluation and bookkeeping intervals)."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from codec.config import flatten

IDENTITY_EXCLUDED = (
    "hydra", "logger", "paths", "eval", "name", "sweep_name", "data.cache_dir",
    "trainer.max_steps", "trainer.log_every", "trainer.eval_every", "trainer.eval_at_start", "trainer.checkpoint_every",
    "trainer.keep_last", "trainer.num_workers", "trainer.device", "trainer.max_requeues", "trainer.compile",
    "trainer.fused_optimizer",
)


def identity_items(config: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: value
        for key, value in flatten(config).items()
        if not any(key == ex or key.startswith(ex + ".") for ex in IDENTITY_EXCLUDED)
    }


def run_identity(config: Mapping[str, Any]) -> str:
    """Stable 16-hex-digit hash of the identity items of a resolved config."""
    payload = json.dumps(identity_items(config), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def identity_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    a, b = identity_items(old), identity_items(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
