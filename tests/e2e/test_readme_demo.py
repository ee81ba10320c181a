"""The README's main job end to end: the demo trains, learns on held-out voices and logs to
MLflow; the bitrate ladder starts from it; evaluate.py and the encode/decode commands use it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import REPO_ROOT
from tests.integration.training.test_train_cli import train

TRAIN = str(REPO_ROOT / "train.py")


def all_artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    files = []
    for item in client.list_artifacts(run_id, path):
        files += all_artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return files


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> dict:
    """The README's main job, `python train.py` with nothing else: speech corpus, local store."""
    root = tmp_path_factory.mktemp("demo")
    train([], cwd=root)
    run_dir = root / "runs" / "demo" / "default"
    corpus = next((root / ".cache" / "demo_corpus").glob("speech_sr16000_*"))
    return {
        "root": root,
        "run_dir": run_dir,
        "corpus": corpus,
        "status": json.loads((run_dir / "status.json").read_text()),
        "client": MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}"),
    }


@pytest.mark.slow
def test_readme_demo_command_trains_and_logs_to_mlflow(demo_run: dict) -> None:
    """Demo data, local store, checkpoints, artifacts, the metric packages."""
    checkpoints = demo_run["run_dir"] / "checkpoints"
    assert (checkpoints / "latest.pt").exists() and (checkpoints / "best.pt").exists()
    state = torch.load(checkpoints / "latest.pt", weights_only=True)
    assert state["step"] == 1800
    status = demo_run["status"]
    assert status["state"] == "finished" and status["step"] == 1800

    client = demo_run["client"]
    experiment = client.get_experiment_by_name("demo")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["encoder.channels"] == "16" and run.data.params["quantizer.groups"] == "2"
    assert run.data.params["quantizer.rule"] == "ema"
    history = client.get_metric_history(run.info.run_id, "train/loss_generator")
    assert [m.step for m in history] == list(range(50, 1801, 50))
    # Codebooks do not churn: after step 100 the re-drawn share per step stays under 1% on average, and
    # bursts (the most any one codebook re-draws in a step since the last log line) are rare and small.
    # Measured: one burst of 9% at step 350, every other log step under 3.2%.
    replaced = client.get_metric_history(run.info.run_id, "train/codebook_replaced_fraction_max")
    later = [m.value for m in replaced if m.step > 100]
    assert max(later) < 0.2 and sum(v > 0.05 for v in later) <= 2, [(m.step, m.value) for m in replaced]
    mean = client.get_metric_history(run.info.run_id, "train/codebook_replaced_fraction_mean")
    later_mean = [m.value for m in mean if m.step > 100]
    # The claim above, as stated: under 1% on average. Single log steps vary with the thread count's
    # float rounding (1.4% seen once with one thread per process), so they get the burst bound.
    assert sum(later_mean) / len(later_mean) < 0.01 and max(later_mean) < 0.05, later_mean
    for key in (
        "valid/pesq_wb",
        "valid/stoi",
        "valid/wer",
        "valid/wer_reference",
        "test/pesq_wb",
        "test/estoi",
        "best/mel_distance",
        "train/throughput_audio_seconds_per_second",
        "train/grad_norm_generator",
        "valid/codebook_00_perplexity",
    ):
        assert key in run.data.metrics, key
    assert "train/loss_discriminator" not in run.data.metrics  # reconstruction-only: the discriminators never ran
    assert (
        run.data.tags["metric_package.pocketsphinx"][0].isdigit() and run.data.tags["metric_package.pesq"][0].isdigit()
    )
    artifacts = all_artifacts(client, run.info.run_id)
    assert "resolved_config.yaml" in artifacts and "git_commit.txt" in artifacts
    assert any(a.endswith("_reconstruction.wav") for a in artifacts)
    assert any(a.endswith("_original.wav") for a in artifacts)
    assert any(a.endswith("_spectrogram.png") for a in artifacts)

    # Running the same command again finds the run finished and does nothing.
    again = train([], cwd=demo_run["root"])
    assert "already finished" in again.stderr + again.stdout
    assert len(client.search_runs([experiment.experiment_id])) == 1


@pytest.mark.slow
def test_demo_learns_on_held_out_voices(demo_run: dict) -> None:
    """Held-out mel distance falls far below the untrained model's, codebooks stay in use, and
    reconstructions follow their input: two utterances decode to clearly different outputs."""
    client, run_id = demo_run["client"], demo_run["status"]["run_id"]
    valid = {m.step: m.value for m in client.get_metric_history(run_id, "valid/mel_distance")}
    assert sorted(valid) == [0, 600, 1200, 1800]
    assert valid[1800] < valid[1200] < valid[600] < valid[0]
    assert valid[1800] < 0.5 * valid[0], valid  # measured: 0.4x on 2 idle cores (README)
    test = demo_run["status"]["test"]
    assert test["stoi"] > 0.7, test
    perplexities = [client.get_run(run_id).data.metrics[f"test/codebook_{i:02d}_perplexity"] for i in range(4)]
    assert min(perplexities) > 50, perplexities  # of 1024 codes: no collapsed codebook

    from codec.evaluation.metrics import SignalMetrics
    from codec.inference import load_codec

    codec = load_codec(demo_run["run_dir"] / "checkpoints" / "best.pt")
    first, second = sorted((demo_run["corpus"] / "test").glob("*.wav"))[:2]
    inputs = [torch.from_numpy(sf.read(str(p), dtype="float32")[0]) for p in (first, second)]
    length = min(x.shape[-1] for x in inputs)
    inputs = [x[:length] for x in inputs]
    with torch.no_grad():
        outputs = [codec(x.view(1, 1, -1)).audio.flatten()[:length] for x in inputs]
    mel = SignalMetrics(16000)
    own = [mel(x, y, ("mel_distance",))["mel_distance"] for x, y in zip(inputs, outputs)]
    crossed = [mel(inputs[1 - i], outputs[i], ("mel_distance",))["mel_distance"] for i in range(2)]
    assert max(own) < 0.7 * min(crossed), (own, crossed)
    assert abs(float(torch.corrcoef(torch.stack(outputs))[0, 1])) < 0.5


@pytest.mark.slow
def test_demo_bitrate_ladder_starts_from_the_demo_and_more_codebooks_reconstruct_better(demo_run: dict) -> None:
    """The README's ladder, cut to its ends (0.2 and 0.8 kbps, one seed, 150 steps), through the
    sweep command in the demo's own directory: each point warm-starts from runs/demo/default and
    builds its own quantizer; four residual layers reconstruct clearly better than one."""
    root = demo_run["root"]
    train(
        [
            "-m",
            "+sweep=demo_bitrate_ladder",
            "quantizer.layers=1,4",
            "trainer.seed=1",
            "trainer.max_steps=150",
            "eval.metrics=[mel_distance]",
        ],
        cwd=root,
    )
    sweep = root / "runs" / "multirun" / "demo_bitrate_ladder"
    best = {}
    for layers in (1, 4):
        run_dir = sweep / f"quantizer.layers={layers},trainer.seed=1"
        status = json.loads((run_dir / "status.json").read_text())
        assert status["state"] == "finished" and status["step"] == 150, status
        assert "warm start: encoder, decoder from " in (run_dir / "train.log").read_text()
        tags = demo_run["client"].get_run(status["run_id"]).data.tags
        assert tags["warm_start"].startswith("encoder,decoder from ") and "(step 1800)" in tags["warm_start"]
        from codec.inference import load_codec

        quantizer = load_codec(run_dir / "checkpoints" / "latest.pt").quantizer
        assert (quantizer.groups, quantizer.layers, quantizer.codebook_size) == (2, layers, 4)
        best[layers] = status["best"]["mel_distance"]
    # measured: 0.94 (0.2 kbps) against 0.75 (0.8 kbps) at step 150 on 2 idle cores
    assert best[4] < best[1] - 0.08, best


@pytest.mark.slow
def test_evaluate_script_scores_a_checkpoint_on_every_file(demo_run: dict) -> None:
    checkpoint = demo_run["run_dir"] / "checkpoints" / "best.pt"
    out = demo_run["root"] / "eval.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "evaluate.py"),
            f"checkpoint={checkpoint}",
            "data=folder",
            f"data.path={demo_run['corpus'] / 'test'}",
            "split=all",
            f"output={out}",
            "eval.metrics=[pesq_wb,stoi,mel_distance,wer]",
            f"paths.cache={demo_run['root'] / '.cache'}",
        ],
        cwd=demo_run["root"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pesq_wb" in result.stdout and "wer_reference" in result.stdout
    report = json.loads(out.read_text())
    files = sorted(str(p) for p in (demo_run["corpus"] / "test").glob("*.wav"))
    assert report["utterances"] == len(files) == 8
    assert sorted(u["name"] for u in report["per_utterance"]) == files
    assert {"pesq_wb", "stoi", "mel_distance", "wer", "wer_reference", "bitrate_kbps"} <= set(report["metrics"])
    assert report["packages"]["pocketsphinx"][0].isdigit()


@pytest.mark.slow
def test_evaluate_script_scores_decoded_folders_without_a_checkpoint(demo_run: dict, tmp_path: Path) -> None:
    """Any codec's outputs against references, paired by relative path; the same numbers as the evaluator."""
    from codec.data import read_audio
    from codec.evaluation import Evaluator

    references = demo_run["corpus"] / "test"
    decoded = tmp_path / "decoded"
    decoded.mkdir()
    pairs = []
    for path in sorted(references.glob("*.wav")):
        wav = read_audio(path)
        worse = torch.nn.functional.avg_pool1d(wav.view(1, 1, -1), 5, 1, 2).view(1, -1)  # a crude low-pass "codec"
        sf.write(str(decoded / f"{path.stem}.flac"), worse.flatten().numpy(), 16000)
        pairs.append((wav, read_audio(decoded / f"{path.stem}.flac")))
    out = tmp_path / "scores.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "evaluate.py"),
            f"reference={references}",
            f"decoded={decoded}",
            "eval.metrics=[pesq_wb,stoi,wer]",
            f"output={out}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["utterances"] == 8 and "checkpoint" not in report
    with Evaluator(16000, metrics=["pesq_wb", "stoi"], workers=0) as evaluator:
        direct = evaluator.score_pairs(pairs)
    for row, expected in zip(report["per_utterance"], direct):
        assert row["pesq_wb"] == pytest.approx(expected["pesq_wb"], abs=1e-6)
        assert row["stoi"] == pytest.approx(expected["stoi"], abs=1e-6)
    assert all(
        isinstance(row["wer_reference"], float) for row in report["per_utterance"]
    )  # transcripts found beside the references
    (decoded / f"{sorted(references.glob('*.wav'))[0].stem}.flac").unlink()
    missing = subprocess.run(
        [sys.executable, str(REPO_ROOT / "evaluate.py"), f"reference={references}", f"decoded={decoded}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "1 reference file(s) have no decoded counterpart" in missing.stderr


@pytest.mark.slow
def test_encode_decode_command_line_round_trip(demo_run: dict) -> None:
    checkpoint = demo_run["run_dir"] / "checkpoints" / "latest.pt"
    wav = sorted((demo_run["corpus"] / "test").glob("*.wav"))[0]
    codes, decoded = demo_run["root"] / "codes.npz", demo_run["root"] / "decoded.wav"
    for command in (["encode", str(wav), str(codes)], ["decode", str(codes), str(decoded)]):
        subprocess.run(
            [sys.executable, "-m", "codec", *command, "--checkpoint", str(checkpoint)],
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
        )
    with np.load(codes, allow_pickle=False) as payload:  # plain data: no pickle needed to read it
        stored = payload["codes"]
        assert int(payload["sample_rate"]) == 16000 and int(payload["length"]) == sf.info(str(wav)).frames
    original = sf.info(str(wav))
    assert stored.shape == (4, -(-original.frames // 320))
    assert sf.info(str(decoded)).frames == original.frames

    from codec.inference import load_codec

    codec = load_codec(checkpoint)
    audio = torch.from_numpy(sf.read(str(wav), dtype="float32")[0]).view(1, 1, -1)
    assert torch.equal(codec.encode(audio)[0].short(), torch.from_numpy(stored))
    # A wav handed to decode is refused in one line, naming the file.
    result = subprocess.run(
        [sys.executable, "-m", "codec", "decode", str(wav), str(decoded), "--checkpoint", str(checkpoint)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert f"{wav} is not a codes file" in result.stderr


@pytest.mark.slow
def test_encode_and_decode_a_folder_of_ten_files(demo_run: dict, tmp_path: Path) -> None:
    checkpoint = demo_run["run_dir"] / "checkpoints" / "latest.pt"
    source = tmp_path / "audio"
    for index, wav in enumerate(sorted((demo_run["corpus"] / "train").glob("*.wav"))[:10]):
        target = source / ("nested" if index % 2 else "") / wav.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(wav.read_bytes())
    for command in (
        ["encode", str(source), str(tmp_path / "codes")],
        ["decode", str(tmp_path / "codes"), str(tmp_path / "decoded")],
    ):
        subprocess.run(
            [sys.executable, "-m", "codec", *command, "--checkpoint", str(checkpoint)],
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
        )
    originals = sorted(p.relative_to(source) for p in source.rglob("*.wav"))
    decoded = sorted(p.relative_to(tmp_path / "decoded") for p in (tmp_path / "decoded").rglob("*.wav"))
    assert len(originals) == 10 and decoded == originals
    for name in originals:
        before, after = sf.info(str(source / name)), sf.info(str(tmp_path / "decoded" / name))
        assert (after.frames, after.samplerate) == (before.frames, before.samplerate)
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "codec",
            "encode",
            str(tmp_path / "absent.wav"),
            str(tmp_path / "x.npz"),
            "--checkpoint",
            str(checkpoint),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert (
        missing.returncode == 2
        and missing.stderr.strip() == f"error: {tmp_path / 'absent.wav'}: no such file or folder"
    )
