"""Tie requirements.lock to the dependency lists of pyproject.toml it was compiled from.

``write`` puts a digest of pyproject's dependency lists in the lock's header; ``check`` (and
tests/unit/test_install.py) fail when they differ, so a dependency edited without
``bash .ci/lock`` cannot reach CI.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
STAMP = re.compile(r"^# pyproject-dependencies-sha256: ([0-9a-f]{64})$", re.MULTILINE)
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", re.MULTILINE)


def dependency_digest(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """Digest of the runtime and optional dependency lists, order-insensitive."""
    project = tomllib.loads(pyproject.read_text())["project"]
    lists = {"dependencies": sorted(project.get("dependencies", []))}
    for extra, requirements in sorted(project.get("optional-dependencies", {}).items()):
        lists[f"extra:{extra}"] = sorted(requirements)
    return hashlib.sha256(json.dumps(lists, sort_keys=True).encode()).hexdigest()


def recorded_digest(lock: Path = LOCK) -> str | None:
    match = STAMP.search(lock.read_text())
    return match.group(1) if match else None


def pins(lock: Path = LOCK) -> dict[str, str]:
    """Canonical package name -> pinned version."""
    return {canonical(name): version for name, version in PIN.findall(lock.read_text())}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# Pins removed from the compiled lock, each with the reason. ``typing`` is the Python 2 backport
# that resemblyzer still declares; Python 3.11's standard library serves it, and a second
# typing.py in site-packages could only shadow the real one.
DROPPED = {"typing": "a backport of the standard library (declared by resemblyzer)"}


def drop_pins(text: str, names: dict[str, str] = DROPPED) -> str:
    """``text`` without the pin blocks (the pin, its hashes and its "via" comments) of ``names``."""
    kept, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line[:1] not in (" ", "\t", "\n", ""):
            pin = PIN.match(line)
            skipping = bool(pin and canonical(pin.group(1)) in names)
        if not skipping:
            kept.append(line)
    return "".join(kept)


def write(lock: Path = LOCK) -> None:
    text = drop_pins(STAMP.sub("", lock.read_text()).lstrip("\n"))
    lock.write_text(f"# pyproject-dependencies-sha256: {dependency_digest()}\n{text}")


def main(argv: list[str]) -> int:
    if argv[:1] == ["write"]:
        write()
        return 0
    if recorded_digest() != dependency_digest():
        print("requirements.lock was not compiled from this pyproject.toml: run bash .ci/lock", file=sys.stderr)
        return 1
    print("requirements.lock matches pyproject.toml")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
