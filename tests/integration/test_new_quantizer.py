"""The promise "a new quantizer is one class plus one YAML file": a toy quantizer in a package of
its own, on the search path through ``CODEC_CONFIG_PATH``, is picked up by every generic test
(options built as their file says, one training step, ``codec info``) with no edit to them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import HANG_GUARD_S, REPO_ROOT

TOY_QUANTIZER = '''
import torch
from einops import rearrange
from torch import nn

from codec.quantization.base import BaseQuantizer, QuantizedResult
from codec.quantization.stats import codebook_stats


class SignQuantizer(BaseQuantizer):
    """Each group is projected to ``bits`` channels and keeps only their signs (straight-through)."""

    def __init__(self, dim: int, groups: int = 1, bits: int = 4) -> None:
        super().__init__()
        self.dim, self.groups, self.layers, self.bits = dim, groups, 1, bits
        self.codebook_size = 2**bits
        self.in_proj = nn.Conv1d(dim, groups * bits, 1, groups=groups)
        self.out_proj = nn.Conv1d(groups * bits, dim, 1, groups=groups)
        self.register_buffer("powers", 2 ** torch.arange(bits), persistent=False)

    def codebook_shapes(self):
        return [(self.codebook_size, self.bits)] * self.groups

    def _signs(self, latent):
        z = rearrange(self.in_proj(latent), "b (g w) t -> b g t w", g=self.groups)
        return z + (torch.where(z > 0, 1.0, -1.0) - z).detach()

    def _out(self, signs):
        return self.out_proj(rearrange(signs, "b g t w -> b (g w) t"))

    def _codes(self, signs):
        return ((signs.detach() > 0).long() * self.powers).sum(-1)

    def forward(self, latent, n_layers=None):
        self.check_layers(n_layers)
        signs = self._signs(latent)
        codes = self._codes(signs)
        zero = latent.new_zeros(())
        return QuantizedResult(self._out(signs), codes, {"total": zero}, codebook_stats(codes, self.codebook_size))

    @torch.no_grad()
    def encode(self, latent, n_layers=None):
        self.check_layers(n_layers)
        return self._codes(self._signs(latent))

    def decode(self, codes):
        bits = torch.div(codes.unsqueeze(-1), self.powers, rounding_mode="floor") % 2
        return self._out(bits.float() * 2 - 1)
'''

TOY_YAML = """# A toy: 2 groups of 4 sign bits (8 bits per frame).
_target_: toy_quantizers.SignQuantizer
dim: ${encoder.dimension}
groups: 2
bits: 4
"""


def test_a_quantizer_from_its_own_package_passes_every_generic_test(tmp_path: Path) -> None:
    (tmp_path / "toy_quantizers").mkdir()
    (tmp_path / "toy_quantizers" / "__init__.py").write_text(TOY_QUANTIZER)
    (tmp_path / "conf" / "quantizer").mkdir(parents=True)
    (tmp_path / "conf" / "quantizer" / "toy_sign.yaml").write_text(TOY_YAML)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "CODEC_CONFIG_PATH": str(tmp_path / "conf"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "toy_sign", "-rA",
         "tests/unit/test_options.py", "tests/unit/test_config.py"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    passed = re.findall(r"^PASSED (\S+)", result.stdout, re.MULTILINE)
    # Built as its file says under each preset of the options test, and one training step.
    assert sum("test_option_builds_what_its_file_says" in test for test in passed) == 3, passed
    assert any("test_every_model_option_trains_one_step" in test for test in passed), passed

    info = subprocess.run(
        [sys.executable, "-m", "codec", "info", "quantizer=toy_sign"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert info.returncode == 0, info.stderr[-2000:]
    assert "SignQuantizer" in info.stdout and re.search(r"bits_per_frame\W+8(\.0)?\b", info.stdout), info.stdout
