"""Sweeps: launchers that register a sweep once in MLflow, skip finished runs and tolerate
failed jobs; the job-side signal and requeue handling; and the status table."""
