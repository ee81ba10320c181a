"""Perceptual metrics of one utterance on numpy signals; runs inside worker processes.

Inputs arrive already resampled with a proper resampler: 16 kHz for wideband PESQ, ViSQOL
(speech mode), DNSMOS and the recognizer, 8 kHz for narrowband PESQ. STOI resamples
internally to 10 kHz from the signal's own rate.
"""

from __future__ import annotations

import math
import os

import numpy as np


def init_worker() -> None:
    """Evaluation worker set-up: stop signals belong to the main process; one thread each."""
    from codec.signals import ignore_stop_signals

    ignore_stop_signals()
    limit_worker_threads()


def limit_worker_threads() -> None:
    """One BLAS/OpenMP thread per worker: pystoi in a pool is slower otherwise (REFERENCE 7).

    The environment variables only reach libraries loaded later; importing this module already
    loaded numpy (and torch, through the package), so their thread pools are limited at runtime.
    """
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def pesq_score(reference: np.ndarray, estimate: np.ndarray, rate: int, mode: str) -> float:
    from pesq import pesq
    from pesq.cypesq import PesqError

    try:
        return float(pesq(rate, reference, estimate, mode))
    except PesqError:  # e.g. no utterance detected in silence
        return math.nan


def stoi_score(reference: np.ndarray, estimate: np.ndarray, rate: int, extended: bool) -> float:
    from pystoi import stoi

    return float(stoi(reference, estimate, rate, extended=extended))


# Mel-cepstral distortion on MFCCs: 25 ms windows, 10 ms hop, 40 mel bands, c1..c13 (c0, the
# energy, left out), computed on the 16 kHz copies so every sample rate is scored alike.
MCD_WINDOW_S, MCD_HOP_S, MCD_MELS, MCD_COEFFICIENTS = 0.025, 0.010, 40, 13


def mel_cepstral_distortion(reference: np.ndarray, estimate: np.ndarray, rate: int) -> float:
    """MCD in dB, frame by frame on time-aligned signals (a codec keeps time, so no DTW):
    mean over frames of (10 / ln 10) * sqrt(2 * sum_d (c_d - c'_d)^2) on natural-log cepstra.
    librosa's MFCCs are in dB (10 log10 of power), i.e. (10 / ln 10) x natural-log cepstra, so the
    formula reduces to sqrt(2 * sum_d (mfcc_d - mfcc'_d)^2). MFCC-based: its absolute values are
    not those of papers that use SPTK mel-cepstra; differences between codecs compare."""
    import librosa

    length = min(len(reference), len(estimate))

    def cepstra(signal: np.ndarray) -> np.ndarray:
        return librosa.feature.mfcc(
            y=signal[:length].astype(np.float32), sr=rate, n_mfcc=MCD_COEFFICIENTS + 1,
            n_fft=int(MCD_WINDOW_S * rate), hop_length=int(MCD_HOP_S * rate), n_mels=MCD_MELS,
        )[1:]  # fmt: skip

    ref, est = cepstra(reference), cepstra(estimate)
    return float(np.mean(np.sqrt(2.0 * np.sum((ref - est) ** 2, axis=0))))


def perceptual_metrics(job: dict) -> dict[str, float]:
    """Compute the requested perceptual metrics of one utterance (a picklable job dict)."""
    wanted = job["metrics"]
    scores: dict[str, float] = {}
    if "pesq_wb" in wanted:
        scores["pesq_wb"] = pesq_score(job["ref_16k"], job["est_16k"], 16000, "wb")
    if "pesq_nb" in wanted:
        scores["pesq_nb"] = pesq_score(job["ref_8k"], job["est_8k"], 8000, "nb")
    if "stoi" in wanted:
        scores["stoi"] = stoi_score(job["ref"], job["est"], job["rate"], extended=False)
    if "estoi" in wanted:
        scores["estoi"] = stoi_score(job["ref"], job["est"], job["rate"], extended=True)
    if "mcd" in wanted:
        scores["mcd"] = mel_cepstral_distortion(job["ref_16k"], job["est_16k"], 16000)
    if {"f0", "speaker_similarity_ge2e"} & set(wanted):
        from codec.evaluation import voice

        if "f0" in wanted:
            scores.update(voice.f0_scores(job["ref_16k"], job["est_16k"], 16000))
        if "speaker_similarity_ge2e" in wanted:
            scores["speaker_similarity_ge2e"] = voice.speaker_similarity(job["ref_16k"], job["est_16k"], 16000)
    if {"visqol", "dnsmos", "wer"} & set(wanted):
        from codec.evaluation import speech_quality

        if "visqol" in wanted:
            scores["visqol"] = speech_quality.visqol_score(job["ref_16k"], job["est_16k"])
        if "dnsmos" in wanted:
            scores.update(speech_quality.dnsmos_scores(job["est_16k"]))
        if "wer" in wanted:
            scores.update(
                speech_quality.wer_scores(job["ref_16k"], job["est_16k"], job.get("transcript"), job.get("grammar"))
            )
    return scores
