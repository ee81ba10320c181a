"""Prepare a corpus once, in parallel, into WebDataset tar shards at the model's rate.

    python -m codec.data prepare SOURCE OUT --sample-rate 16000 [--workers N] [--part I/N]

Why WebDataset shards: training then reads large sequential files (what network filesystems and
object stores serve well) instead of millions of small ones, the shards are plain tar files any
tool can list, and its own loaders read them too. Audio is stored as 16-bit FLAC at the model's
rate, so the prepared corpus is no larger than its source (float32 copies were 1.8x).

The work is split into *units*: the held-out files (valid and test, written as a plain folder for
evaluation) and one unit per training shard. Every job that prepares the same ``OUT`` (several
processes, several SLURM array tasks, or a rerun after a kill) follows the same plan
(``plan.json``), takes each unit under its own file lock, and skips units already done, so each
file is converted exactly once; a job that finds a unit being prepared by another waits for it
(and takes it over if that job died). ``jobs/<job>.json`` records what each job converted. When
every unit is done, ``corpus.json`` indexes the result; its content does not depend on which
job wrote it.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from codec.data.audio_io import MIN_SAMPLE_RATE, AudioFileError
from codec.data.layouts import SourceItem, discover

FORMAT = "codec-prepared/1"
HELD_OUT = "heldout"


class PrepareError(ValueError):
    """A preparation that cannot go on (another source in OUT, no usable files); names the cause."""


@dataclass(frozen=True)
class PrepareSettings:
    """What a prepared corpus depends on besides its source files (part of the plan)."""

    sample_rate: int
    shard_files: int = 256
    valid_count: int = 8
    test_count: int = 8
    split_seed: int = 0
    min_seconds: float = 0.1
    layout: str = "auto"


# -- the plan ------------------------------------------------------------------------------------
def make_plan(source: Path, settings: PrepareSettings) -> dict[str, Any]:
    """Every file, its split and its unit: a pure function of the source tree and the settings."""
    layout, items = discover(source, settings.layout)
    needed = settings.valid_count + settings.test_count + 1
    if len(items) < needed:
        raise PrepareError(f"{source} has {len(items)} audio file(s); at least {needed} are needed")
    order = np.random.default_rng(settings.split_seed).permutation(len(items)).tolist()
    test, valid = sorted(order[: settings.test_count]), sorted(order[settings.test_count : needed - 1])
    held_out = set(test) | set(valid)
    train = [i for i in range(len(items)) if i not in held_out]
    units = {HELD_OUT: test + valid}
    for start in range(0, len(train), settings.shard_files):
        units[f"train-{start // settings.shard_files:06d}"] = train[start : start + settings.shard_files]
    return {
        "format": FORMAT,
        "source": str(Path(source).resolve()),
        "layout": layout,
        "settings": asdict(settings),
        "items": [asdict(item) for item in items],
        "splits": {"valid": valid, "test": test},
        "units": units,
    }


def plan_digest(plan: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]


def atomic_write(path: Path, text: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(text.encode() if isinstance(text, str) else text)
    os.replace(tmp, path)


@contextmanager
def file_lock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """An exclusive ``flock`` on ``path``; yields whether it was taken (always, when blocking).
    The kernel drops it when its holder dies, so a killed job never leaves a stale lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fix_plan(source: Path, out: Path, settings: PrepareSettings) -> dict[str, Any]:
    """The plan of ``out``: written by the first job, checked by every later one."""
    out.mkdir(parents=True, exist_ok=True)
    plan = make_plan(source, settings)
    with file_lock(out / "locks" / "plan.lock"):
        path = out / "plan.json"
        if path.exists():
            existing = json.loads(path.read_text())
            if plan_digest(existing) != plan_digest(plan):
                changed = [k for k in ("source", "settings", "items") if existing.get(k) != plan.get(k)]
                raise PrepareError(
                    f"{out} holds a preparation of another source or settings (differs in {', '.join(changed)}); "
                    "choose another output folder, or delete it to start over"
                )
        else:
            atomic_write(path, json.dumps(plan))
    return plan


# -- one file, one unit --------------------------------------------------------------------------
def convert(path: Path, sample_rate: int, min_seconds: float) -> tuple[bytes, int]:
    """One source file as 16-bit mono FLAC bytes at ``sample_rate`` and its frame count; raises
    :class:`AudioFileError` naming the reason a file cannot be used."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises several types for corrupt files
        raise AudioFileError(f"{path}: unreadable audio ({error})") from error
    if data.shape[0] == 0:
        raise AudioFileError(f"{path}: empty audio (0 frames)")
    if rate < MIN_SAMPLE_RATE:
        raise AudioFileError(f"{path}: implausible sample rate {rate} Hz")
    if not np.isfinite(data).all():
        raise AudioFileError(f"{path}: audio holds NaN or infinite samples")
    if data.shape[0] / rate < min_seconds:
        raise AudioFileError(f"{path}: shorter than min_seconds={min_seconds} ({data.shape[0] / rate:.3f} s)")
    mono = data.mean(axis=1)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(mono, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue(), len(mono)


def unit_done(out: Path, unit: str) -> bool:
    return (out / "units" / f"{unit}.json").exists()


def write_unit(out: Path, plan: dict[str, Any], unit: str) -> dict[str, Any]:
    """Convert a unit's files and write its output, then its record (``units/<unit>.json``), which
    marks it done; a unit interrupted before its record is redone from scratch."""
    import webdataset as wds

    source, settings = Path(plan["source"]), plan["settings"]
    entries, skipped = [], {}
    tar_path = out / "shards" / f"{unit}.tar"
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_tar = tar_path.with_name(f".{tar_path.name}.tmp{os.getpid()}")
    split_of = {i: split for split, indices in plan["splits"].items() for i in indices}
    writer = wds.TarWriter(str(tmp_tar)) if unit != HELD_OUT else None
    try:
        for index in plan["units"][unit]:
            item = SourceItem(**plan["items"][index])
            try:
                flac, frames = convert(source / item.relative, settings["sample_rate"], settings["min_seconds"])
            except AudioFileError as error:
                skipped[item.relative] = str(error)
                continue
            entry = {"key": f"{index:09d}", "frames": frames, **asdict(item)}
            if writer is not None:
                writer.write({"__key__": entry["key"], "flac": flac, "json": entry})
            else:
                entry["path"] = write_held_out(out, split_of[index], item, flac)
            entries.append(entry)
    finally:
        if writer is not None:
            writer.close()
    if writer is not None:
        os.replace(tmp_tar, tar_path)
    record = {"unit": unit, "entries": entries, "skipped": skipped, "files": len(plan["units"][unit])}
    (out / "units").mkdir(exist_ok=True)
    atomic_write(out / "units" / f"{unit}.json", json.dumps(record))
    return record


def write_held_out(out: Path, split: str, item: SourceItem, flac: bytes) -> str:
    """A held-out file as FLAC under ``heldout/<split>/`` (same relative path) with its transcript."""
    target = (out / HELD_OUT / split / item.relative).with_suffix(".flac")
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, flac)
    if item.transcript:
        atomic_write(target.with_suffix(".txt"), item.transcript)
    return target.relative_to(out).as_posix()


def take_unit(out: Path, plan: dict[str, Any], unit: str, wait: bool) -> tuple[str, dict[str, Any] | None]:
    """Prepare ``unit`` unless it is done or (when not ``wait``) another job holds it.
    Returns (``converted`` | ``done`` | ``busy``, its record when converted here)."""
    limit_threads()
    with file_lock(out / "locks" / f"{unit}.lock", blocking=wait) as taken:
        if not taken:
            return "busy", None
        if unit_done(out, unit):
            return "done", None
        return "converted", write_unit(out, plan, unit)


def limit_threads() -> None:
    """One thread per preparation worker: the workers are the parallelism."""
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"


# -- a whole job ---------------------------------------------------------------------------------
def units_of_part(units: Sequence[str], part: tuple[int, int]) -> list[str]:
    """The units of part ``index`` of ``count`` (an array task's share): every count-th one."""
    index, count = part
    return [u for position, u in enumerate(units) if position % count == index]


def prepare(
    source: Path,
    out: Path,
    settings: PrepareSettings,
    workers: int = 1,
    part: tuple[int, int] = (0, 1),
    progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Prepare this job's units of ``out``; returns the job's record (what it converted, waited
    for, left to other parts) and writes ``corpus.json`` once every unit is done."""
    out = Path(out)
    plan = fix_plan(Path(source), out, settings)
    mine = [u for u in units_of_part(list(plan["units"]), part) if not unit_done(out, u)]
    converted: dict[str, int] = {}
    waited_for: list[str] = []
    job: dict[str, Any] = {"job": job_name(), "part": list(part), "converted": converted, "waited_for": waited_for}
    job["files"] = 0
    total = sum(len(plan["units"][u]) for u in mine)
    seconds = 0.0

    def finished(unit: str, outcome: str, record: dict[str, Any] | None) -> None:
        nonlocal seconds
        if record is not None:
            converted[unit] = record["files"]
            job["files"] += record["files"]
            seconds += sum(e["frames"] for e in record["entries"]) / settings.sample_rate
        if progress is not None:
            progress(len(plan["units"][unit]), total, seconds)

    busy = run_units(out, plan, mine, workers, wait=False, on_done=finished)
    for unit in busy:  # held by another job: wait for it, and take it over if that job died
        waited_for.append(unit)
        outcome, record = take_unit(out, plan, unit, wait=True)
        finished(unit, outcome, record)
    (out / "jobs").mkdir(exist_ok=True)
    atomic_write(out / "jobs" / f"{job['job']}.json", json.dumps(job))
    job["corpus"] = str(write_index(out, plan)) if all(unit_done(out, u) for u in plan["units"]) else None
    return job


def run_units(
    out: Path,
    plan: dict[str, Any],
    units: list[str],
    workers: int,
    wait: bool,
    on_done: Callable[[str, str, dict[str, Any] | None], None],
) -> list[str]:
    """Take ``units`` on ``workers`` processes (in this one for 1); returns those found busy."""
    busy = []
    if workers <= 1:
        for unit in units:
            outcome, record = take_unit(out, plan, unit, wait)
            if outcome == "busy":
                busy.append(unit)
            else:
                on_done(unit, outcome, record)
        return busy
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork")) as pool:
        futures = {pool.submit(take_unit, out, plan, unit, wait): unit for unit in units}
        for future in as_completed(futures):
            outcome, record = future.result()
            if outcome == "busy":
                busy.append(futures[future])
            else:
                on_done(futures[future], outcome, record)
    return sorted(busy)


def job_name() -> str:
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array:
        return f"slurm-{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    return f"{socket.gethostname()}-{os.getpid()}-{int(time.time())}"


def write_index(out: Path, plan: dict[str, Any]) -> Path:
    """``corpus.json``: the shards, the held-out files and every skipped file with its reason."""
    records = {unit: json.loads((out / "units" / f"{unit}.json").read_text()) for unit in plan["units"]}
    rate = plan["settings"]["sample_rate"]
    held_out: dict[str, list[dict[str, Any]]] = {split: [] for split in plan["splits"]}
    split_of = {i: split for split, indices in plan["splits"].items() for i in indices}
    for entry in records[HELD_OUT]["entries"]:
        held_out[split_of[int(entry["key"])]].append(entry)
    shards = [
        {
            "path": f"shards/{unit}.tar",
            "items": len(r["entries"]),
            "seconds": sum(e["frames"] for e in r["entries"]) / rate,
        }
        for unit, r in records.items()
        if unit != HELD_OUT and r["entries"]
    ]
    index = {
        "format": FORMAT,
        "plan": plan_digest(plan),
        "source": plan["source"],
        "layout": plan["layout"],
        "sample_rate": rate,
        "shards": shards,
        "train_hours": sum(s["seconds"] for s in shards) / 3600,
        "heldout": held_out,
        "skipped": {k: v for r in records.values() for k, v in r["skipped"].items()},
    }
    path = out / "corpus.json"
    with file_lock(out / "locks" / "index.lock"):
        atomic_write(path, json.dumps(index, indent=1))
    return path
