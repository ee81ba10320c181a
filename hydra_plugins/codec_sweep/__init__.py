"""Hydra only instantiates launchers defined under the ``hydra_plugins`` namespace; these thin
subclasses expose the sweep-aware launchers of :mod:`codec.sweep.launchers` there."""

from codec.sweep import launchers as _impl


class LocalSweepLauncher(_impl.LocalSweepLauncher):
    """Sequential jobs on this machine, sweep-aware."""


class SubmititLocalSweepLauncher(_impl.SubmititLocalSweepLauncher):
    """submitit local executor, sweep-aware."""


class SlurmSweepLauncher(_impl.SlurmSweepLauncher):
    """SLURM job arrays through submitit, sweep-aware."""
