"""The symbol inventories CTC heads predict: class 0 is the CTC blank, class i + 1 is symbol i.

Characters are fixed (English letters, space, apostrophe), so any two heads agree on them.
Phonemes are espeak-ng's IPA for a transcript, one class per IPA character (stress and length
marks included); their inventory is read off the transcripts a run trains on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

# Characters the content probe and the semantic loss recognize; everything else is dropped.
CHARACTERS = " abcdefghijklmnopqrstuvwxyz'"
BLANK = 0


def text_to_ids(text: str) -> list[int]:
    return [CHARACTERS.index(c) + 1 for c in " ".join(text.lower().split()) if c in CHARACTERS]


def ids_to_text(ids: list[int]) -> str:
    return "".join(CHARACTERS[i - 1] for i in ids)


class TextUnits(Protocol):
    """Transcript -> CTC target ids (never the blank); ``classes`` counts the blank."""

    name: str
    classes: int

    def encode(self, text: str) -> list[int]: ...


class CharacterUnits:
    name = "characters"
    classes = len(CHARACTERS) + 1

    def encode(self, text: str) -> list[int]:
        return text_to_ids(text)


class PhonemeUnits:
    """espeak-ng IPA phonemes of ``language`` (an espeak-ng voice name such as ``en-us``)."""

    name = "phonemes"

    def __init__(self, transcripts: Iterable[str], language: str = "en-us") -> None:
        from codec.data.espeak import EspeakSynthesizer

        self.language = language
        self._phonemizer = EspeakSynthesizer()
        self._cache: dict[str, str] = {}
        symbols = sorted({symbol for text in transcripts for symbol in self.phonemes(text)})
        self.symbols = "".join(symbols)
        self.classes = len(self.symbols) + 1

    def phonemes(self, text: str) -> str:
        if text not in self._cache:
            self._cache[text] = " ".join(self._phonemizer.phonemes(text, self.language).split())
        return self._cache[text]

    def encode(self, text: str) -> list[int]:
        return [self.symbols.index(s) + 1 for s in self.phonemes(text) if s in self.symbols]
