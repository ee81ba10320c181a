"""Where config files live: ``conf/``, the sweep and cluster folders mounted as groups, and any
folders a user adds through ``CODEC_CONFIG_PATH``.

Hydra finds files through its search path. The project's sweep definitions live in ``sweeps/``
and its cluster profiles in ``slurm/profiles/`` (where a reader looks for them) but are chosen as
the groups ``sweep`` and ``cluster`` (``+sweep=equal_codebooks_4``, ``+cluster=localhost``): a
search path entry ``codecgroup://<group>@<folder>`` serves one folder as one group (the
``ConfigSource`` in ``hydra_plugins/codec_sweep``). ``CODEC_CONFIG_PATH`` (folders separated by
``os.pathsep``) adds whole config trees, e.g. a lab's own quantizers, ahead of the project's.
The tools that list options (``codec info``, the generic option tests) read the same list.
"""

from __future__ import annotations

import os
from pathlib import Path

# Config group -> folder under the repository root that holds its files.
MOUNTED_GROUPS = {"sweep": "sweeps", "cluster": "slurm/profiles"}
EXTRA_PATH_VARIABLE = "CODEC_CONFIG_PATH"
MOUNT_SCHEME = "codecgroup"


def repository_root() -> Path:
    """The folder that holds ``conf/``, ``sweeps/`` and ``slurm/`` beside the ``codec`` package."""
    return Path(__file__).resolve().parent.parent


def config_dir() -> Path:
    """``conf/``: the primary config tree."""
    return repository_root() / "conf"


def extra_roots() -> list[Path]:
    """The config trees named by ``CODEC_CONFIG_PATH``, in order; a missing folder is an error."""
    roots = [Path(part).resolve() for part in os.environ.get(EXTRA_PATH_VARIABLE, "").split(os.pathsep) if part]
    missing = [str(root) for root in roots if not root.is_dir()]
    if missing:
        raise FileNotFoundError(f"{EXTRA_PATH_VARIABLE} names folder(s) that do not exist: {', '.join(missing)}")
    return roots


def mounted_folder(group: str) -> Path | None:
    folder = MOUNTED_GROUPS.get(group)
    return None if folder is None else repository_root() / folder


def group_folders(group: str) -> list[Path]:
    """Every folder that may hold options of ``group``, in Hydra's lookup order."""
    folders = [root / group for root in extra_roots()] + [config_dir() / group]
    mounted = mounted_folder(group)
    if mounted is not None:
        folders.append(mounted)
    return [folder for folder in folders if folder.is_dir()]


def option_file(group: str, option: str) -> Path | None:
    """The file Hydra would load for ``group=option`` (the first on the search path), or None."""
    for folder in group_folders(group):
        path = folder / f"{option}.yaml"
        if path.is_file():
            return path
    return None


def options(group: str) -> list[str]:
    """The option names of ``group`` across the search path."""
    return sorted({path.stem for folder in group_folders(group) for path in folder.glob("*.yaml")})


def search_path_entries() -> list[str]:
    """What the search path plugin adds, ahead of nothing Hydra itself needs."""
    entries = [f"file://{root}" for root in extra_roots()]
    entries += [f"{MOUNT_SCHEME}://{group}@{repository_root() / folder}" for group, folder in MOUNTED_GROUPS.items()]
    return entries
