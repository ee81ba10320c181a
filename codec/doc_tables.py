"""The documentation's tables of config groups and presets, generated from the config tree and
from what ``codec info`` reports, so that they cannot drift from the code.

A generated table sits between ``<!-- generated: NAME (codec tables) -->`` and
``<!-- end generated -->`` in a Markdown file. ``codec tables`` rewrites every such block;
``codec tables --check`` only compares and names the stale ones (a unit test runs the check).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from codec.config import MODEL_GROUPS, available_options, compose_config, describe
from codec.config_search import MOUNTED_GROUPS, repository_root

GENERATED_FILES = ("docs/configuration.md",)
BLOCK = re.compile(r"(<!-- generated: (?P<name>\w+) \(codec tables\) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)
# Groups that are not chosen by a default but added on the command line (+sweep=..., +cluster=...).
ADDED_GROUPS = tuple(MOUNTED_GROUPS)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def group_table() -> str:
    """Every config group, its options across the search path, and what the default run picks."""
    cfg, choices = compose_config([], with_choices=True)
    choices["discriminator"] = list(cfg.discriminator)  # a multi-select group: its picks are its nodes
    others = [g for g in reversed(choices) if g not in MODEL_GROUPS and not g.startswith("hydra/")]
    groups = [*MODEL_GROUPS, *others, "hydra/launcher", *ADDED_GROUPS]
    rows = [_row(["group", "options", "default run picks", "model part"]), _row(["---"] * 4)]
    for group in groups:
        picked = choices.get(group)
        if isinstance(picked, list):
            picked_text = ", ".join(f"`{p}`" for p in picked)
        else:
            picked_text = "none" if picked is None else f"`{picked}`"
        options = ", ".join(f"`{o}`" for o in available_options(group))
        rows.append(_row([f"`{group}`", options, picked_text, "yes" if group in MODEL_GROUPS else ""]))
    return "\n".join(rows)


def _quantizer_name(facts: dict) -> str:
    rule = facts.get("rule")
    return f"{facts['quantizer']} ({rule})" if rule else str(facts["quantizer"])


def preset_table() -> str:
    """One row per ``experiment`` option: rates, codebooks, bitrate and model sizes as built."""
    header = [
        "preset", "sample rate", "hop", "frame rate (Hz)", "quantizer", "groups x layers", "codebooks",
        "codebook size", "bitrate (kbps)", "tokens/s", "generator params", "discriminator params", "discriminators",
    ]  # fmt: skip
    rows = [_row(header), _row(["---"] * len(header))]
    for preset in available_options("experiment"):
        facts = describe(compose_config([f"experiment={preset}"]))
        rows.append(
            _row(
                [
                    f"`{preset}`",
                    str(facts["sample_rate"]),
                    str(facts["hop_length"]),
                    f"{facts['frame_rate']:.2f}",
                    _quantizer_name(facts),
                    f"{facts['groups']} x {facts['layers']}",
                    str(facts["codebooks"]),
                    str(facts["codebook_size"]),
                    f"{facts['bitrate_kbps']:.2f}",
                    f"{facts['tokens_per_second']:.0f}",
                    f"{facts['params_generator'] / 1e6:.2f} M",
                    f"{facts['params_discriminator'] / 1e6:.2f} M",
                    ", ".join(facts["discriminators"]),
                ]
            )
        )
    return "\n".join(rows)


TABLES: dict[str, Callable[[], str]] = {"groups": group_table, "presets": preset_table}


def regenerated(text: str, tables: dict[str, str]) -> str:
    """``text`` with every generated block's body replaced by its current table."""

    def replace(match: re.Match) -> str:
        name = match.group("name")
        if name not in tables:
            raise KeyError(f"unknown generated table {name!r}; known: {', '.join(TABLES)}")
        return f"{match.group(1)}{tables[name]}\n{match.group(4)}"

    return BLOCK.sub(replace, text)


def _current(tables: dict[str, str], root: Path) -> dict[str, tuple[str, str]]:
    """Each generated file's (text now, text with current tables)."""
    texts = {name: (root / name).read_text() for name in GENERATED_FILES}
    return {name: (text, regenerated(text, tables)) for name, text in texts.items()}


def _build_tables() -> dict[str, str]:
    return {name: build() for name, build in TABLES.items()}


def stale_files(root: Path | None = None) -> list[str]:
    """The generated files whose tables differ from what the code builds now."""
    current = _current(_build_tables(), root or repository_root())
    return [name for name, (text, new) in current.items() if text != new]


def write_tables(root: Path | None = None) -> list[str]:
    """Rewrite every generated block; returns the files that changed."""
    root = root or repository_root()
    changed = []
    for name, (text, new) in _current(_build_tables(), root).items():
        if new != text:
            (root / name).write_text(new)
            changed.append(name)
    return changed
