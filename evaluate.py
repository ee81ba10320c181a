"""Score a checkpoint or decoded folders: ``python evaluate.py ...`` is ``codec-eval ...``.

The command lives in :mod:`codec.evaluation.cli`; this file keeps the documented path working.
"""

from codec.evaluation.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
