"""The docs: generated tables that are current, a short README, and links that resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from codec.config_search import EXTRA_PATH_VARIABLE, option_file
from codec.doc_tables import stale_files
from tests.conftest import REPO_ROOT


def test_the_generated_tables_are_current() -> None:
    assert stale_files() == [], "run `python -m codec tables` and commit docs/configuration.md"


def test_a_preset_changed_without_regenerating_makes_the_check_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A preset of the same name earlier on the search path stands in for an edit of the real one."""
    original = option_file("experiment", "smoke")
    assert original is not None
    (tmp_path / "experiment").mkdir()
    edited = original.read_text() + "\nquantizer:\n  codebook_size: 512\n"
    (tmp_path / "experiment" / "smoke.yaml").write_text(edited)
    monkeypatch.setenv(EXTRA_PATH_VARIABLE, str(tmp_path))
    assert option_file("experiment", "smoke") == tmp_path / "experiment" / "smoke.yaml"
    assert stale_files() == ["docs/configuration.md"]


DOC_FILES = sorted(f"docs/{p.name}" for p in (REPO_ROOT / "docs").glob("*.md"))
DOCUMENTS = ["README.md", "CONTRIBUTING.md", "CHANGELOG.md", *DOC_FILES]
LINK = re.compile(r"\]\((?!https?://|#)([^)#\s]+)")


def test_the_readme_is_a_front_page_and_every_link_resolves() -> None:
    assert len((REPO_ROOT / "README.md").read_text().splitlines()) <= 300
    broken = []
    for name in DOCUMENTS:
        path = REPO_ROOT / name
        broken += [
            f"{name} -> {target}" for target in LINK.findall(path.read_text()) if not (path.parent / target).exists()
        ]
    assert not broken, broken
    linked = set(LINK.findall((REPO_ROOT / "README.md").read_text()))
    assert set(DOC_FILES) <= linked, "a doc the README does not link"
