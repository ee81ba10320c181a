"""ViSQOL, DNSMOS and WER agree with direct calls of their packages and rank a degraded copy lower.

All on the embedded speech corpus (held-out voices, known transcripts), scored through the
evaluator's worker pool as in training.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchaudio.functional as AF

from codec.config import build, compose_config
from codec.evaluation import Evaluator
from codec.evaluation.speech_quality import word_error_rate

METRICS = ["visqol", "dnsmos", "wer"]


def degrade(wav: torch.Tensor, seed: int) -> torch.Tensor:
    """Telephone-band-and-worse: 1 kHz low-pass plus noise at about 10 dB below the speech peak."""
    generator = torch.Generator().manual_seed(seed)
    return AF.lowpass_biquad(wav, 16000, 1000.0) + 0.05 * torch.randn(wav.shape, generator=generator)


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> dict:
    cfg = compose_config([f"paths.cache={tmp_path_factory.mktemp('cache')}", "data=demo_small"])
    data = build(cfg.data, "data")
    utterances = data.utterances("valid") + data.utterances("test")
    transcripts = {**data.transcripts("valid"), **data.transcripts("test")}
    grammar = str(data.asr_grammar())
    references = [wav for _, wav in utterances]
    texts = [transcripts[name] for name, _ in utterances]
    degraded = [degrade(wav, i) for i, wav in enumerate(references)]
    with Evaluator(16000, metrics=METRICS, workers=2) as evaluator:
        clean = evaluator.score_pairs([(r, r) for r in references], texts, grammar)
        worse = evaluator.score_pairs(list(zip(references, degraded)), texts, grammar)
        packages = evaluator.packages()
    return {
        "references": references,
        "degraded": degraded,
        "texts": texts,
        "grammar": grammar,
        "clean": clean,
        "worse": worse,
        "packages": packages,
    }


def mean(scores: list[dict], key: str) -> float:
    return float(np.mean([s[key] for s in scores]))


def test_visqol_matches_the_package_and_ranks_degradation(scored) -> None:
    from visqol.api import VisqolApi

    api = VisqolApi()
    api.create(mode="speech")
    for reference, estimate, score in zip(scored["references"], scored["degraded"], scored["worse"]):
        direct = api.measure_from_arrays(
            reference.flatten().double().numpy(), estimate.flatten().double().numpy(), 16000
        ).moslqo
        assert score["visqol"] == pytest.approx(direct, abs=1e-6)
    assert mean(scored["clean"], "visqol") > 4.0
    assert mean(scored["worse"], "visqol") < mean(scored["clean"], "visqol") - 1.5


def test_dnsmos_matches_the_package_and_ranks_degradation(scored) -> None:
    from speechmos import dnsmos

    for estimate, score in zip(scored["degraded"], scored["worse"]):
        direct = dnsmos.run(np.clip(estimate.flatten().numpy(), -1, 1).astype(np.float32), 16000)
        assert score["dnsmos_ovrl"] == pytest.approx(direct["ovrl_mos"], abs=1e-4)
        assert score["dnsmos_sig"] == pytest.approx(direct["sig_mos"], abs=1e-4)
        assert score["dnsmos_bak"] == pytest.approx(direct["bak_mos"], abs=1e-4)
    assert mean(scored["worse"], "dnsmos_ovrl") < mean(scored["clean"], "dnsmos_ovrl") - 0.3
    assert mean(scored["worse"], "dnsmos_bak") < mean(scored["clean"], "dnsmos_bak") - 0.5


def test_wer_matches_pocketsphinx_and_rises_with_degradation(scored) -> None:
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=16000, jsgf=scored["grammar"], loglevel="FATAL")

    def heard(wav: torch.Tensor) -> str:
        decoder.start_utt()
        decoder.process_raw((np.clip(wav.flatten().numpy(), -1, 1) * 32767).astype(np.int16).tobytes(), full_utt=True)
        decoder.end_utt()
        return decoder.hyp().hypstr if decoder.hyp() else ""

    for reference, estimate, text, clean, worse in zip(
        scored["references"], scored["degraded"], scored["texts"], scored["clean"], scored["worse"]
    ):
        assert worse["wer"] == pytest.approx(word_error_rate(text, heard(estimate)))
        assert worse["wer_reference"] == pytest.approx(word_error_rate(text, heard(reference)))
        assert clean["wer"] == clean["wer_reference"]  # the recognizer's own error, shown beside
    assert mean(scored["worse"], "wer") > mean(scored["clean"], "wer") + 0.3


def test_wer_without_a_transcript_scores_against_what_the_recognizer_heard_in_the_reference(scored) -> None:
    reference = scored["references"][0]
    with Evaluator(16000, metrics=["wer"], workers=0) as evaluator:
        same, worse = evaluator.score_pairs(
            [(reference, reference), (reference, scored["degraded"][0])], None, scored["grammar"]
        )
    assert same["wer"] == 0.0 and math.isnan(same["wer_reference"])
    assert worse["wer"] > 0.0


def test_word_error_rate_counts_substitutions_insertions_and_deletions() -> None:
    assert word_error_rate("the small dog sat", "the small dog sat") == 0.0
    assert word_error_rate("the small dog sat", "the big dog sat") == 0.25
    assert word_error_rate("the small dog sat", "the small sat") == 0.25
    assert word_error_rate("the small dog sat", "the very small dog sat down") == 0.5
    assert word_error_rate("The small, dog!", "the small dog") == 0.0
    assert math.isnan(word_error_rate("", "anything"))


def test_metric_package_versions_are_reported(scored) -> None:
    for package in ("visqol-python", "speechmos", "onnxruntime", "pocketsphinx", "soxr"):
        assert scored["packages"][package][0].isdigit(), scored["packages"]
