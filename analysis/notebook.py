"""Headless execution of the analysis notebooks with a sweep name injected (papermill-style:
the cell tagged ``parameters`` is followed by one that sets the given values)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient


def execute_notebook(
    source: Path, output: Path, parameters: dict[str, Any], cwd: Path | None = None, timeout: int = 600
) -> Path:
    notebook = nbformat.read(str(source), as_version=4)
    index = next(
        (i for i, cell in enumerate(notebook.cells) if "parameters" in cell.get("metadata", {}).get("tags", [])), -1
    )
    injected = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in parameters.items()))
    injected.metadata["tags"] = ["injected-parameters"]
    notebook.cells.insert(index + 1, injected)
    NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd or source.parent)}}
    ).execute()
    nbformat.write(notebook, str(output))
    return output


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m analysis.notebook", description=__doc__)
    parser.add_argument("notebook")
    parser.add_argument("output")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    args = parser.parse_args()
    execute_notebook(Path(args.notebook), Path(args.output), dict(args.parameter), cwd=Path.cwd())
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
