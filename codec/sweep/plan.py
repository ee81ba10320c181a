"""Price a sweep before submitting it: every point's bitrate, token rate, parameters, training
FLOPs per audio-second and, from a measured throughput, its GPU-hours.

``python -m codec.sweep plan paper_table1 [overrides ...] [--bench bench.json | --flops-per-second F]``

Nothing is trained and no data is read: each point is composed and built, and one GAN training
step (discriminators and adversarial terms on) on one second of noise is counted with torch's
FLOP counter, once per design (seeds share it). FLOPs scale linearly with audio, so the count
times ``batch_size x segment_seconds x max_steps`` is the run's training compute. GPU-hours divide
that by the sustained FLOP/s the benchmark measured (its fast path's ``achieved_flops_per_s``),
which assumes other compositions reach a similar fraction of peak on that device.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from codec.config import build_codec, build_discriminator, build_loss, compose_config, count_parameters
from codec.config_search import option_file, options
from codec.training.distributed import DistributedContext
from codec.training.gan_step import GANStep
from codec.training.settings import TrainerSettings, adversarial_from


def expand_points(sweep: str, overrides: Sequence[str] = ()) -> list[list[str]]:
    """Every override list a ready sweep expands to (the basic sweeper's cross product), with
    ``overrides`` appended to each point."""
    path = option_file("sweep", sweep)
    if path is None:
        known = options("sweep")
        raise FileNotFoundError(f"no ready sweep named {sweep!r}; known: {', '.join(known)}")
    params = OmegaConf.load(path).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()])
    axes = [[f"{o.get_key_element()}={value}" for value in o.sweep_string_iterator()] for o in parsed]
    return [[f"+sweep={sweep}", *point, *overrides] for point in itertools.product(*axes)]


def training_flops_per_audio_second(cfg: Any) -> float:
    """FLOPs of one full GAN step (both updates, adversarial terms on) per second of training audio."""
    torch.manual_seed(0)
    codec, discriminator, loss = build_codec(cfg), build_discriminator(cfg), build_loss(cfg)
    settings = TrainerSettings.from_config(cfg.trainer)
    settings.bf16, settings.compile, settings.fused_optimizer, settings.cpu_bf16_discriminators = (
        False,
        False,
        False,
        False,
    )
    step = GANStep(codec, discriminator, loss, settings, torch.device("cpu"), DistributedContext())
    batch = 0.1 * torch.randn(1, 1, codec.sample_rate, generator=torch.Generator().manual_seed(0))
    counter = FlopCounterMode(display=False)
    with counter:
        step.train_step(batch, adversarial_from(settings))
    return float(counter.get_total_flops())


def plan(sweep: str, overrides: Sequence[str] = (), flops_per_second: float | None = None) -> list[dict[str, Any]]:
    """One row per run of the sweep, in launch order."""
    rows, designs = [], {}
    for point in expand_points(sweep, overrides):
        cfg = compose_config(point)
        design = tuple(
            o for o in point if not o.startswith("trainer.seed=")
        )  # seeds share a design's model and compute
        if design not in designs:
            designs[design] = design_facts(cfg)
        facts = designs[design]
        s = cfg.trainer
        audio_seconds = float(s.batch_size) * float(s.segment_seconds) * int(s.max_steps)
        total = facts["training_flops_per_audio_second"] * audio_seconds
        rows.append(
            {
                "run": " ".join(o for o in point[1:] if o not in overrides),
                **facts,
                "steps": int(s.max_steps),
                "audio_seconds_seen": audio_seconds,
                "training_pflops": total / 1e15,
                "gpu_hours": total / flops_per_second / 3600.0 if flops_per_second else None,
            }
        )
    return rows


def design_facts(cfg: Any) -> dict[str, Any]:
    """What a design costs and delivers, from the objects it builds."""
    codec = build_codec(cfg)
    return {
        "sample_rate": codec.sample_rate,
        "bitrate_kbps": codec.bitrate_kbps(),
        "tokens_per_second": codec.tokens_per_second(),
        "params_generator": count_parameters(codec),
        "params_discriminator": count_parameters(build_discriminator(cfg)),
        "training_flops_per_audio_second": training_flops_per_audio_second(cfg),
    }


def throughput_from_bench(path: Path) -> float:
    """The sustained FLOP/s the benchmark measured on its device (the fast path)."""
    report = json.loads(Path(path).read_text())
    paths = report["paths"]
    fast = paths.get("fast") or paths[report.get("path_order", list(paths))[-1]]
    return float(fast["achieved_flops_per_s"])


def format_plan(rows: list[dict[str, Any]], flops_source: str | None) -> str:
    header = ["run", "kbps", "tokens/s", "G params", "D params", "GFLOPs/audio-s", "steps", "PFLOPs", "GPU-hours"]
    table = [
        [
            r["run"],
            f"{r['bitrate_kbps']:g}",
            f"{r['tokens_per_second']:g}",
            f"{r['params_generator'] / 1e6:.2f} M",
            f"{r['params_discriminator'] / 1e6:.2f} M",
            f"{r['training_flops_per_audio_second'] / 1e9:.1f}",
            str(r["steps"]),
            f"{r['training_pflops']:.3g}",
            "-" if r["gpu_hours"] is None else f"{r['gpu_hours']:.3g}",
        ]
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in table]
    total_pflops = sum(r["training_pflops"] for r in rows)
    if flops_source:
        hours = sum(r["gpu_hours"] for r in rows)
        lines.append(
            f"{len(rows)} runs: {total_pflops:.3g} PFLOPs of training, about {hours:.3g} GPU-hours at {flops_source}"
        )
    else:
        lines.append(
            f"{len(rows)} runs: {total_pflops:.3g} PFLOPs of training; pass --bench BENCH.json (python -m "
            "codec.bench on the "
            "target GPU) or --flops-per-second for GPU-hours"
        )
    return "\n".join(lines)
