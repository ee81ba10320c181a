"""The embedded speech corpus: multi-speaker English synthesized with espeak-ng, cached on first use.

Splits hold out both sentences and voices: valid and test speakers never appear in training,
and no sentence is shared between splits, so a held-out score measures a codec, not memory.
Each ``<name>.wav`` has its transcript in ``<name>.txt`` beside it, and the folder carries the
sentence grammar (``grammar.jsgf``) for the intelligibility metric.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from codec.data.audio_io import write_audio
from codec.data.cached_folder import build_folder_once
from codec.data.espeak import EspeakSynthesizer, SpeechSynthesisError, Voice
from codec.data.sentences import jsgf_grammar, sample_sentences

GRAMMAR_FILE = "grammar.jsgf"
TRANSCRIPT_SUFFIX = ".txt"
SPLIT_FOLDERS = ("train", "valid", "test")
# Prosody ranges drawn per utterance: words per minute, pitch and pitch range (espeak's 0-100).
RATE_RANGE = (135, 190)
PITCH_RANGE = (30, 75)
INTONATION_RANGE = (30, 90)
TARGET_PEAK = 0.7


def parse_voice(spec: str) -> tuple[str, str]:
    """``"en-us+m3"`` -> (language, variant)."""
    language, sep, variant = spec.partition("+")
    if not sep or not language or not variant:
        raise ValueError(f"voice {spec!r} must read LANGUAGE+VARIANT, e.g. en-us+m3")
    return language, variant


def corpus_plan(voices: Mapping[str, Sequence[str]], utterances: dict[str, int], seed: int) -> list[dict]:
    """Every utterance to synthesize: split, file name, text and voice with its prosody.

    Pure function of its arguments, so the corpus is the same on every machine.
    """
    plan: list[dict] = []
    used_sentences: set[str] = set()
    for split_index, split in enumerate(SPLIT_FOLDERS):
        specs = list(voices[split])
        count = int(utterances[split])
        if count and not specs:
            raise ValueError(f"data.voices.{split} is empty but data.utterances.{split}={count}")
        texts = sample_sentences(count, seed=seed * 100 + split_index, exclude=used_sentences)
        used_sentences.update(texts)
        rng = np.random.default_rng([seed, split_index])
        for index, text in enumerate(texts):
            language, variant = parse_voice(specs[index % len(specs)])
            voice = Voice(
                language,
                variant,
                rate_wpm=int(rng.integers(*RATE_RANGE)),
                pitch=int(rng.integers(*PITCH_RANGE)),
                pitch_range=int(rng.integers(*INTONATION_RANGE)),
            )
            plan.append(
                {
                    "split": split,
                    "name": f"{split}/{language}_{variant}_{index:04d}",
                    "text": text,
                    "voice": asdict(voice),
                }
            )
    return plan


def _normalize(audio: np.ndarray) -> np.ndarray:
    """Trim leading/trailing near-silence to 50 ms and scale to a common peak."""
    loud = np.flatnonzero(np.abs(audio) > 0.01 * np.abs(audio).max())
    margin = 800
    audio = audio[max(loud[0] - margin, 0) : loud[-1] + margin]
    return (TARGET_PEAK * audio / np.abs(audio).max()).astype(np.float32)


def synthesize_plan(plan: list[dict], sample_rate: int, seed: int, staging: Path) -> None:
    """Write every planned utterance, its transcript, the grammar and the plan into ``staging``."""
    import soxr

    synthesizer = EspeakSynthesizer()
    for index, item in enumerate(plan):
        audio = synthesizer.synthesize(item["text"], Voice(**item["voice"]), seed=seed * 100003 + index)
        audio = soxr.resample(audio, synthesizer.sample_rate, sample_rate, quality="VHQ")
        write_audio(staging / f"{item['name']}.wav", _normalize(audio), sample_rate)
        (staging / f"{item['name']}{TRANSCRIPT_SUFFIX}").write_text(item["text"] + "\n")
    (staging / GRAMMAR_FILE).write_text(jsgf_grammar())
    (staging / "corpus.json").write_text(
        json.dumps({"seed": seed, "sample_rate": sample_rate, "utterances": plan}, indent=1)
    )


def ensure_speech_corpus(
    cache_dir: Path, sample_rate: int, voices: Mapping[str, Sequence[str]], utterances: dict[str, int], seed: int
) -> Path:
    """Synthesize the corpus once into ``cache_dir`` (atomically) and return its folder.

    Synthesis runs in a fresh process: libespeak-ng keeps state between utterances that even
    re-initializing does not clear, so only a fresh library gives the same samples every time.
    """
    plan = corpus_plan(voices, utterances, seed)
    digest = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:10]
    folder = Path(cache_dir) / f"speech_sr{sample_rate}_{digest}"

    def write(staging: Path) -> None:
        worker = multiprocessing.get_context("spawn").Process(
            target=synthesize_plan, args=(plan, sample_rate, seed, staging), name="speech-corpus"
        )
        worker.start()
        worker.join()
        if worker.exitcode != 0:
            raise SpeechSynthesisError(
                f"synthesizing the speech corpus into {folder} failed (exit code {worker.exitcode}); see the error "
                "above"
            )

    return build_folder_once(folder, write)
