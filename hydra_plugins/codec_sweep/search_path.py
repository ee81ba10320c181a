"""Hydra plugins that put the project's other config folders on the search path (see
:mod:`codec.config_search`): ``sweeps/`` as the group ``sweep``, ``slurm/profiles/`` as
``cluster``, and the trees of ``CODEC_CONFIG_PATH``."""

from __future__ import annotations

import os

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

from codec.config_search import MOUNT_SCHEME, extra_roots, search_path_entries


class CodecSearchPath(SearchPathPlugin):
    """Adds the mounted groups after ``conf/`` and the user's trees before it."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        user_trees = {f"file://{root}" for root in extra_roots()}
        for entry in search_path_entries():
            if entry in user_trees:
                search_path.prepend(provider="codec-user", path=entry)
            else:
                search_path.append(provider="codec", path=entry)


class MountedGroupSource(ConfigSource):
    """One folder served as one config group: ``codecgroup://<group>@<folder>``."""

    def __init__(self, provider: str, path: str) -> None:
        super().__init__(provider=provider, path=path)
        self.group, _, self.folder = self.path.partition("@")

    @staticmethod
    def scheme() -> str:
        return MOUNT_SCHEME

    def _file(self, config_path: str) -> str | None:
        group, _, name = config_path.partition("/")
        if group != self.group or not name:
            return None
        return os.path.join(self.folder, self._normalize_file_name(name))

    def load_config(self, config_path: str) -> ConfigResult:
        path = self._file(config_path)
        if path is None or not os.path.isfile(path):
            raise ConfigLoadError(f"Config not found : {config_path} (group {self.group} is {self.folder})")
        with open(path, encoding="utf-8") as handle:
            header = ConfigSource._get_header_dict(handle.read(512))
            handle.seek(0)
            config = OmegaConf.load(handle)
        return ConfigResult(config=config, path=f"{self.scheme()}://{self.path}", provider=self.provider, header=header)

    def available(self) -> bool:
        return os.path.isdir(self.folder)

    def is_group(self, config_path: str) -> bool:
        return config_path in ("", self.group) and self.available()

    def is_config(self, config_path: str) -> bool:
        path = self._file(config_path)
        return path is not None and os.path.isfile(path)

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        files: list[str] = []
        if config_path == "":
            return [self.group] if results_filter in (None, ObjectType.GROUP) and self.available() else []
        if config_path != self.group:
            return files
        for name in os.listdir(self.folder):
            self._list_add_result(
                files=files, file_path=f"{self.group}/{name}", file_name=name, results_filter=results_filter
            )
        return sorted(set(files))
