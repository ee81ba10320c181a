"""``python -m codec.data prepare SOURCE OUT --sample-rate SR``: see :mod:`codec.data.prepare`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from codec.data.layouts import LAYOUTS
from codec.data.prepare import PrepareError, PrepareSettings, prepare


def array_part() -> tuple[int, int]:
    """This SLURM array task's share of the units (the whole job outside an array)."""
    task, count = os.environ.get("SLURM_ARRAY_TASK_ID"), os.environ.get("SLURM_ARRAY_TASK_COUNT")
    if task is None or count is None:
        return 0, 1
    return int(task) - int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0")), int(count)


def parse_part(text: str | None) -> tuple[int, int]:
    if text is None:
        return array_part()
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"--part={text}: write INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 0/4")
    return int(index), int(count)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codec.data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare", help="convert a corpus into WebDataset shards at the model's rate")
    p.add_argument("source", type=Path, help="the corpus folder (LibriTTS, VCTK or any tree of wav/flac)")
    p.add_argument("out", type=Path, help="the prepared corpus (data=shards data.path=OUT)")
    p.add_argument("--sample-rate", type=int, required=True, help="the model's sample rate")
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="processes (default: cores given)")
    p.add_argument("--part", default=None, help="INDEX/COUNT: this job's share (default: the SLURM array task's)")
    p.add_argument("--shard-files", type=int, default=256, help="files per training shard")
    p.add_argument("--valid-count", type=int, default=8)
    p.add_argument("--test-count", type=int, default=8)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--min-seconds", type=float, default=0.1)
    p.add_argument("--layout", choices=LAYOUTS, default="auto")
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        print(f"error: {args.source} is not a folder", file=sys.stderr)
        return 2
    try:
        part = parse_part(args.part)
    except argparse.ArgumentTypeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    settings = PrepareSettings(
        args.sample_rate, args.shard_files, args.valid_count, args.test_count, args.split_seed, args.min_seconds,
        args.layout,
    )  # fmt: skip
    return run_prepare(args.source, args.out, settings, max(1, args.workers), part)


def run_prepare(source: Path, out: Path, settings: PrepareSettings, workers: int, part: tuple[int, int]) -> int:
    from tqdm import tqdm

    started = time.monotonic()
    bar = tqdm(total=0, unit="file", desc=f"prepare {out.name}", file=sys.stderr, dynamic_ncols=True)

    def progress(files: int, total: int, seconds: float) -> None:
        bar.total = total
        bar.set_postfix_str(f"{seconds / 3600:.2f} h of audio")
        bar.update(files)

    try:
        job = prepare(source, out, settings, workers, part, progress)
    except PrepareError as error:
        bar.close()
        print(f"error: {error}", file=sys.stderr)
        return 2
    bar.close()
    elapsed = time.monotonic() - started
    corpus = json.loads(Path(job["corpus"]).read_text()) if job["corpus"] else None
    for reason in (corpus or {}).get("skipped", {}).values():
        print(f"skipped {reason}", file=sys.stderr)
    print(
        f"job {job['job']}: converted {job['files']} file(s) in {len(job['converted'])} unit(s) in {elapsed:.1f} s "
        f"on {workers} worker(s); waited for {len(job['waited_for'])} unit(s) another job held"
    )
    if corpus is None:
        print(f"{out}: units of other parts are still to be prepared; corpus.json follows when they are done")
    else:
        print(f"{out / 'corpus.json'}: {len(corpus['shards'])} shard(s), {corpus['train_hours']:.2f} h to train on")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
