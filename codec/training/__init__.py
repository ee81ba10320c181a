"""GAN training of a codec: settings, checkpoints, run identity and the training loop."""

from codec.training.checkpoint import CheckpointManager, atomic_torch_save
from codec.training.identity import run_identity
from codec.training.settings import TrainerSettings

__all__ = ["CheckpointManager", "TrainerSettings", "atomic_torch_save", "run_identity"]
