"""The benchmark at tiny settings: every field is written, the fast path matches eager, and two
identical paths measured interleaved give a ratio of 1 within the benchmark's own spread."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from codec.bench import compare_curves
from codec.training.timing import StepPhase
from tests.conftest import HANG_GUARD_S, require_tool

PATH_FIELDS = {
    "step_time_s",
    "throughput_audio_s_per_s",
    "window_seconds",
    "breakdown_s",
    "first_step_losses",
    "loss_curves",
    "host_peak_mb",
    "device_peak_mb",
    "settings",
    "achieved_flops_per_s",
    "fraction_of_peak",
}
BREAKDOWN = {phase.value for phase in StepPhase}  # discriminators train from step 0 in the benchmark


def run_bench(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "codec.bench", "experiment=smoke", *args, "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "throughput (audio-s / s)" in result.stdout and "loss curves" in result.stdout
    report = json.loads(out.read_text())
    report["stdout"] = result.stdout
    return report


def test_benchmark_smoke_writes_every_field(tmp_path: Path) -> None:
    report = run_bench(
        tmp_path,
        "--windows",
        "2",
        "--window-steps",
        "1",
        "--warmup",
        "1",
        "--breakdown-steps",
        "1",
        "--eval-utterances",
        "2",
    )
    for key in (
        "device",
        "torch",
        "method",
        "audio_seconds_per_step",
        "model_flops_per_step",
        "model_flops_per_audio_second",
        "peak_flops_bf16",
        "paths",
        "speedup",
        "loss_match",
        "evaluation",
        "initial_weights_equal",
    ):
        assert key in report, key
    assert set(report["paths"]) == {"eager", "fast"}
    for path in report["paths"].values():
        assert PATH_FIELDS <= set(path)
        assert set(path["breakdown_s"]) == BREAKDOWN and all(v > 0 for v in path["breakdown_s"].values()), path
        assert path["throughput_audio_s_per_s"] > 0 and path["host_peak_mb"] > 0
    assert report["model_flops_per_audio_second"] > 1e6
    assert report["audio_seconds_per_step"] == 2 * 0.25
    assert report["loss_match"]["within_tolerance"], report["loss_match"]
    assert report["initial_weights_equal"] and len(report["speedup"]["per_window_pair"]) == 2
    # 4 steps say nothing about loss curves: the report says so instead of a verdict
    assert report["loss_curves_match"]["checked"] is False and "too few" in report["loss_curves_match"]["reason"]
    assert all(len(v) == 4 for v in report["paths"]["fast"]["loss_curves"].values())
    evaluation = report["evaluation"]
    assert evaluation["utterances"] == 2 and evaluation["seconds_1_worker"] > 0 and evaluation["speedup_2_vs_1"] > 0


def test_compiled_fast_path_reaches_the_eager_losses(tmp_path: Path) -> None:
    """With torch.compile the fast path runs other kernels than eager even on CPU (no bf16 or fused
    optimizer there): same first-step losses, and loss curves that agree within noise."""
    require_tool("g++")  # torch.compile's CPU backend builds C++ kernels
    report = run_bench(
        tmp_path,
        "trainer.compile=true",
        "--windows",
        "2",
        "--window-steps",
        "30",
        "--warmup",
        "1",
        "--breakdown-steps",
        "1",
        "--eval-utterances",
        "0",
    )
    assert report["paths"]["fast"]["settings"]["compile"] is True
    assert report["paths"]["eager"]["settings"]["compile"] is False
    assert report["loss_match"]["within_tolerance"], report["loss_match"]
    curves = report["loss_curves_match"]
    assert curves["steps"] == 62 and curves["within_noise"], curves


def test_cpu_bf16_discriminators_path_trains_like_fp32(tmp_path: Path) -> None:
    """The CPU path with the discriminators under bf16 autocast (``--paths eager,cpu_bf16``):
    first-step losses within the bf16 tolerance and loss curves within noise of fp32 over 62 steps."""
    report = run_bench(
        tmp_path,
        "--paths",
        "eager,cpu_bf16",
        "--windows",
        "2",
        "--window-steps",
        "30",
        "--warmup",
        "1",
        "--breakdown-steps",
        "1",
        "--eval-utterances",
        "0",
    )
    assert report["paths"]["cpu_bf16"]["settings"]["bf16_discriminators"] is True
    assert report["paths"]["eager"]["settings"]["bf16_discriminators"] is False
    assert not report["identical_paths"]
    assert report["loss_match"]["within_tolerance"], report["loss_match"]
    curves = report["loss_curves_match"]
    assert curves["steps"] == 62 and curves["within_noise"], curves


def test_identical_paths_interleaved_give_a_ratio_of_one_within_the_reported_spread(tmp_path: Path) -> None:
    """The finding this guards against: timed one after the other, two identically configured paths
    once read as a 4.30x speedup while the machine's load fell. Interleaved, they must not."""
    report = run_bench(
        tmp_path,
        "--paths",
        "eager,eager",
        "--windows",
        "10",
        "--window-steps",
        "3",
        "--warmup",
        "2",
        "--breakdown-steps",
        "0",
        "--eval-utterances",
        "0",
    )
    assert report["identical_paths"] and "identical settings" in report["warning"] and "WARNING" in report["stdout"]
    ratio = report["speedup"]
    assert len(ratio["per_window_pair"]) == 10
    assert ratio["min"] <= 1.0 <= ratio["max"], ratio  # 1 lies inside the benchmark's own spread
    assert ratio["min"] <= ratio["median"] <= ratio["max"]
    # the same weights and batches on both sides: the loss curves are the same numbers
    first, second = report["path_order"]
    assert report["paths"][first]["loss_curves"] == report["paths"][second]["loss_curves"]


def test_loss_curve_comparison_separates_noise_from_a_shift() -> None:
    generator = torch.Generator().manual_seed(0)
    base = (torch.linspace(3.0, 1.0, 200) + 0.2 * torch.randn(200, generator=generator)).tolist()
    noisy = (torch.tensor(base) + 0.05 * torch.randn(200, generator=generator)).tolist()
    shifted = (torch.tensor(base) + 0.6).tolist()
    same = compare_curves({"train/mel": base}, {"train/mel": noisy}, window=20)
    assert same["within_noise"] and same["per_loss"]["train/mel"]["windows"] == 10
    apart = compare_curves({"train/mel": base}, {"train/mel": shifted}, window=20)
    assert not apart["within_noise"] and apart["max_difference_in_noise_units"] > 2
    assert 0.2 < apart["per_loss"]["train/mel"]["last_window_relative_difference"] < 0.8
