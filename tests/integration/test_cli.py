"""The ``codec info`` command line: paper bitrates per preset, clear errors, preset keys named."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.parametrize(
    "preset,kbps",
    [
        ("hificodec_24k_240x_4cb", 4.0),
        ("hificodec_24k_320x_4cb", 3.0),
        ("hificodec_16k_320x_4cb", 2.0),
        ("encodec_24k_320x_8cb", 6.0),
        ("dac_44k_512x_9cb", 7.75),
    ],
)
def test_info_cli_reports_paper_bitrates(preset: str, kbps: float) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "codec", "info", f"experiment={preset}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(result.stdout)
    assert round(info["bitrate_kbps"], 2) == kbps
    for key in (
        "sample_rate",
        "frame_rate",
        "groups",
        "layers",
        "codebooks",
        "codebook_size",
        "tokens_per_second",
        "params_generator",
        "params_discriminator",
    ):
        assert key in info
    assert info["codebooks"] == info["groups"] * info["layers"]
    assert info["tokens_per_second"] == pytest.approx(info["frame_rate"] * info["codebooks"])
    assert info["params_generator"] > 1_000_000 and info["params_discriminator"] > 100_000


def test_info_cli_exits_with_clear_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "codec", "info", "quantizer.groups=3"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "quantizer.groups=3" in result.stderr


def test_info_names_preset_keys_over_a_chosen_option() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "codec", "info", "experiment=encodec_24k_320x_12cb", "quantizer=single_vq"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert (
        "experiment=encodec_24k_320x_12cb sets quantizer.layers over your choice quantizer=single_vq" in result.stderr
    )
    # An explicit key on the command line wins and is not reported.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "codec",
            "info",
            "experiment=encodec_24k_320x_12cb",
            "quantizer=single_vq",
            "quantizer.layers=1",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "sets" not in result.stderr and '"layers": 1' in result.stdout
