"""Sentences for the demo speech corpus: a small grammar, sampled deterministically.

Each sentence is ``the ADJECTIVE NOUN VERB PREPOSITION the ADJECTIVE NOUN``, with word lists
chosen to cover English vowels, stops, fricatives, nasals and liquids. The same grammar,
written as JSGF, is the language model of the intelligibility metric on this corpus, so the
recognizer's errors come from the audio, not from an open vocabulary.
"""

from __future__ import annotations

import numpy as np

ADJECTIVES = (
    "small",
    "bright",
    "heavy",
    "quiet",
    "yellow",
    "broken",
    "frozen",
    "shiny",
    "purple",
    "thick",
    "gentle",
    "rough",
    "sharp",
    "cheap",
    "dusty",
    "loud",
)
NOUNS = (
    "dog",
    "ship",
    "judge",
    "fox",
    "garden",
    "kettle",
    "pillow",
    "window",
    "violin",
    "zebra",
    "thumb",
    "voice",
    "bottle",
    "church",
    "mirror",
    "wagon",
)
VERBS = ("jumped", "rolled", "sat", "waited", "slept", "vanished", "glowed", "fell", "shook", "hid", "leaned", "danced")
PREPOSITIONS = ("over", "under", "beside", "behind", "near", "inside", "across", "through")
SLOTS = (ADJECTIVES, NOUNS, VERBS, PREPOSITIONS, ADJECTIVES, NOUNS)


def sentence(words: tuple[str, ...]) -> str:
    adjective, noun, verb, preposition, adjective2, noun2 = words
    return f"the {adjective} {noun} {verb} {preposition} the {adjective2} {noun2}"


def sample_sentences(count: int, seed: int, exclude: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """``count`` distinct sentences, none in ``exclude``; the same list for the same seed."""
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    seen = set(exclude)
    while len(chosen) < count:
        text = sentence(tuple(slot[rng.integers(len(slot))] for slot in SLOTS))
        if text not in seen:
            seen.add(text)
            chosen.append(text)
    return chosen


def jsgf_grammar() -> str:
    """The sentence grammar in JSGF, for a recognizer restricted to the corpus' language."""

    def alternatives(words: tuple[str, ...]) -> str:
        return "(" + " | ".join(words) + ")"

    return (
        "#JSGF V1.0;\ngrammar demo;\n"
        f"public <sentence> = the {alternatives(ADJECTIVES)} {alternatives(NOUNS)} {alternatives(VERBS)} "
        f"{alternatives(PREPOSITIONS)} the {alternatives(ADJECTIVES)} {alternatives(NOUNS)};\n"
    )
