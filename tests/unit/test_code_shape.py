"""Code a newcomer reads in one go: no function in ``codec/`` over 50 lines, the trainer at most 350."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT

MAX_LINES = 50


def function_lengths(root: Path) -> dict[str, int]:
    lengths = {}
    for path in sorted((root / "codec").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                key = f"{path.relative_to(root)}::{node.name}"
                lengths[key] = max(lengths.get(key, 0), node.end_lineno - node.lineno + 1)
    return lengths


def test_no_function_in_codec_is_over_fifty_lines() -> None:
    lengths = function_lengths(REPO_ROOT)
    assert len(lengths) > 300, "the scan found too few functions to mean anything"
    too_long = {key: n for key, n in lengths.items() if n > MAX_LINES}
    assert not too_long, f"over {MAX_LINES} lines (split them into named steps): {too_long}"


def test_the_trainer_holds_the_loop_and_little_else() -> None:
    """Building the parts (``build.py``) and the run's record (``recorder.py``) live beside it."""
    lines = len((REPO_ROOT / "codec" / "training" / "trainer.py").read_text().splitlines())
    assert lines <= 350, f"codec/training/trainer.py has {lines} lines"
