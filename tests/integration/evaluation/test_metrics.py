"""Evaluation metrics agree with direct calls of pesq and pystoi, with proper resampling."""

from __future__ import annotations

import numpy as np
import pytest
import soxr
import torch
import torchaudio.functional as AF
from pesq import pesq
from pystoi import stoi

from codec.data import read_audio
from codec.evaluation import Evaluator
from codec.evaluation.metrics import si_sdr
from tests.audio_fixtures import alsa_speech, espeak_corpus


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
        r8 = soxr.resample(r, 16000, 8000, quality="VHQ")
        e8 = soxr.resample(e, 16000, 8000, quality="VHQ")
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
    direct = pesq(
        16000,
        soxr.resample(ref24.flatten().double().numpy(), 24000, 16000, quality="VHQ"),
        soxr.resample(est24.flatten().double().numpy(), 24000, 16000, quality="VHQ"),
        "wb",
    )
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


@pytest.fixture(scope="module")
def recorded_speech_48k() -> np.ndarray:
    """Real recorded speech: alsa-utils' 48 kHz voice prompts, joined."""
    return np.concatenate([read_audio(path).flatten().double().numpy() for path in alsa_speech()])


def degraded_pairs(reference: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(reference.shape)
    noisy = reference + noise * np.sqrt(np.mean(reference**2) / np.mean(noise**2) / 10 ** (20 / 10))  # 20 dB SNR
    mu_law = AF.mu_law_decoding(AF.mu_law_encoding(torch.from_numpy(reference).clamp(-1, 1), 256), 256).double().numpy()
    return {"clean": reference.copy(), "noisy": noisy, "mu_law_8bit": mu_law}


@pytest.mark.parametrize("rate", [24000, 44100])
def test_pesq_wb_at_any_rate_equals_the_direct_16k_call(recorded_speech_48k, rate: int) -> None:
    """A pair recorded and degraded at 48 kHz, copied to 24 or 44.1 kHz and scored there, gets the
    PESQ-WB of the same pair resampled to 16 kHz and scored by a direct call.

    torchaudio's default resampler (used before) attenuated 7-8 kHz on the way down to 16 kHz,
    hiding the high-band damage: the noisy and mu-law pairs scored about 0.05-0.13 too high.
    """

    def to_rate(x: np.ndarray, target: int) -> np.ndarray:
        return soxr.resample(x, 48000, target, quality="VHQ")

    evaluator = Evaluator(rate, metrics=["pesq_wb"], workers=0)
    for name, estimate in degraded_pairs(recorded_speech_48k).items():
        direct = pesq(16000, to_rate(recorded_speech_48k, 16000), to_rate(estimate, 16000), "wb")
        copies = [torch.from_numpy(to_rate(x, rate)).view(1, -1) for x in (recorded_speech_48k, estimate)]
        scored = evaluator.score_pairs([(copies[0], copies[1])])[0]["pesq_wb"]
        assert scored == pytest.approx(direct, abs=0.02), (
            f"{name} at {rate} Hz: {scored:.3f} vs {direct:.3f} scored at 16 kHz"
        )


def copy_16k(wav: torch.Tensor) -> np.ndarray:
    """The 16 kHz float32 copy the evaluation workers score (soxr VHQ, here at the same rate)."""
    return soxr.resample(wav.flatten().double().numpy(), 16000, 16000, quality="VHQ").astype(np.float32)


def score_light_and_heavy(metric: str, reference: torch.Tensor, heavy: torch.Tensor) -> tuple[list[dict], torch.Tensor]:
    """Scores of identity, a lightly noisy copy and ``heavy`` against ``reference``; and the light copy."""
    light = reference + 0.002 * torch.randn(reference.shape, generator=torch.Generator().manual_seed(0))
    evaluator = Evaluator(16000, metrics=[metric], workers=0)
    with evaluator:
        return evaluator.score_pairs([(reference, reference), (reference, light), (reference, heavy)]), light


def test_mcd_matches_a_direct_librosa_computation_and_ranks_degradation(speech_16k) -> None:
    """Mel-cepstral distortion against the formula applied by hand to librosa's MFCCs, on real
    speech, a lightly and a heavily degraded copy; silence-free identity scores 0."""
    import librosa

    reference = speech_16k[0]
    heavy = degrade(reference, 1)
    scores, light = score_light_and_heavy("mcd", reference, heavy)

    def direct(ref: torch.Tensor, est: torch.Tensor) -> float:
        r, e = copy_16k(ref), copy_16k(est)
        kwargs = dict(sr=16000, n_mfcc=14, n_fft=400, hop_length=160, n_mels=40)
        c_ref, c_est = librosa.feature.mfcc(y=r, **kwargs)[1:], librosa.feature.mfcc(y=e, **kwargs)[1:]
        per_frame = (10 / np.log(10)) * np.sqrt(
            2 * np.sum((c_ref / (10 / np.log(10)) - c_est / (10 / np.log(10))) ** 2, 0)
        )
        return float(per_frame.mean())

    assert scores[0]["mcd"] == pytest.approx(0.0, abs=1e-6)
    for score, estimate in zip(scores[1:], (light, heavy)):
        assert score["mcd"] == pytest.approx(direct(reference, estimate), rel=1e-4)
    assert 0 < scores[1]["mcd"] < scores[2]["mcd"]


def heavily_degraded(wav: torch.Tensor, seed: int) -> torch.Tensor:
    """Telephone-band speech buried in noise: pitch tracking and speaker cues both suffer."""
    generator = torch.Generator().manual_seed(seed)
    band = AF.lowpass_biquad(AF.highpass_biquad(wav, 16000, 600.0), 16000, 1200.0)
    return band + 0.08 * wav.abs().max() * torch.randn(wav.shape, generator=generator)


def test_f0_metrics_match_direct_parselmouth_calls_and_rank_degradation(speech_16k) -> None:
    """F0 RMSE, F0 correlation and voicing error against Praat's pitch tracks taken by hand."""
    import parselmouth

    reference = speech_16k[0]
    heavy = heavily_degraded(reference, 1)
    scores, light = score_light_and_heavy("f0", reference, heavy)

    def track(wav: torch.Tensor) -> np.ndarray:
        pitch = parselmouth.Sound(copy_16k(wav).astype(np.float64), 16000).to_pitch_ac(
            time_step=0.01, pitch_floor=65.0, pitch_ceiling=500.0
        )
        return pitch.selected_array["frequency"]

    ref = track(reference)
    assert (ref > 0).mean() > 0.3, "the reference speech should be mostly voiced"
    for score, estimate in zip(scores[1:], (light, heavy)):
        est = track(estimate)
        both = (ref > 0) & (est > 0)
        assert score["voicing_error"] == pytest.approx(np.mean((ref > 0) != (est > 0)), abs=1e-9)
        assert score["f0_rmse"] == pytest.approx(np.sqrt(np.mean((ref[both] - est[both]) ** 2)), rel=1e-9)
        assert score["f0_corr"] == pytest.approx(np.corrcoef(ref[both], est[both])[0, 1], rel=1e-9)
    assert scores[0] == {"f0_rmse": 0.0, "f0_corr": pytest.approx(1.0), "voicing_error": 0.0}
    assert scores[1]["voicing_error"] < scores[2]["voicing_error"]
    assert scores[1]["f0_rmse"] < scores[2]["f0_rmse"]
    assert scores[1]["f0_corr"] > scores[2]["f0_corr"]


def test_speaker_similarity_matches_resemblyzer_and_ranks_degradation(speech_16k) -> None:
    """GE2E cosine similarity against resemblyzer called by hand; identity scores 1, a degraded
    copy less, and another speaker's utterance less still."""
    from resemblyzer import VoiceEncoder, preprocess_wav

    reference, other_voice = speech_16k[0], speech_16k[1]
    heavy = heavily_degraded(reference, 1)
    evaluator = Evaluator(16000, metrics=["speaker_similarity_ge2e"], workers=0)
    with evaluator:
        scores = [s["speaker_similarity_ge2e"] for s in evaluator.score_pairs(
            [(reference, reference), (reference, heavy), (reference, other_voice)]
        )]  # fmt: skip
    encoder = VoiceEncoder("cpu", verbose=False)

    def embed(wav: torch.Tensor) -> np.ndarray:
        return encoder.embed_utterance(preprocess_wav(copy_16k(wav), source_sr=16000))

    direct = float(np.dot(embed(reference), embed(heavy)))
    assert scores[1] == pytest.approx(direct, abs=1e-5)
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    assert scores[1] < scores[0] and scores[2] < scores[0]
