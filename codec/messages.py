"""How an exception is named in a one-line message."""

from __future__ import annotations


def error_summary(error: BaseException, limit: int = 300) -> str:
    """``Type: first line`` cut to ``limit`` characters, or just ``Type`` when the exception says
    nothing (a 0-byte checkpoint makes torch raise an EOFError with an empty message)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:limit]}" if lines else type(error).__name__
