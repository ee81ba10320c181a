"""Start a new run from parts of another run's checkpoint (``trainer.init_from``).

A warm start copies the weights of the named parts (``encoder``, ``decoder``, ``quantizer``,
``discriminator``) and nothing else: the step counter, optimizers, schedulers and the best
value start afresh, because this is a new run, not a resume. Parts left out are built as their
config says; a quantizer left out initialises its codebooks from the first batch of the copied
encoder's latents (k-means), which is how a bitrate ladder can share one trained encoder and
decoder and differ only in its quantizer.

Its own checkpoint always wins: a run that has one resumes from it and the warm start is not
applied again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from codec.training.checkpoint import safe_load

PARTS = ("encoder", "quantizer", "decoder", "discriminator")


class WarmStartError(ValueError):
    """The warm-start checkpoint is missing, unreadable or does not fit the parts asked for."""


def checkpoint_file(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (its ``checkpoints/best.pt``, else ``latest.pt``)."""
    path = Path(path).expanduser()
    if path.is_dir():
        for name in ("best.pt", "latest.pt"):
            candidate = path / "checkpoints" / name
            if candidate.is_file():
                return candidate
        raise WarmStartError(
            f"trainer.init_from={str(path)!r} is a directory with no checkpoints/best.pt or checkpoints/latest.pt"
        )
    if not path.is_file():
        raise WarmStartError(
            f"trainer.init_from={str(path)!r} does not exist: train that run first (the demo bitrate ladder starts "
            "from `python train.py`'s "
            "runs/demo/default), or give another checkpoint file or run directory"
        )
    return path


def _part_state(state: dict[str, Any], part: str) -> dict[str, Any]:
    """A part's weights; for codec parts the weight EMA where the source kept one, since that is
    what its evaluations (and so its best.pt) measured."""
    if part == "discriminator":
        return state["discriminator"]
    codec_state = state.get("ema_codec") or state["codec"]
    prefix = f"{part}."
    return {key[len(prefix) :]: value for key, value in codec_state.items() if key.startswith(prefix)}


def warm_start(
    codec: nn.Module, discriminator: nn.Module, path: str | Path, parts: list[str] | tuple[str, ...]
) -> dict[str, Any]:
    """Copy ``parts`` from the checkpoint at ``path`` into ``codec``/``discriminator``.

    Returns what was done (file, the source run's step, parts, ema or raw weights) for the run record. Every part
    must match exactly (names and shapes); a mismatch names the part and its first differences.
    """
    file = checkpoint_file(path)
    try:
        state = safe_load(file)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise WarmStartError(f"trainer.init_from={str(file)!r} could not be read as a checkpoint: {error}") from error
    if not isinstance(state, dict) or "codec" not in state:
        raise WarmStartError(f"trainer.init_from={str(file)!r} is not a training checkpoint (no 'codec' weights)")
    for part in parts:
        target = discriminator if part == "discriminator" else getattr(codec, part)
        if part == "discriminator" and "discriminator" not in state:
            raise WarmStartError(f"trainer.init_from={str(file)!r} holds no discriminator weights")
        source = _part_state(state, part)
        wanted = target.state_dict()
        missing = sorted(set(wanted) - set(source))
        unexpected = sorted(set(source) - set(wanted))
        reshaped = sorted(
            key for key in set(wanted) & set(source) if tuple(wanted[key].shape) != tuple(source[key].shape)
        )
        if missing or unexpected or reshaped:
            details = "; ".join(
                f"{label}: {keys[:3]}"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape differs", reshaped))
                if keys
            )
            raise WarmStartError(
                f"trainer.init_from={str(file)!r}: its {part} does not fit this run's {part} ({details}). "
                f"Build the same {part} as the source run, or leave {part} out of trainer.init_parts"
            )
        target.load_state_dict(source)
    return {
        "file": str(file),
        "step": int(state.get("step", -1)),
        "parts": list(parts),
        "weights": "ema" if state.get("ema_codec") else "raw",
    }
