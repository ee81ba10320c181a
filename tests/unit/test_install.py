"""The install is what CI tested: every compiled dependency loads, and the environment is the lock.

The first test exists because a torchaudio patch release (2.11.1) stopped loading beside torch
2.11.0 while ``torchaudio==2.11.*`` still allowed it: a fresh install then died at ``import
torchaudio`` with an undefined symbol, and nothing said which package was at fault.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

# Modules with compiled code (or that load a shared library) whose wheels must fit this torch/Python.
COMPILED = (
    "torch",
    "torchaudio",
    "pesq",
    "pystoi",
    "visqol",
    "onnxruntime",
    "pocketsphinx",
    "soxr",
    "espeakng_loader",
    "parselmouth",
    "webrtcvad",
)


def _lock_tools():
    spec = importlib.util.spec_from_file_location("lock_stamp", REPO_ROOT / ".ci" / "lock_stamp.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_compiled_dependency_imports_and_a_failure_names_the_package() -> None:
    failures = {}
    for name in COMPILED:
        try:
            importlib.import_module(name)
        except Exception as error:  # an ImportError or OSError from a shared library
            failures[name] = f"{type(error).__name__}: {error}"
    assert not failures, "these compiled dependencies do not load: " + "; ".join(
        f"{k} ({v})" for k, v in failures.items()
    )
    import torch
    import torchaudio

    # The pair that loads together; the README lists it. A patch of either must be tested before it is locked.
    assert (torch.__version__.split("+")[0], torchaudio.__version__.split("+")[0]) == ("2.11.0", "2.11.0")


def test_the_lock_was_compiled_from_this_pyproject() -> None:
    tools = _lock_tools()
    assert tools.recorded_digest() == tools.dependency_digest(), "pyproject.toml changed: run bash .ci/lock"


def test_the_digest_moves_when_a_dependency_changes(tmp_path: Path) -> None:
    tools = _lock_tools()
    edited = tmp_path / "pyproject.toml"
    edited.write_text((REPO_ROOT / "pyproject.toml").read_text().replace('"einops>=0.8"', '"einops>=0.9"'))
    assert tools.dependency_digest(edited) != tools.dependency_digest()


def test_every_direct_requirement_is_satisfied_by_a_locked_pin() -> None:
    from packaging.requirements import Requirement

    tools = _lock_tools()
    pins = tools.pins()
    project = importlib.import_module("tomllib").loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    for line in requirements:
        requirement = Requirement(line)
        name = tools.canonical(requirement.name)
        assert name in pins, f"{requirement.name} is in pyproject.toml but not in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} breaks {line}"


def test_the_installed_environment_equals_the_lock() -> None:
    """What ``pip freeze --all`` would list, read in process: every locked pin, nothing else."""
    tools = _lock_tools()
    project = tools.canonical("grvq-codec-lab")
    # Installed distributions only: importing pkg_resources (webrtcvad does) puts setuptools'
    # vendored packages on sys.path, and those are part of setuptools, not of the install.
    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    installed = {
        tools.canonical(d.metadata["Name"]): d.version
        for d in importlib.metadata.distributions()
        if tools.canonical(d.metadata["Name"]) != project and Path(str(d.locate_file(""))).resolve() == site_packages
    }
    locked = tools.pins()
    if Path(sys.prefix).resolve() != (REPO_ROOT / ".venv").resolve():
        pytest.skip("not running in the project's .venv (the README's install)")
    differences = {
        name: (installed.get(name), locked.get(name))
        for name in installed.keys() | locked.keys()
        if installed.get(name) != locked.get(name)
    }
    assert not differences, f"installed vs locked (name: (installed, locked)): {differences}"
