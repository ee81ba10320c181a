"""The same utterance, original and as reconstructed by each run, as HTML audio players."""

from __future__ import annotations

import base64
import html
import re
import tempfile
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from analysis.tables import run_labels

_STEP = re.compile(r"(test|valid)_step_(\d+)$")


def latest_sample_dir(client: MlflowClient, run_id: str) -> str | None:
    """The artifact folder of the run's last evaluation samples (test preferred over valid)."""
    folders = [item.path for item in client.list_artifacts(run_id, "samples") if item.is_dir]
    ranked = sorted((m.group(1) == "test", int(m.group(2)), f) for f in folders if (m := _STEP.search(f)))
    return ranked[-1][2] if ranked else None


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def audio_comparison_html(frame: pd.DataFrame, utterance: int = 0, tracking_uri: str | None = None) -> str:
    """A self-contained HTML table: label, audio player and spectrogram for each run."""
    client = MlflowClient(tracking_uri=tracking_uri or frame.attrs.get("tracking_uri"))
    labels = run_labels(frame)
    rows, original = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for label, run_id in zip(labels, frame["run_id"]):
            folder = latest_sample_dir(client, run_id)
            if folder is None:
                rows.append(f"<tr><td>{html.escape(label)}</td><td colspan=2>no samples logged</td></tr>")
                continue
            local = Path(client.download_artifacts(run_id, folder, tmp))
            wav = local / f"{utterance:02d}_reconstruction.wav"
            png = local / f"{utterance:02d}_spectrogram.png"
            if original is None and (local / f"{utterance:02d}_original.wav").exists():
                original = _data_uri(local / f"{utterance:02d}_original.wav", "audio/wav")
            audio = f'<audio controls src="{_data_uri(wav, "audio/wav")}"></audio>' if wav.exists() else "-"
            image = f'<img src="{_data_uri(png, "image/png")}" width="480">' if png.exists() else "-"
            rows.append(f"<tr><td>{html.escape(label)}</td><td>{audio}</td><td>{image}</td></tr>")
    head = (
        f'<tr><td><b>original</b></td><td><audio controls src="{original}"></audio></td><td></td></tr>'
        if original
        else ""
    )
    return (
        "<table class='audio'><tr><th>run</th><th>reconstruction</th><th>spectrogram (original | "
        "reconstruction)</th></tr>" + head + "".join(rows) + "</table>"
    )
