"""``codec.sweep plan``: a sweep priced before it is submitted, from the objects it would build."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from codec.config import build_codec, compose_config
from codec.sweep.plan import expand_points, training_flops_per_audio_second


def test_plan_prices_every_point_from_the_built_codec_and_a_measured_rate() -> None:
    rate = 2.5e13
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "codec.sweep",
            "plan",
            "equal_codebooks_4",
            "experiment=smoke",
            "trainer.max_steps=1000",
            "--flops-per-second",
            str(rate),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout)
    points = expand_points("equal_codebooks_4", ["experiment=smoke", "trainer.max_steps=1000"])
    assert len(rows) == len(points) == 9
    by_design: dict[str, set[float]] = {}
    for row, point in zip(rows, points):
        cfg = compose_config(point)
        codec = build_codec(cfg)
        assert row["bitrate_kbps"] == codec.bitrate_kbps() and row["tokens_per_second"] == codec.tokens_per_second()
        assert row["params_generator"] == sum(p.numel() for p in codec.parameters())
        audio = cfg.trainer.batch_size * cfg.trainer.segment_seconds * 1000
        assert row["audio_seconds_seen"] == pytest.approx(audio) and row["steps"] == 1000
        assert row["gpu_hours"] == pytest.approx(row["training_flops_per_audio_second"] * audio / rate / 3600)
        by_design.setdefault(row["run"].split(" trainer.seed=")[0], set()).add(row["training_flops_per_audio_second"])
    assert len(by_design) == 3 and all(len(v) == 1 for v in by_design.values())  # seeds share their design's count


def test_training_flops_count_a_whole_gan_step_and_grow_with_the_discriminators() -> None:
    cfg = compose_config(["experiment=smoke"])
    one = training_flops_per_audio_second(cfg)
    more = training_flops_per_audio_second(compose_config(["experiment=smoke", "discriminator=[msstft,mpd]"]))
    assert one > 1e6 and more > 1.2 * one  # MPD's forward and backward are in the count


def test_paper_table1_plan_expands_every_preset_with_seeds() -> None:
    points = expand_points("paper_table1")
    presets = {o.split("=", 1)[1] for p in points for o in p if o.startswith("experiment=")}
    assert len(points) == 3 * len(presets) == 21
    assert {o for p in points for o in p if o.startswith("trainer.seed=")} == {
        "trainer.seed=1",
        "trainer.seed=2",
        "trainer.seed=3",
    }


def test_plan_names_an_unknown_sweep() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "codec.sweep", "plan", "no_such_sweep"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "no ready sweep named 'no_such_sweep'; known:" in result.stderr
    assert "paper_table1" in result.stderr
