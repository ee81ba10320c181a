"""Train any codec composition: ``python train.py [overrides]`` or ``python train.py -m ...``.

The run directory (runs/<name>/<overrides>) is deterministic, so running the same command
again resumes from its last checkpoint.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from codec.config import ConfigError, register_resolvers
from codec.data import AudioFileError, DataError
from codec.training.trainer import NonFiniteLossError, Trainer

log = logging.getLogger("train")
USER_ERRORS = (ConfigError, DataError, AudioFileError, NonFiniteLossError)

register_resolvers()


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        status = Trainer(cfg, run_dir).fit()
    except USER_ERRORS as error:
        log.error("%s", error)
        raise SystemExit(f"error: {error}") from None
    best = status.get("best", {}) if isinstance(status, dict) else {}
    return best.get("mel_distance")


if __name__ == "__main__":
    sys.exit(main())
