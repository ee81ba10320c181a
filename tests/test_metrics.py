"""Evaluation metrics agree with direct calls of pesq and pystoi, with proper resampling."""
from __future__ import annotations


import numpy as np
import pytest
import torch
import torchaudio.functional as AF
from pesq import pesq
from pystoi import stoi

from codec.data import read_audio
from codec.evaluation import Evaluator
from codec.evaluation.metrics import si_sdr
from tests.audio_fixtures import espeak_corpus


@pytest.fixture(scope="module")
def speech_16k(tmp_path_factory) -> list[torch.Tensor]:
    paths = espeak_corpus(tmp_path_factory.mktemp("speech"), sample_rate=16000, count=3)
    return [read_audio(p) for p in paths]


def degrade(wav: torch.Tensor, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    lowpassed = AF.lowpass_biquad(wav, 16000, 2500.0)
    return lowpassed + 0.01 * torch.randn(wav.shape, generator=generator)


def test_pesq_and_stoi_match_direct_calls_at_16k(speech_16k) -> None:
    pairs = [(ref, degrade(ref, i)) for i, ref in enumerate(speech_16k)]
    evaluator = Evaluator(16000, metrics=["pesq_wb", "pesq_nb", "stoi", "estoi"], workers=2)
    with evaluator:
        scores = evaluator.score_pairs(pairs)
    for (ref, est), score in zip(pairs, scores):
        r, e = ref.flatten().double().numpy(), est.flatten().double().numpy()
        assert score["pesq_wb"] == pytest.approx(pesq(16000, r, e, "wb"), abs=1e-6)
        r8 = AF.resample(ref, 16000, 8000).flatten().double().numpy()
        e8 = AF.resample(est, 16000, 8000).flatten().double().numpy()
        assert score["pesq_nb"] == pytest.approx(pesq(8000, r8, e8, "nb"), abs=1e-6)
        assert score["stoi"] == pytest.approx(stoi(r, e, 16000), abs=1e-6)
        assert score["estoi"] == pytest.approx(stoi(r, e, 16000, extended=True), abs=1e-6)
        assert 1.0 < score["pesq_wb"] < 4.7 and 0.5 < score["stoi"] <= 1.0


def test_24k_input_is_resampled_to_16k_not_truncated(speech_16k) -> None:
    ref24 = AF.resample(speech_16k[0], 16000, 24000)
    mild = speech_16k[0] + 0.003 * torch.randn(speech_16k[0].shape, generator=torch.Generator().manual_seed(7))
    est24 = AF.resample(mild, 16000, 24000)
    evaluator = Evaluator(24000, metrics=["pesq_wb"], workers=0)
    job = evaluator.perceptual_jobs([(ref24, est24)])[0]
    # the whole utterance survives: 16 kHz length is 2/3 of the 24 kHz length
    assert len(job["ref_16k"]) == pytest.approx(ref24.shape[-1] * 2 / 3, abs=1)
    score = evaluator.score_pairs([(ref24, est24)])[0]["pesq_wb"]
    direct = pesq(16000, AF.resample(ref24, 24000, 16000).flatten().double().numpy(),
                  AF.resample(est24, 24000, 16000).flatten().double().numpy(), "wb")
    assert score == pytest.approx(direct, abs=1e-6)
    # The public-toolkit trap (every file cut to 16000 *samples*) scores only the first second.
    trap = pesq(16000, job["ref_16k"][:16000], job["est_16k"][:16000], "wb")
    assert len(job["ref_16k"]) > 24000
    assert abs(trap - score) > 0.01


def test_si_sdr_rewards_fidelity_and_ignores_scale() -> None:
    x = torch.randn(16000, dtype=torch.float64)
    assert si_sdr(x, 0.5 * x) > 100
    noisy = x + 0.1 * torch.randn(16000, dtype=torch.float64)
    assert 15 < si_sdr(x, noisy) < 25
    assert si_sdr(x, x + torch.randn(16000, dtype=torch.float64)) < si_sdr(x, noisy)


def test_silent_utterance_gives_nan_pesq_not_a_crash() -> None:
    silence = torch.zeros(1, 16000)
    evaluator = Evaluator(16000, metrics=["pesq_wb", "mel_distance"], workers=0)
    score = evaluator.score_pairs([(silence, silence)])[0]
    assert np.isnan(score["pesq_wb"]) and score["mel_distance"] == pytest.approx(0.0, abs=1e-6)
