"""The benchmark at tiny settings: every field is written, and the fast path matches eager."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from codec.bench import compare_curves
from tests.conftest import require_tool


PATH_FIELDS = {"step_time_s", "throughput_audio_s_per_s", "data_wait_fraction", "breakdown_s", "first_step_losses", "loss_curves",
               "host_peak_mb", "device_peak_mb", "settings", "achieved_flops_per_s", "fraction_of_peak"}
BREAKDOWN = {"data", "generator_forward", "discriminator_forward_backward", "generator_backward", "optimizer"}


def run_bench(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "codec.bench", "experiment=smoke", *args, "--out", str(out)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "throughput (audio-s / s)" in result.stdout and "loss curves over" in result.stdout
    return json.loads(out.read_text())


def test_benchmark_smoke_writes_every_field(tmp_path: Path) -> None:
    report = run_bench(tmp_path, "--steps", "2", "--warmup", "1", "--breakdown-steps", "1", "--eval-utterances", "2")
    for key in ("device", "torch", "audio_seconds_per_step", "model_flops_per_step", "model_flops_per_audio_second",
                "peak_flops_bf16", "paths", "speedup_fast_vs_eager", "loss_match", "evaluation"):
        assert key in report, key
    assert set(report["paths"]) == {"eager", "fast"}
    for path in report["paths"].values():
        assert PATH_FIELDS <= set(path)
        assert set(path["breakdown_s"]) == BREAKDOWN and all(v >= 0 for v in path["breakdown_s"].values())
        assert path["throughput_audio_s_per_s"] > 0 and path["host_peak_mb"] > 0
    assert report["model_flops_per_audio_second"] > 1e6
    assert report["audio_seconds_per_step"] == 2 * 0.25
    assert report["loss_match"]["within_tolerance"], report["loss_match"]
    assert report["loss_curves_match"]["steps"] == 4
    assert all(len(v) == 4 for v in report["paths"]["fast"]["loss_curves"].values())
    evaluation = report["evaluation"]
    assert evaluation["utterances"] == 2 and evaluation["seconds_1_worker"] > 0 and evaluation["speedup_2_vs_1"] > 0


def test_compiled_fast_path_reaches_the_eager_losses(tmp_path: Path) -> None:
    """With torch.compile the fast path runs other kernels than eager even on CPU (no bf16 or fused
    optimizer there): same first-step losses, and loss curves that agree within noise."""
    require_tool("g++")  # torch.compile's CPU backend builds C++ kernels
    report = run_bench(tmp_path, "trainer.compile=true", "--steps", "4", "--warmup", "1", "--breakdown-steps", "1", "--eval-utterances", "0")
    assert report["paths"]["fast"]["settings"]["compile"] is True
    assert report["paths"]["eager"]["settings"]["compile"] is False
    assert report["loss_match"]["within_tolerance"], report["loss_match"]
    curves = report["loss_curves_match"]
    assert curves["steps"] == 6 and curves["within_noise"], curves


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
