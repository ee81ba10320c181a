"""Prosody and speaker identity of a reconstruction, on 16 kHz copies; runs in worker processes.

- ``f0``: Praat's autocorrelation pitch tracker (praat-parselmouth) on reference and estimate,
  10 ms frames, 65-500 Hz. Reports ``f0_rmse`` (Hz, frames voiced in both), ``f0_corr``
  (Pearson, same frames) and ``voicing_error`` (fraction of frames whose voiced/unvoiced
  decision differs).
- ``speaker_similarity_ge2e``: cosine similarity of resemblyzer's GE2E d-vectors (weights
  shipped in its wheel). Labelled GE2E because papers use other verifiers (WavLM-TDNN, ECAPA),
  whose numbers are not comparable with these.
"""

from __future__ import annotations

import functools
import math

import numpy as np

F0_TIME_STEP_S, F0_FLOOR_HZ, F0_CEILING_HZ = 0.01, 65.0, 500.0
F0_KEYS = ("f0_rmse", "f0_corr", "voicing_error")


def pitch_track(signal: np.ndarray, rate: int) -> np.ndarray:
    """F0 in Hz per 10 ms frame, 0 where Praat finds the frame unvoiced."""
    import parselmouth

    sound = parselmouth.Sound(signal.astype(np.float64), sampling_frequency=rate)
    pitch = sound.to_pitch_ac(time_step=F0_TIME_STEP_S, pitch_floor=F0_FLOOR_HZ, pitch_ceiling=F0_CEILING_HZ)
    return np.asarray(pitch.selected_array["frequency"], dtype=np.float64)


def f0_scores(reference: np.ndarray, estimate: np.ndarray, rate: int) -> dict[str, float]:
    """F0 RMSE and correlation on frames voiced in both, and the voicing decision error rate.
    NaN where no frame is voiced in both (the F0 terms) or where there is no frame at all."""
    ref, est = pitch_track(reference, rate), pitch_track(estimate, rate)
    frames = min(len(ref), len(est))
    ref, est = ref[:frames], est[:frames]
    if frames == 0:
        return dict.fromkeys(F0_KEYS, math.nan)
    voiced_ref, voiced_est = ref > 0, est > 0
    both = voiced_ref & voiced_est
    scores = {"voicing_error": float(np.mean(voiced_ref != voiced_est))}
    if both.sum() >= 2:
        scores["f0_rmse"] = float(np.sqrt(np.mean((ref[both] - est[both]) ** 2)))
        scores["f0_corr"] = float(np.corrcoef(ref[both], est[both])[0, 1])
    else:
        scores["f0_rmse"] = scores["f0_corr"] = math.nan
    return scores


@functools.lru_cache(maxsize=1)
def _voice_encoder():
    """resemblyzer's GE2E encoder on CPU, loaded once per worker."""
    from resemblyzer import VoiceEncoder

    return VoiceEncoder("cpu", verbose=False)


def speaker_embedding(signal: np.ndarray, rate: int) -> np.ndarray | None:
    """The L2-normalised GE2E d-vector of an utterance; None when voice activity detection
    leaves nothing to embed (silence)."""
    from resemblyzer import preprocess_wav

    speech = preprocess_wav(signal.astype(np.float32), source_sr=rate)
    if speech.size == 0:
        return None
    return _voice_encoder().embed_utterance(speech)


def speaker_similarity(reference: np.ndarray, estimate: np.ndarray, rate: int) -> float:
    """Cosine similarity of the two utterances' GE2E d-vectors (1 = same voice); NaN for silence."""
    ref, est = speaker_embedding(reference, rate), speaker_embedding(estimate, rate)
    if ref is None or est is None:
        return math.nan
    return float(np.dot(ref, est) / (np.linalg.norm(ref) * np.linalg.norm(est)))
