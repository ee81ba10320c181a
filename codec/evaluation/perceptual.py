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
