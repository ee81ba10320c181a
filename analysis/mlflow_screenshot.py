"""Screenshot a sweep in the MLflow UI with a real headless browser, for docs and reviews.

    python -m analysis.mlflow_screenshot --store sqlite:///mlflow.db --experiment demo --out docs.png

Starts ``mlflow server`` on a free local port against the store, waits until it answers, opens
the experiment's runs page (``--compare``: the comparison of its newest sweep's runs) in headless
Chromium (``--browser``, Debian's ``chromium``) and writes a PNG.
Nothing leaves the machine: Chromium runs with its background networking off.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_server(url: str, server: subprocess.Popen, timeout: float) -> None:
    """Until the server answers its health check; fails at once if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"mlflow server at {url} did not answer within {timeout:.0f} s")


def experiment_id(url: str, name: str) -> str:
    import json

    query = urllib.request.Request(
        f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name={urllib.parse.quote(name)}"
    )
    with urllib.request.urlopen(query, timeout=10) as response:
        return json.loads(response.read())["experiment"]["experiment_id"]


def compare_page(url: str, experiment_key: str, store: str) -> str:
    """The UI's side-by-side comparison of every child run of the experiment's newest sweep."""
    import json

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([experiment_key], order_by=["attributes.start_time DESC"])
    parent = next((r for r in runs if r.data.tags.get("role") == "sweep"), None)
    if parent is None:
        raise LookupError(f"experiment {experiment_key} has no sweep (a parent run tagged role=sweep)")
    children = [r.info.run_id for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    query = urllib.parse.urlencode({"runs": json.dumps(children), "experiments": json.dumps([experiment_key])})
    return f"{url}/#/compare-runs?{query}"


def screenshot(
    store: str, experiment: str, out: Path, browser: str, size: str, wait_ms: int, compare: bool = False
) -> Path:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as profile:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                store,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_server(url, server, timeout=120)
            key = experiment_id(url, experiment)
            page = compare_page(url, key, store) if compare else f"{url}/#/experiments/{key}/runs"
            subprocess.run(
                [
                    browser,
                    *CHROMIUM_FLAGS,
                    f"--user-data-dir={profile}",
                    f"--window-size={size}",
                    f"--virtual-time-budget={wait_ms}",
                    f"--screenshot={out.resolve()}",
                    page,
                ],
                check=True,
                capture_output=True,
                timeout=180,
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.mlflow_screenshot",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--store", default="sqlite:///mlflow.db", help="MLflow backend store URI")
    parser.add_argument("--experiment", required=True, help="experiment name, e.g. demo")
    parser.add_argument("--out", default="mlflow_runs.png")
    parser.add_argument("--browser", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--size", default="1600,900", help="window width,height in pixels")
    parser.add_argument("--compare", action="store_true", help="the comparison page of the newest sweep's child runs")
    parser.add_argument("--wait-ms", type=int, default=20000, help="virtual time for the page's scripts to render")
    args = parser.parse_args(argv)
    path = screenshot(args.store, args.experiment, Path(args.out), args.browser, args.size, args.wait_ms, args.compare)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
