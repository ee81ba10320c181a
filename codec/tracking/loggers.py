"""Run loggers. The trainer talks to this small interface, never to MLflow directly.

Resuming re-opens the same MLflow run, and steps at or below the last step already logged
are dropped, so a resumed or requeued job logs no step twice.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from codec.tracking.store import TrackingStoreError, artifact_location, prepare_sqlite_store, sqlite_path

log = logging.getLogger(__name__)

PARAM_VALUE_LIMIT = 6000
# The metric whose history tells a resumed run the last step already logged.
STEP_MARKER_METRIC = "train/loss_generator"


def flatten_config(config: Mapping[str, Any]) -> dict[str, str]:
    """Nested config -> {"a.b.c": "value"} as MLflow params, cut to MLflow's length limit."""
    from codec.config import flatten

    flat = {}
    for name, value in flatten(config).items():
        text = str(value)
        flat[name] = text if len(text) <= PARAM_VALUE_LIMIT else text[: PARAM_VALUE_LIMIT - 3] + "..."
    return flat


def open_client(tracking_uri: str):
    """An ``MlflowClient`` on a store that is ready; a local SQLite store is first made whole
    (``codec.tracking.store``: built aside and linked in whole, under the store's lock)."""
    from mlflow.tracking import MlflowClient

    path = sqlite_path(tracking_uri)
    try:
        if path is not None:
            prepare_sqlite_store(path)
        client = MlflowClient(tracking_uri=tracking_uri)
        client.search_experiments(max_results=1)
    except TrackingStoreError:
        raise
    except Exception as error:
        raise TrackingStoreError(
            f"logger.tracking_uri={tracking_uri}: the MLflow store cannot be opened ({type(error).__name__}: {error})"
        ) from error
    return client


class RunLogger:
    """What the trainer needs from a tracker; the base class logs nothing."""

    run_id: str | None = None

    def attach(self, run_dir: Path) -> None:
        """Called once the run directory is known, before :meth:`start`."""

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has opened (or queued the opening of) the run."""
        return self.run_id is not None

    def close(self) -> None:
        """The run is over: deliver what is pending, within the logger's own time limit."""

    def start(
        self, run_name: str, params: Mapping[str, str], tags: Mapping[str, str], run_id: str | None = None
    ) -> str | None:
        return None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def finish(self, status: str = "FINISHED") -> None:
        pass

    def describe(self) -> str:
        """Where this run is tracked, for the start banner."""
        return "tracking: none (logger=none)"

    def where_to_look(self) -> list[str]:
        """What to open to see the run, for the closing lines."""
        return []


class NullLogger(RunLogger):
    """``logger=none``: metrics go to the console log and the run directory only."""


class MLflowLogger(RunLogger):
    """MLflow through an explicit client (no fluent global state).

    ``experiment_id`` and ``parent_run_id`` are set by a sweep's launching side so that many
    concurrent jobs neither race to create the experiment nor land in "Default".
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        experiment_id: str | None = None,
        parent_run_id: str | None = None,
        sweep_id: str | None = None,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.extra_tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.run_name = run_name
        self.experiment_name = experiment_name
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.sweep_id = sweep_id
        self._client = None
        self.run_id: str | None = None
        self._last_logged_step = -1

    @property
    def client(self):
        """Opened at first use (not at construction), so the store is prepared under its lock."""
        if self._client is None:
            self._client = open_client(self.tracking_uri)
        return self._client

    def _experiment(self) -> str:
        if self.experiment_id:
            return str(self.experiment_id)
        return ensure_experiment(
            self.client, self.experiment_name, artifact_location(self.tracking_uri, self.experiment_name)
        )

    def start(
        self, run_name: str, params: Mapping[str, str], tags: Mapping[str, str], run_id: str | None = None
    ) -> str:
        if run_id is not None:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            history = self.client.get_metric_history(run_id, STEP_MARKER_METRIC)
            self._last_logged_step = max((m.step for m in history), default=-1)
            # A run first recorded as a failure before training (bad config) lacks the params.
            known = self.client.get_run(run_id).data.params
            self._log_params({k: v for k, v in params.items() if k not in known})
            self.set_tags(tags)  # e.g. a raised step budget (config.trainer.max_steps)
            log.info("resuming MLflow run %s (last logged step %d)", run_id, self._last_logged_step)
            return run_id
        all_tags = {**self.extra_tags, **tags}
        if self.parent_run_id:
            all_tags["mlflow.parentRunId"] = str(self.parent_run_id)
        if self.sweep_id:
            all_tags["sweep_id"] = str(self.sweep_id)
        self.experiment_id = self._experiment()
        key = all_tags.get("run_key")
        found = self.client.search_runs([self.experiment_id], f"tags.run_key = '{key}'", max_results=1) if key else []
        if found:  # created by an earlier send whose acknowledgement was lost: the same run, once
            self.run_id = found[0].info.run_id
            return self.run_id
        run = self.client.create_run(self.experiment_id, run_name=self.run_name or run_name, tags=all_tags)
        self.run_id = run.info.run_id
        self._log_params(params)
        return self.run_id

    def _log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int, timestamp_ms: int | None = None) -> None:
        """``timestamp_ms`` keeps a replayed record identical to its first send, so MLflow stores it once."""
        from mlflow.entities import Metric

        if self.run_id is None or step <= self._last_logged_step:
            return
        now = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        items = [
            Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and math.isfinite(float(v))
        ]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.run_id is not None:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        if self.run_id is not None:
            items = [RunTag(key, str(value)) for key, value in tags.items()]
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, tags=items[i : i + 100])

    def finish(self, status: str = "FINISHED") -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)

    def describe(self) -> str:
        return f"MLflow {self.tracking_uri} run {self.run_id}"

    def where_to_look(self) -> list[str]:
        if self.run_id is None:
            return []
        experiment = self.client.get_run(self.run_id).info.experiment_id
        return [
            f"mlflow ui --backend-store-uri {self.tracking_uri}   then  http://127.0.0.1:5000/#/experiments/{experiment}/runs/{self.run_id}"
        ]


# MLflow 3 opens an experiment on its GenAI overview unless told it holds model training runs.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def ensure_experiment(client, name: str, location: str | None = None) -> str:
    """Id of the experiment ``name``, created if missing (tolerating a concurrent creator) with its
    artifacts at ``location``, and tagged so the UI opens it in its model-training view."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            experiment_id = client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
        except Exception:
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
            experiment_id = experiment.experiment_id
    else:
        experiment_id = experiment.experiment_id
    if experiment is None or experiment.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND["mlflow.experimentKind"]:
        for key, value in EXPERIMENT_KIND.items():
            client.set_experiment_tag(experiment_id, key, value)
    return experiment_id
