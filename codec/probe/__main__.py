"""``python -m codec.probe CHECKPOINT [key=value ...] [--out FILE.json] [--no-log]``

Token probes on any training checkpoint: encode the labelled split with the frozen codec, train
the speaker and content probes (and their masked variants), print the table, write JSON and add
the ``probe/*`` metrics to the run's MLflow run (found through ``status.json`` beside the run's
``checkpoints/``). ``key=value`` overrides ``probe.*`` (defaults: ``conf/probe/default.yaml``)
and ``data.*``, e.g. ``probe.steps=400`` or ``data.cache_dir=/abs/cache``. Relative data paths
in the checkpoint are relative to where train.py ran: run this from there.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from codec.config import ConfigError, build, compose_config
from codec.inference import load_codec
from codec.probe.labels import ProbeDataError
from codec.training.checkpoint import safe_load
from codec.training.status import read_status


def probe_config(checkpoint_config: dict, overrides: Sequence[str]) -> DictConfig:
    """The checkpoint's config with a probe node (its own, else the default one) and the overrides."""
    cfg = OmegaConf.create(checkpoint_config)
    if not cfg.get("probe"):
        cfg.probe = compose_config(["probe=default"]).probe
    bad = [o for o in overrides if "=" not in o or not o.split("=", 1)[0].startswith(("probe.", "data."))]
    if bad:
        raise ConfigError(f"overrides {bad} must read probe.KEY=VALUE or data.KEY=VALUE")
    merged = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    assert isinstance(merged, DictConfig)
    return merged


def log_to_run(
    run_dir: Path, tracking_uri: str | None, metrics: dict[str, float], step: int, wait_s: float = 60.0
) -> tuple[str | None, bool]:
    """Add ``metrics`` to the MLflow run that trained ``run_dir`` through the run's tracking journal,
    waiting at most ``wait_s`` for the server: what it does not take by then stays in the journal
    for the run's next start or ``codec-sweep sync``. Returns the run id (None when the run has no
    MLflow run) and whether the metrics were sent."""
    run_id = read_status(run_dir).get("run_id")
    if not run_id or not tracking_uri:
        return None, False
    import threading
    import time

    from codec.tracking.background import replay
    from codec.tracking.journal import Journal
    from codec.tracking.loggers import MLflowLogger
    from codec.training.run_lock import RunDirectoryBusy, RunLock

    try:
        lock = RunLock(run_dir).acquire()
    except RunDirectoryBusy as error:  # training now: its own sender owns the journal
        raise ProbeLogError(f"{run_dir} is training now; probe metrics not logged ({error})") from None
    try:
        journal = Journal(run_dir)
        if journal.run_id is None:  # a run tracked before journals existed: its status names the run
            journal.acknowledge(journal.sent, run_id)
        journal.append("metrics", metrics=metrics, step=step, time_ms=int(time.time() * 1000))
        remote = MLflowLogger(tracking_uri, experiment_name="")
        sender = threading.Thread(target=replay, args=(journal, remote), daemon=True)
        sender.start()
        sender.join(wait_s)
        return run_id, journal.sent == len(journal)
    finally:
        lock.release()


class ProbeLogError(RuntimeError):
    """The probe metrics could not be added to the run's tracking journal."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m codec.probe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path, help="a checkpoint written by train.py (runs/.../checkpoints/best.pt)")
    parser.add_argument("overrides", nargs="*", help="probe.KEY=VALUE or data.KEY=VALUE")
    parser.add_argument("--out", type=Path, help="write the metrics as JSON here")
    parser.add_argument("--no-log", action="store_true", help="do not add the metrics to the run's MLflow run")
    args = parser.parse_args(argv)
    try:
        if not args.checkpoint.is_file():
            raise FileNotFoundError(f"checkpoint {args.checkpoint} does not exist")
        state = safe_load(args.checkpoint)
        cfg = probe_config(state.get("config") or {}, args.overrides)
        codec = load_codec(args.checkpoint)
        metrics = build(cfg.probe, "probe").run(codec, build(cfg.data, "data"))
    except (ConfigError, ProbeDataError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        print(f"{key:<{width}}  {value:.4g}")
    if args.out:
        args.out.write_text(json.dumps(metrics, indent=2))
    if not args.no_log:
        run_dir = args.checkpoint.resolve().parent.parent
        tracking_uri = (cfg.get("logger") or {}).get("tracking_uri")
        try:
            run_id, sent = log_to_run(run_dir, tracking_uri, metrics, int(state.get("step", 0)))
        except ProbeLogError as error:
            print(f"warning: {error}", file=sys.stderr)
            return 0
        if run_id is None:
            print(f"no MLflow run recorded for {run_dir}; metrics not logged")
        elif sent:
            print(f"logged to MLflow run {run_id}")
        else:
            print(
                f"MLflow ({tracking_uri}) did not answer in time: the metrics wait in {run_dir / 'tracking'} "
                f"for the run's next start or `codec-sweep sync {run_dir}`"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
