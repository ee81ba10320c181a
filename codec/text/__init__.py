"""Transcripts as CTC targets: characters, or phonemes from the espeak-ng library the project ships."""

from codec.text.units import BLANK, CHARACTERS, CharacterUnits, PhonemeUnits, TextUnits, ids_to_text, text_to_ids

__all__ = ["BLANK", "CHARACTERS", "CharacterUnits", "PhonemeUnits", "TextUnits", "ids_to_text", "text_to_ids"]
