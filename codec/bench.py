"""``python -m codec.bench [hydra overrides] [--windows N] [--window-steps K] [--paths A,B] [--out FILE]``

Measures the training step of any composition, eager fp32 against the fast path (or any two
paths of ``PATH_OVERRIDES``), in one run, interleaved (A B, B A, ... in windows of K steps on the
same initial weights and batches, each path in its own process) so a change in machine speed
during the run cancels out of each ratio: the speedup is reported per window pair with its
median, minimum and maximum. Also: throughput (audio-seconds per second),
the step split into generator forward,
discriminator forward+backward, generator backward and optimizer, peak host and device memory,
model FLOPs per audio-second (and on GPU the achieved fraction of peak), whether both paths give
the same losses on the same batch, whether their loss curves agree within training noise (only
with enough steps to mean something), and evaluation (PESQ/STOI) speed on 1 vs 2 worker processes.
Writes JSON and prints a table. Figures, not assertions: see docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from codec.config import compose_config
from codec.signals import die_with_parent
from codec.tracking import NullLogger
from codec.training.cost import peak_host_memory_mb
from codec.training.timing import NO_TIMING, PhaseTimer, StepPhase
from codec.training.trainer import Trainer

CURVE_KEYS = ("train/loss_generator", "train/loss_discriminator", "train/mel")
# Fewer steps than this say nothing about whether two loss curves agree (GAN noise dominates).
MIN_CURVE_STEPS = 60
PHASES = tuple(StepPhase)
# Dense bf16 tensor-core peaks (FLOP/s) by device-name fragment, for the achieved fraction.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "V100": 125e12}
EAGER = ["trainer.bf16=false", "trainer.compile=false", "trainer.fused_optimizer=false"]
PATH_OVERRIDES = {
    "eager": EAGER,
    "fast": ["trainer.bf16=true", "trainer.fused_optimizer=auto"],
    # eager with the discriminators under bf16 autocast on CPU (AMX); the generator stays float32
    "cpu_bf16": [*EAGER, "trainer.cpu_bf16_discriminators=true"],
    # eager as the step ran before the CPU memory and autograd savings: the allocator hands freed memory back
    # to the kernel, and real audio goes through the generator's discriminator pass with autograd
    "plain": [*EAGER, "trainer.retain_host_memory=false", "trainer.real_features_without_grad=false"],
}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16.items() if key in name), None)


def count_flops(trainer: Trainer, batch: torch.Tensor) -> float:
    """FLOPs of one full training step (both updates), counted by torch's FLOP counter."""
    counter = FlopCounterMode(display=False)
    with counter:
        trainer.train_step(batch)
    return float(counter.get_total_flops())


class PathRunner:
    """One configured path (its own trainer, weights and optimizer state) stepping through the
    benchmark's batches. It lives in its own process (:class:`PathProcess`), so process-wide
    settings such as the host allocator (``trainer.retain_host_memory``) and the random stream
    belong to the path alone."""

    def __init__(self, label: str, path: str, overrides: Sequence[str], workdir: Path, batch_count: int) -> None:
        # Whole GAN steps are measured, also for compositions (the demo) that start their discriminators late.
        cfg = compose_config(
            [
                "trainer.discriminator_start_step=0",
                *overrides,
                *PATH_OVERRIDES[path],
                "trainer.eval_at_start=false",
                "logger=none",
            ]
        )
        self.label, self.path = label, path
        self.trainer = Trainer(
            cfg, workdir / label.replace(" ", "_").replace("(", "").replace(")", ""), logger=NullLogger()
        )
        self.device = self.trainer.device
        self.batches = draw_batches(self.trainer, batch_count)
        self.curve: list[torch.Tensor] = []  # per-step losses, kept on the device: recording them never syncs
        self.window_seconds: list[float] = []
        self.timer = PhaseTimer(self.device, synchronize=True)

    def fingerprint(self) -> dict[str, str]:
        """Digests of the initial weights and of the batches, to check both paths start alike."""
        weights = hashlib.sha256()
        for key, value in sorted(self.trainer.codec.state_dict().items()):
            weights.update(key.encode() + value.detach().cpu().contiguous().numpy().tobytes())
        batches = hashlib.sha256(b"".join(batch.numpy().tobytes() for batch in self.batches))
        return {"weights": weights.hexdigest(), "batches": batches.hexdigest()}

    def steps(self, start: int, end: int, timed_phases: bool = False) -> None:
        for batch in self.batches[start:end]:
            self.step(batch, self.timer if timed_phases else NO_TIMING)

    def step(self, batch: torch.Tensor, timer=NO_TIMING) -> None:
        metrics = self.trainer.gan.train_step(batch.to(self.device, non_blocking=True), self.trainer.step, timer)
        self.curve.append(torch.stack([metrics[k].float() for k in CURVE_KEYS]))
        self.trainer.step += 1  # as the training loop does: schedules such as discriminator warm-up follow it

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def timed_window(self, start: int, end: int) -> float:
        if not self.window_seconds and self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.sync()
        begin = time.perf_counter()
        self.steps(start, end)
        self.sync()
        self.window_seconds.append(time.perf_counter() - begin)
        return self.window_seconds[-1]

    def count_flops(self) -> float:
        return count_flops(self.trainer, self.batches[0].to(self.device))

    def report(self, breakdown_steps: int) -> dict[str, Any]:
        s, gan = self.trainer.settings, self.trainer.gan
        return {
            "window_seconds": self.window_seconds,
            "breakdown_s": {phase: self.timer.totals.get(phase, 0.0) / max(breakdown_steps, 1) for phase in PHASES},
            "first_step_losses": {k: float(v) for k, v in zip(CURVE_KEYS, self.curve[0])},
            "loss_curves": {
                k: values.tolist() for k, values in zip(CURVE_KEYS, torch.stack(self.curve).cpu().unbind(1))
            },
            "host_peak_mb": peak_host_memory_mb(),
            "device_peak_mb": torch.cuda.max_memory_allocated(self.device) / 2**20
            if self.device.type == "cuda"
            else None,
            "settings": {
                "bf16": gan.autocast_enabled,
                "bf16_discriminators": gan.discriminator_autocast_enabled,
                "compile": gan.compile_enabled,
                "fused_optimizer": gan.opt_g.defaults.get("fused"),
                "retain_host_memory": s.retain_host_memory,
                "real_features_without_grad": s.real_features_without_grad,
                "batch_size": s.batch_size,
                "segment_seconds": s.segment_seconds,
                "num_workers": s.num_workers,
            },
            "device": torch.cuda.get_device_name(self.device)
            if self.device.type == "cuda"
            else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
            "audio_seconds_per_step": s.batch_size * s.segment_seconds,
            "peak_flops_bf16": peak_flops(self.device),
        }


def serve_path(
    connection: Connection, label: str, path: str, overrides: Sequence[str], workdir: str, batch_count: int
) -> None:
    """The body of a path's process: build the runner, then answer (method, args) requests in turn."""
    die_with_parent()
    try:
        runner = PathRunner(label, path, overrides, Path(workdir), batch_count)
        connection.send((True, runner.fingerprint()))
        while True:
            method, args = connection.recv()
            if method == "close":
                return
            connection.send((True, getattr(runner, method)(*args)))
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which raises it
        connection.send((False, f"{type(error).__name__}: {error}\n{traceback.format_exc()}"))


class PathProcess:
    """A :class:`PathRunner` in a process of its own. While one path runs its window, the other
    waits on its pipe and uses no CPU, so interleaving still compares the two on the same machine
    state; unlike two runners in one process, a process-wide setting cannot leak between them."""

    def __init__(self, label: str, path: str, overrides: Sequence[str], workdir: Path, batch_count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.label = label
        self.connection, child = context.Pipe()
        self.process = context.Process(
            target=serve_path,
            args=(child, label, path, list(overrides), str(workdir), batch_count),
            name=f"bench-{path}",
        )
        self.process.start()
        child.close()
        self._fingerprint: dict[str, str] | None = None

    def _answer(self) -> Any:
        try:
            ok, value = self.connection.recv()
        except EOFError:
            raise RuntimeError(
                f"benchmark path {self.label!r}: its process ended without answering "
                f"(exit code {self.process.exitcode}; killed for memory?)"
            ) from None
        if not ok:
            raise RuntimeError(f"benchmark path {self.label!r} failed:\n{value}")
        return value

    def fingerprint(self) -> dict[str, str]:
        if self._fingerprint is None:
            self._fingerprint = self._answer()
        return self._fingerprint

    def call(self, method: str, *args: Any) -> Any:
        self.fingerprint()
        self.connection.send((method, args))
        return self._answer()

    def close(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(OSError):
                self.connection.send(("close", ()))
            self.process.join(timeout=60)
            if self.process.is_alive():
                self.process.kill()
        self.connection.close()


def draw_batches(trainer: Trainer, count: int) -> list[torch.Tensor]:
    """The training stream's first ``count`` batches: the same ones in every path (the stream is a
    pure function of the seed and the sample index)."""
    s = trainer.settings
    loader = iter(trainer.data.train_loader(s.batch_size, s.segment_seconds, s.seed, 0, count + 1, num_workers=0))
    return [next(loader) for _ in range(count)]


def interleaved_ratios(reference: Sequence[float], candidate: Sequence[float]) -> dict[str, Any]:
    """Per window pair, reference time / candidate time (above 1: the candidate is faster)."""
    ratios = [r / c for r, c in zip(reference, candidate)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "per_window_pair": ratios}


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
            a, b = ref[start : start + size], cand[start : start + size]
            noise = float(a.std()) or 1e-12
            differences.append(abs(float(b.mean() - a.mean())) / noise)
            relative.append(abs(float(b.mean() - a.mean())) / max(abs(float(a.mean())), 1e-12))
        per_key[key] = {
            "windows": len(differences),
            "max_difference_in_noise_units": max(differences, default=0.0),
            "last_window_relative_difference": relative[-1] if relative else 0.0,
        }
    worst = max((v["max_difference_in_noise_units"] for v in per_key.values()), default=0.0)
    return {
        "steps": min((len(v) for v in reference.values()), default=0),
        "window": window,
        "per_loss": per_key,
        "max_difference_in_noise_units": worst,
        "within_noise": worst <= 1.0,
    }


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
    return {
        "utterances": len(pairs),
        "audio_seconds": seconds,
        "seconds_1_worker": timings[1],
        "seconds_2_workers": timings[2],
        "speedup_2_vs_1": timings[1] / timings[2],
    }


def path_labels(paths: Sequence[str]) -> list[str]:
    """Report keys for the two paths: their names, numbered when both are the same path."""
    return list(paths) if paths[0] != paths[1] else [paths[0], f"{paths[1]} (2)"]


def run(
    overrides: Sequence[str],
    windows: int,
    window_steps: int,
    warmup: int,
    breakdown_steps: int,
    eval_utterances: int,
    curve_window: int = 20,
    paths: Sequence[str] = ("eager", "fast"),
) -> dict[str, Any]:
    """Time two paths A B A B ... on the same weights and batches: each window pair's ratio sees a
    drift in machine speed (another job, throttling) on both sides; the report gives their median and range."""
    labels = path_labels(paths)
    initial_weights_equal, flops, reports = _measure(
        overrides, labels, paths, windows, window_steps, warmup, breakdown_steps
    )
    reference_report = reports[labels[0]]
    device_name, audio_per_step, peak = (
        reference_report[k] for k in ("device", "audio_seconds_per_step", "peak_flops_bf16")
    )
    settings = {label: report["settings"] for label, report in reports.items()}
    results = _path_results(reports, window_steps, audio_per_step, flops, peak)
    reference, candidate = (results[label] for label in labels)
    identical = settings[labels[0]] == settings[labels[1]]
    curve_steps = warmup + windows * window_steps + breakdown_steps
    return {
        "overrides": list(overrides),
        "device": device_name,
        "torch": torch.__version__,
        "method": _method(labels, windows, window_steps),
        "windows": windows,
        "window_steps": window_steps,
        "initial_weights_equal": initial_weights_equal,
        "audio_seconds_per_step": audio_per_step,
        "model_flops_per_step": flops,
        "model_flops_per_audio_second": flops / audio_per_step,
        "peak_flops_bf16": peak,
        "paths": results,
        "path_order": labels,
        "identical_paths": identical,
        "warning": f"both paths run with identical settings ({settings[labels[0]]}): the ratio measures the "
        "machine's noise, not a speedup"
        if identical
        else None,
        "speedup": interleaved_ratios(reference["window_seconds"], candidate["window_seconds"]),
        "loss_match": _loss_match(reference, candidate, settings),
        "loss_curves_match": _curves_match(reference, candidate, curve_steps, curve_window),
        "evaluation": measure_eval(overrides, eval_utterances) if eval_utterances else None,
    }


def _method(labels: list[str], windows: int, window_steps: int) -> str:
    return (
        f"interleaved: {windows} windows of {window_steps} steps per path, order alternating per pair, "
        f"each path in its own process, same initial weights and batches; "
        f"ratio per window pair ({labels[0]} time / {labels[1]} time)"
    )


def _measure(
    overrides: Sequence[str],
    labels: list[str],
    paths: Sequence[str],
    windows: int,
    window_steps: int,
    warmup: int,
    breakdown_steps: int,
) -> tuple[bool, float, dict[str, Any]]:
    """Run both paths in their own processes, interleaved; returns (same initial weights, model
    FLOPs per step, each path's report)."""
    measured = windows * window_steps
    total = warmup + measured + breakdown_steps
    with tempfile.TemporaryDirectory() as tmp:
        runners = [PathProcess(label, path, overrides, Path(tmp), total) for label, path in zip(labels, paths)]
        try:
            first, second = (runner.fingerprint() for runner in runners)
            if first["batches"] != second["batches"]:
                raise RuntimeError("the two paths drew different batches; the comparison would mean nothing")
            for runner in runners:
                runner.call("steps", 0, warmup)  # compilation and allocator warm-up, outside the timing
            for window in range(windows):
                start = warmup + window * window_steps
                for runner in runners if window % 2 == 0 else runners[::-1]:
                    runner.call("timed_window", start, start + window_steps)
            for runner in runners:
                runner.call("steps", warmup + measured, total, True)
            flops = runners[0].call("count_flops")
            reports = {runner.label: runner.call("report", breakdown_steps) for runner in runners}
        finally:
            for runner in runners:
                runner.close()
    return first["weights"] == second["weights"], flops, reports


def _path_results(
    reports: dict[str, Any], window_steps: int, audio_per_step: float, flops: float, peak: float | None
) -> dict[str, dict[str, Any]]:
    """Each path's step time (median window), throughput and achieved FLOP/s."""
    results = {}
    for label, report in reports.items():
        step_time = statistics.median(report["window_seconds"]) / window_steps
        achieved = flops / step_time
        results[label] = {
            "step_time_s": step_time,
            "throughput_audio_s_per_s": audio_per_step / step_time,
            **{k: v for k, v in report.items() if k not in ("device", "audio_seconds_per_step", "peak_flops_bf16")},
            "achieved_flops_per_s": achieved,
            "fraction_of_peak": achieved / peak if peak else None,
        }
    return results


def _loss_match(reference: dict[str, Any], candidate: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The first step's losses of the two paths, relative to the reference's."""
    tolerance = 5e-2 if any(s["bf16_discriminators"] for s in settings.values()) else 1e-4
    differences = {
        k: abs(candidate["first_step_losses"][k] - reference["first_step_losses"][k])
        / max(abs(reference["first_step_losses"][k]), 1e-8)
        for k in CURVE_KEYS
    }
    return {
        "relative_difference": differences,
        "tolerance": tolerance,
        "within_tolerance": all(d <= tolerance for d in differences.values()),
    }


def _curves_match(
    reference: dict[str, Any], candidate: dict[str, Any], curve_steps: int, curve_window: int
) -> dict[str, Any]:
    if curve_steps >= MIN_CURVE_STEPS:
        return compare_curves(reference["loss_curves"], candidate["loss_curves"], curve_window)
    return {
        "checked": False,
        "steps": curve_steps,
        "reason": f"{curve_steps} steps are too few to compare loss curves (at least {MIN_CURVE_STEPS}); "
        "only the first step is compared",
    }


def format_table(report: dict[str, Any]) -> str:
    first, second = report["path_order"]
    a, b = report["paths"][first], report["paths"][second]
    lines = [
        f"device: {report['device']}   torch {report['torch']}   {report['audio_seconds_per_step']:g} audio-s per step",
        f"method: {report['method']}",
        f"{'':34}{first:>14}{second:>14}",
    ]

    def row(label: str, x: Any, y: Any, fmt: str = "{:.4g}") -> None:
        show = lambda v: "-" if v is None else fmt.format(v)  # noqa: E731
        lines.append(f"{label:34}{show(x):>14}{show(y):>14}")

    row("throughput (audio-s / s)", a["throughput_audio_s_per_s"], b["throughput_audio_s_per_s"])
    row("step time, median window (ms)", 1000 * a["step_time_s"], 1000 * b["step_time_s"])
    for phase in PHASES:
        row(f"  {phase} (ms)", 1000 * a["breakdown_s"][phase], 1000 * b["breakdown_s"][phase])
    row("host peak (MB)", a["host_peak_mb"], b["host_peak_mb"])
    row("device peak (MB)", a["device_peak_mb"], b["device_peak_mb"])
    row("fraction of bf16 peak", a["fraction_of_peak"], b["fraction_of_peak"])
    ratio = report["speedup"]
    lines.append(
        f"speedup {second} vs {first}: median {ratio['median']:.2f}x (min {ratio['min']:.2f}x, max "
        f"{ratio['max']:.2f}x over "
        f"{len(ratio['per_window_pair'])} interleaved window pairs); model GFLOPs per audio-second: "
        f"{report['model_flops_per_audio_second'] / 1e9:.3g}; first-step losses match: "
        f"{report['loss_match']['within_tolerance']}"
    )
    if report["warning"]:
        lines.append(f"WARNING: {report['warning']}")
    curves = report["loss_curves_match"]
    if curves.get("checked", True):
        lines.append(
            f"loss curves over {curves['steps']} steps ({curves['window']}-step windows): largest gap "
            f"{curves['max_difference_in_noise_units']:.2f} noise units; within noise: {curves['within_noise']}"
        )
    else:
        lines.append(f"loss curves not compared: {curves['reason']}")
    if report["evaluation"]:
        e = report["evaluation"]
        lines.append(
            f"evaluation (PESQ-WB, STOI, ESTOI) on {e['audio_seconds']:.0f} s of audio: "
            f"{e['seconds_1_worker']:.2f} s with 1 worker, {e['seconds_2_workers']:.2f} s with 2 "
            f"({e['speedup_2_vs_1']:.2f}x)"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m codec.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. experiment=hificodec_24k_240x_4cb trainer.batch_size=16"
    )
    parser.add_argument("--windows", type=int, default=6, help="timed windows per path, interleaved A B, B A, ...")
    parser.add_argument("--window-steps", type=int, default=5, help="steps per timed window")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, allocator)")
    parser.add_argument("--breakdown-steps", type=int, default=5, help="steps timed phase by phase (synchronizing)")
    parser.add_argument(
        "--eval-utterances", type=int, default=8, help="utterances for the evaluation speed test (0: skip)"
    )
    parser.add_argument(
        "--curve-window", type=int, default=20, help="steps per window when comparing the two loss curves"
    )
    parser.add_argument(
        "--paths",
        default="eager,fast",
        help=f"the two paths to compare, A,B from {sorted(PATH_OVERRIDES)} "
        "(eager,eager measures the machine's noise; plain,eager what the CPU "
        "optimizations of the step give)",
    )
    parser.add_argument("--out", default="bench.json", help="where to write the JSON report")
    args = parser.parse_args(argv)
    paths = args.paths.split(",")
    if len(paths) != 2 or any(p not in PATH_OVERRIDES for p in paths):
        parser.error(f"--paths must name two of {sorted(PATH_OVERRIDES)}, e.g. eager,fast")
    if args.warmup < 1 or args.windows < 2 or args.window_steps < 1:
        parser.error("--warmup and --window-steps must be at least 1, --windows at least 2")
    report = run(
        args.overrides,
        args.windows,
        args.window_steps,
        args.warmup,
        args.breakdown_steps,
        args.eval_utterances,
        args.curve_window,
        paths,
    )
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(format_table(report))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
