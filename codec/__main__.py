"""Command line: ``python -m codec info [overrides]`` (and encode/decode, see ``codec.cli``)."""

from codec.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
