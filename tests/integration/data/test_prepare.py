"""``python -m codec.data prepare`` as users run it: several jobs at once on one corpus, and a
SLURM array over its parts. Each file is converted exactly once, whatever the interleaving."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import HANG_GUARD_S, require_slurm_cluster
from tests.integration.sweep.test_slurm import final_job_state
from tests.unit.data.test_shards import write_corpus

PREPARE = [sys.executable, "-m", "codec.data", "prepare"]
OPTIONS = ["--sample-rate", "16000", "--shard-files", "3", "--valid-count", "2", "--test-count", "2", "--workers", "1"]


def job_records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "jobs").glob("*.json"))]


def assert_each_file_converted_once(out: Path, files: int) -> None:
    records = job_records(out)
    units = [unit for record in records for unit in record["converted"]]
    assert len(units) == len(set(units)), f"a unit was converted twice: {records}"
    plan = json.loads((out / "plan.json").read_text())
    assert sorted(units) == sorted(plan["units"]), "every unit converted by some job"
    assert sum(record["files"] for record in records) == files


def test_three_preparations_at_once_convert_each_file_once_and_agree(tmp_path: Path) -> None:
    source = write_corpus(tmp_path / "source", 40)
    out = tmp_path / "out"
    jobs = [
        subprocess.Popen(
            [*PREPARE, str(source), str(out), *OPTIONS], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )  # fmt: skip
        for _ in range(3)
    ]
    outputs = [job.communicate(timeout=HANG_GUARD_S) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0, 0], outputs
    assert len(job_records(out)) == 3
    assert_each_file_converted_once(out, 40)
    alone = tmp_path / "alone"
    subprocess.run([*PREPARE, str(source), str(alone), *OPTIONS], check=True, capture_output=True, timeout=HANG_GUARD_S)
    assert json.loads((out / "corpus.json").read_text()) == json.loads((alone / "corpus.json").read_text())
    assert "%|" in outputs[0][1] and "h of audio" in outputs[0][1], "a progress bar with an ETA on stderr"


@pytest.mark.slurm
def test_a_slurm_array_prepares_its_parts_and_the_last_writes_the_index(tmp_path: Path) -> None:
    require_slurm_cluster()
    source = write_corpus(tmp_path / "source", 24)
    out = tmp_path / "out"
    command = " ".join([*PREPARE, str(source), str(out), *OPTIONS])
    submitted = subprocess.run(
        ["sbatch", "--parsable", "--array=0-2", "--partition=debug", "--cpus-per-task=1",
         f"--output={tmp_path}/prepare_%a.log", f"--chdir={Path.cwd()}", f"--wrap={command}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    array = submitted.stdout.strip().split(";")[0]
    assert [final_job_state(f"{array}_{task}", timeout=HANG_GUARD_S) for task in range(3)] == ["COMPLETED"] * 3
    records = job_records(out)
    assert sorted(tuple(r["part"]) for r in records) == [(0, 3), (1, 3), (2, 3)]
    assert_each_file_converted_once(out, 24)
    assert (out / "corpus.json").exists(), "the last part to finish writes the index"
