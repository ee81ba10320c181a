"""Experiment tracking: MLflow (local SQLite store or server) or nothing."""

from codec.tracking.loggers import MLflowLogger, NullLogger, RunLogger, flatten_config

__all__ = ["MLflowLogger", "NullLogger", "RunLogger", "flatten_config"]
