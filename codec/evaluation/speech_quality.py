"""ViSQOL, DNSMOS and ASR word error rate on 16 kHz numpy signals; runs inside worker processes.

Each metric calls its package as its authors ship it, with the models bundled in the wheel, so
nothing downloads. Models load once per process (they take seconds) and are reused.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence

import numpy as np

RATE = 16000


@functools.lru_cache(maxsize=1)
def _visqol_speech():
    from visqol.api import VisqolApi

    api = VisqolApi()
    api.create(mode="speech")
    return api


def visqol_score(reference: np.ndarray, estimate: np.ndarray) -> float:
    """ViSQOL MOS-LQO in speech mode at 16 kHz (1-5, higher is better)."""
    return float(
        _visqol_speech()
        .measure_from_arrays(np.asarray(reference, np.float64), np.asarray(estimate, np.float64), RATE)
        .moslqo
    )


def dnsmos_scores(estimate: np.ndarray) -> dict[str, float]:
    """DNSMOS P.835 (reference-free): signal, background and overall MOS of the estimate."""
    from speechmos import dnsmos

    result = dnsmos.run(np.clip(estimate, -1.0, 1.0).astype(np.float32), RATE)
    return {
        "dnsmos_sig": float(result["sig_mos"]),
        "dnsmos_bak": float(result["bak_mos"]),
        "dnsmos_ovrl": float(result["ovrl_mos"]),
    }


@functools.lru_cache(maxsize=4)
def _recognizer(grammar: str | None):
    from pocketsphinx import Decoder

    if grammar:
        return Decoder(samprate=RATE, jsgf=grammar, loglevel="FATAL")
    return Decoder(samprate=RATE, loglevel="FATAL")


def transcribe(audio: np.ndarray, grammar: str | None = None) -> str:
    """PocketSphinx's English transcript; ``grammar`` (JSGF) restricts it to a corpus' sentences."""
    decoder = _recognizer(grammar)
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hypothesis = decoder.hyp()
    return hypothesis.hypstr if hypothesis is not None else ""


def normalize_words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]+", " ", text.lower()).split()


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance: substitutions, insertions and deletions turning one into the other."""
    previous = list(range(len(hypothesis) + 1))
    for i, item in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, other in enumerate(hypothesis, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (item != other))
        previous = current
    return previous[-1]


def word_error_rate(truth: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance over the number of true words."""
    reference, hyp = normalize_words(truth), normalize_words(hypothesis)
    if not reference:
        return math.nan
    return edit_distance(reference, hyp) / len(reference)


def wer_scores(
    reference: np.ndarray, estimate: np.ndarray, transcript: str | None, grammar: str | None
) -> dict[str, float]:
    """WER of the reconstruction, and of the reference itself (the recognizer's own error).

    Without a known transcript, the recognizer's transcript of the reference is the truth, and
    ``wer_reference`` is undefined (NaN).
    """
    heard_reference = transcribe(reference, grammar)
    heard_estimate = transcribe(estimate, grammar)
    if transcript:
        return {
            "wer": word_error_rate(transcript, heard_estimate),
            "wer_reference": word_error_rate(transcript, heard_reference),
        }
    return {"wer": word_error_rate(heard_reference, heard_estimate), "wer_reference": math.nan}
