"""``train.py -m quantizer=grvq,rvq,fsq,simvq,residual_fsq,bsq`` trains six different models
through the CLI: each run's checkpoint holds the quantizer its option file names, at its exact
bits per frame."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from codec.config import build_codec
from codec.training.status import read_status
from tests.integration.sweep.test_local_sweeps import run

EXPECTED = {  # option: (class, groups x layers, bits per frame, learning rule or None)
    "grvq": ("GroupResidualVQ", (2, 2), 4 * 10.0, "gradient"),
    "rvq": ("GroupResidualVQ", (1, 8), 8 * 10.0, "ema"),
    "fsq": ("FiniteScalarQuantizer", (1, 1), math.log2(1000), None),
    "simvq": ("GroupResidualVQ", (1, 1), 10.0, "simvq"),
    "residual_fsq": ("FiniteScalarQuantizer", (1, 4), 4 * math.log2(1000), None),
    "bsq": ("BinarySphericalQuantizer", (1, 1), 10.0, None),
}


@pytest.mark.slow
def test_six_quantizer_families_train_through_the_cli(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    run(
        ["-m", "experiment=smoke", f"quantizer={','.join(EXPECTED)}", "trainer.max_steps=2",
         "trainer.eval_at_start=false", "logger=none", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path,
    )  # fmt: skip
    runs = {path.name.split("quantizer=")[1]: path for path in sweep_dir.glob("*quantizer=*")}
    assert sorted(runs) == sorted(EXPECTED)
    for option, (cls, layout, bits, rule) in EXPECTED.items():
        assert read_status(runs[option])["state"] == "finished", option
        state = torch.load(runs[option] / "checkpoints" / "latest.pt", weights_only=True)
        codec = build_codec(OmegaConf.create(state["config"]))
        codec.load_state_dict(state["codec"])  # the checkpoint is of exactly this built object
        quantizer = codec.quantizer
        facts = quantizer.facts()
        assert (type(quantizer).__name__, (quantizer.groups, quantizer.layers)) == (cls, layout), option
        assert quantizer.bits_per_frame() == pytest.approx(bits), option
        assert facts.get("rule") == rule, option
        assert codec.bitrate_kbps() == pytest.approx(bits * codec.frame_rate / 1000), option
