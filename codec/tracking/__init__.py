"""Experiment tracking: MLflow (local SQLite store or server) or nothing."""

from codec.tracking.background import BackgroundMLflowLogger
from codec.tracking.loggers import MLflowLogger, NullLogger, RunLogger, flatten_config

__all__ = ["BackgroundMLflowLogger", "MLflowLogger", "NullLogger", "RunLogger", "flatten_config"]
