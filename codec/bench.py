"""``python -m codec.bench [hydra overrides] [--steps N] [--warmup W] [--out FILE]``

Measures the training step of any composition, eager fp32 against the fast path, in one run:
throughput (audio-seconds per second), the step split into data wait, generator forward,
discriminator forward+backward, generator backward and optimizer, peak host and device memory,
model FLOPs per audio-second (and on GPU the achieved fraction of peak), whether both paths give
the same losses on the same batch, whether their loss curves over all measured steps agree
within training noise, and evaluation (PESQ/STOI) speed on 1 vs 2 worker processes.
Writes JSON and prints a table. Figures, not assertions: see README "Performance".
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from codec.config import compose_config
from codec.tracking import NullLogger
from codec.training.timing import NO_TIMING, PhaseTimer
from codec.training.trainer import Trainer

CURVE_KEYS = ("train/loss_generator", "train/loss_discriminator", "train/mel")
PHASES = ("data", "generator_forward", "discriminator_forward_backward", "generator_backward", "optimizer")
# Dense bf16 tensor-core peaks (FLOP/s) by device-name fragment, for the achieved fraction.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "V100": 125e12}
PATH_OVERRIDES = {
    "eager": ["trainer.bf16=false", "trainer.compile=false", "trainer.fused_optimizer=false"],
    "fast": ["trainer.bf16=true", "trainer.fused_optimizer=auto"],
}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16.items() if key in name), None)


def host_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def count_flops(trainer: Trainer, batch: torch.Tensor) -> float:
    """FLOPs of one full training step (both updates), counted by torch's FLOP counter."""
    counter = FlopCounterMode(display=False)
    with counter:
        trainer.train_step(batch)
    return float(counter.get_total_flops())


def measure_path(path: str, overrides: Sequence[str], steps: int, warmup: int, breakdown_steps: int, workdir: Path) -> dict[str, Any]:
    # Whole GAN steps are measured, also for compositions (the demo) that start their discriminators late.
    cfg = compose_config(["trainer.discriminator_start_step=0", *overrides, *PATH_OVERRIDES[path], "trainer.eval_at_start=false", "logger=none"])
    trainer = Trainer(cfg, workdir / path, logger=NullLogger())
    s = trainer.settings
    device = trainer.device
    total = warmup + steps + breakdown_steps
    loader = iter(trainer.data.train_loader(s.batch_size, s.segment_seconds, s.seed, 0, total + 1, num_workers=s.num_workers,
                                            pin_memory=device.type == "cuda"))
    audio_per_step = s.batch_size * s.segment_seconds

    curve: list[torch.Tensor] = []  # per-step losses, kept on the device: recording them never syncs

    def step(batch: torch.Tensor, timer=NO_TIMING) -> None:
        metrics = trainer.gan.train_step(batch, trainer.step, timer)
        curve.append(torch.stack([metrics[k].float() for k in CURVE_KEYS]))
        trainer.step += 1  # as the training loop does: schedules such as discriminator warm-up follow it

    first = next(loader).to(device)
    step(first)  # identical weights and batch on both paths: compare losses
    first_losses = {k: float(v) for k, v in zip(CURVE_KEYS, curve[0])}
    for _ in range(warmup - 1):
        step(next(loader).to(device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)

    data_wait, start = 0.0, time.perf_counter()
    for _ in range(steps):
        tick = time.perf_counter()
        batch = next(loader).to(device, non_blocking=True)
        data_wait += time.perf_counter() - tick
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start

    timer = PhaseTimer(device, synchronize=True)
    for _ in range(breakdown_steps):
        tick = time.perf_counter()
        batch = next(loader).to(device)
        timer.totals["data"] += time.perf_counter() - tick
        step(batch, timer)
    step_time = elapsed / steps
    result = {
        "step_time_s": step_time,
        "throughput_audio_s_per_s": audio_per_step / step_time,
        "data_wait_fraction": data_wait / elapsed,
        "breakdown_s": {phase: timer.totals.get(phase, 0.0) / max(breakdown_steps, 1) for phase in PHASES},
        "first_step_losses": first_losses,
        "loss_curves": {k: values.tolist() for k, values in zip(CURVE_KEYS, torch.stack(curve).cpu().unbind(1))},
        "host_peak_mb": host_peak_mb(),
        "device_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "settings": {"bf16": trainer.gan.autocast_enabled, "compile": trainer.gan.compile_enabled, "fused_optimizer": trainer.gan.opt_g.defaults.get("fused"),
                     "batch_size": s.batch_size, "segment_seconds": s.segment_seconds, "num_workers": s.num_workers},
    }
    result["_trainer"] = trainer
    result["_batch"] = first
    return result


def compare_curves(reference: dict[str, list[float]], candidate: dict[str, list[float]], window: int) -> dict[str, Any]:
    """Whether two loss curves agree within the step-to-step noise of training.

    Each curve is cut into windows of ``window`` steps. In every window the difference of the two
    means is divided by the reference curve's standard deviation inside that window (its noise).
    The curves match when no window differs by more than one noise unit: bf16 and compiled
    kernels change rounding, so trajectories part after a few GAN steps, but not their level.
    """
    per_key: dict[str, Any] = {}
    for key, ref_values in reference.items():
        ref = torch.tensor(ref_values, dtype=torch.float64)
        cand = torch.tensor(candidate[key], dtype=torch.float64)
        steps = min(len(ref), len(cand))
        size = max(2, min(window, steps))
        differences, relative = [], []
        for start in range(0, steps - size + 1, size):
            a, b = ref[start:start + size], cand[start:start + size]
            noise = float(a.std()) or 1e-12
            differences.append(abs(float(b.mean() - a.mean())) / noise)
            relative.append(abs(float(b.mean() - a.mean())) / max(abs(float(a.mean())), 1e-12))
        per_key[key] = {"windows": len(differences), "max_difference_in_noise_units": max(differences, default=0.0),
                        "last_window_relative_difference": relative[-1] if relative else 0.0}
    worst = max((v["max_difference_in_noise_units"] for v in per_key.values()), default=0.0)
    return {"steps": min((len(v) for v in reference.values()), default=0), "window": window, "per_loss": per_key,
            "max_difference_in_noise_units": worst, "within_noise": worst <= 1.0}


def measure_eval(overrides: Sequence[str], utterances: int) -> dict[str, Any]:
    """PESQ+STOI over the same utterances with one and with two worker processes."""
    from codec.config import build
    from codec.evaluation import Evaluator

    cfg = compose_config(list(overrides))
    data = build(cfg.data, "data")
    clips = [wav for _, wav in data.utterances("train", utterances, None)]
    generator = torch.Generator().manual_seed(0)
    pairs = [(wav, wav + 0.01 * torch.randn(wav.shape, generator=generator)) for wav in clips]
    seconds = sum(wav.shape[-1] for wav in clips) / data.sample_rate
    timings = {}
    for workers in (1, 2):
        with Evaluator(data.sample_rate, metrics=["pesq_wb", "stoi", "estoi"], workers=workers) as evaluator:
            evaluator.score_pairs(pairs[:workers])  # start the worker processes outside the timing
            start = time.perf_counter()
            evaluator.score_pairs(pairs)
            timings[workers] = time.perf_counter() - start
    return {"utterances": len(pairs), "audio_seconds": seconds, "seconds_1_worker": timings[1], "seconds_2_workers": timings[2],
            "speedup_2_vs_1": timings[1] / timings[2]}


def run(overrides: Sequence[str], steps: int, warmup: int, breakdown_steps: int, eval_utterances: int, curve_window: int = 20) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        paths = {name: measure_path(name, overrides, steps, warmup, breakdown_steps, Path(tmp)) for name in PATH_OVERRIDES}
        eager = paths["eager"]
        trainer, batch = eager.pop("_trainer"), eager.pop("_batch")
        flops = count_flops(trainer, batch)
        paths["fast"].pop("_trainer")
        paths["fast"].pop("_batch")
        device = trainer.device
        audio_per_step = trainer.settings.batch_size * trainer.settings.segment_seconds
    peak = peak_flops(device)
    for result in paths.values():
        achieved = flops / result["step_time_s"]
        result["achieved_flops_per_s"] = achieved
        result["fraction_of_peak"] = achieved / peak if peak else None
    tolerance = 5e-2 if paths["fast"]["settings"]["bf16"] else 1e-4
    eager_loss, fast_loss = eager["first_step_losses"], paths["fast"]["first_step_losses"]
    differences = {k: abs(fast_loss[k] - eager_loss[k]) / max(abs(eager_loss[k]), 1e-8) for k in eager_loss}
    return {
        "overrides": list(overrides),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "steps": steps,
        "audio_seconds_per_step": audio_per_step,
        "model_flops_per_step": flops,
        "model_flops_per_audio_second": flops / audio_per_step,
        "peak_flops_bf16": peak,
        "paths": paths,
        "speedup_fast_vs_eager": paths["fast"]["throughput_audio_s_per_s"] / eager["throughput_audio_s_per_s"],
        "loss_match": {"relative_difference": differences, "tolerance": tolerance,
                       "within_tolerance": all(d <= tolerance for d in differences.values())},
        "loss_curves_match": compare_curves(eager["loss_curves"], paths["fast"]["loss_curves"], curve_window),
        "evaluation": measure_eval(overrides, eval_utterances) if eval_utterances else None,
    }


def format_table(report: dict[str, Any]) -> str:
    lines = [f"device: {report['device']}   torch {report['torch']}   {report['audio_seconds_per_step']:g} audio-s per step",
             f"{'':34}{'eager fp32':>14}{'fast path':>14}"]
    eager, fast = report["paths"]["eager"], report["paths"]["fast"]

    def row(label: str, a: Any, b: Any, fmt: str = "{:.4g}") -> None:
        show = lambda v: "-" if v is None else fmt.format(v)  # noqa: E731
        lines.append(f"{label:34}{show(a):>14}{show(b):>14}")

    row("throughput (audio-s / s)", eager["throughput_audio_s_per_s"], fast["throughput_audio_s_per_s"])
    row("step time (ms)", 1000 * eager["step_time_s"], 1000 * fast["step_time_s"])
    for phase in PHASES:
        row(f"  {phase} (ms)", 1000 * eager["breakdown_s"][phase], 1000 * fast["breakdown_s"][phase])
    row("data wait (% of step)", 100 * eager["data_wait_fraction"], 100 * fast["data_wait_fraction"])
    row("host peak (MB)", eager["host_peak_mb"], fast["host_peak_mb"])
    row("device peak (MB)", eager["device_peak_mb"], fast["device_peak_mb"])
    row("fraction of bf16 peak", eager["fraction_of_peak"], fast["fraction_of_peak"])
    lines.append(f"speedup fast/eager: {report['speedup_fast_vs_eager']:.2f}x; "
                 f"model GFLOPs per audio-second: {report['model_flops_per_audio_second'] / 1e9:.3g}; "
                 f"first-step losses match: {report['loss_match']['within_tolerance']}")
    curves = report["loss_curves_match"]
    lines.append(f"loss curves over {curves['steps']} steps ({curves['window']}-step windows): largest gap "
                 f"{curves['max_difference_in_noise_units']:.2f} noise units; within noise: {curves['within_noise']}")
    if report["evaluation"]:
        e = report["evaluation"]
        lines.append(f"evaluation (PESQ-WB, STOI, ESTOI) on {e['audio_seconds']:.0f} s of audio: "
                     f"{e['seconds_1_worker']:.2f} s with 1 worker, {e['seconds_2_workers']:.2f} s with 2 ({e['speedup_2_vs_1']:.2f}x)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codec.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=hificodec_24k_240x_4cb trainer.batch_size=16")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per path")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, allocator)")
    parser.add_argument("--breakdown-steps", type=int, default=5, help="steps timed phase by phase (synchronizing)")
    parser.add_argument("--eval-utterances", type=int, default=8, help="utterances for the evaluation speed test (0: skip)")
    parser.add_argument("--curve-window", type=int, default=20, help="steps per window when comparing the two loss curves")
    parser.add_argument("--out", default="bench.json", help="where to write the JSON report")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")
    report = run(args.overrides, args.steps, args.warmup, args.breakdown_steps, args.eval_utterances, args.curve_window)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(format_table(report))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
