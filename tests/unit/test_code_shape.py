"""Functions in ``codec/`` stay short enough to read in one go: at most 50 lines each."""

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
