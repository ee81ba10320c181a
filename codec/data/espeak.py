"""Speech synthesis with the libespeak-ng that the ``espeakng-loader`` wheel ships.

A thin ctypes binding of espeak-ng's C API (``speak_lib.h``), so the demo corpus needs no
system package and no network. The library keeps one global voice, so one synthesizer serves
a process, and calls are serialized.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_DONT_EXIT = 0x8000
POSITION_CHARACTER = 1
CHARS_UTF8 = 1
PHONEMES_IPA = 0x02
PARAMETER_RATE, PARAMETER_VOLUME, PARAMETER_PITCH, PARAMETER_RANGE = 1, 2, 3, 4

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class SpeechSynthesisError(RuntimeError):
    """espeak-ng is missing or refused a voice or a text."""


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice: a language/accent (``en-us``), a variant (``m3``, ``f2``) and prosody."""

    language: str
    variant: str
    rate_wpm: int = 165
    pitch: int = 50
    pitch_range: int = 50

    @property
    def espeak_name(self) -> str:
        return f"{self.language}+{self.variant}"

    @property
    def tag(self) -> str:
        """A file-name-safe identity of the voice and its prosody."""
        return f"{self.language}_{self.variant}_r{self.rate_wpm}_p{self.pitch}_g{self.pitch_range}"


class EspeakSynthesizer:
    """Text to 16-bit speech at espeak-ng's native rate (22.05 kHz)."""

    _lock = threading.Lock()

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as error:  # pragma: no cover - a declared dependency
            raise SpeechSynthesisError(
                "the demo speech corpus needs the espeakng-loader package (pip install espeakng-loader)"
            ) from error
        library_path = Path(espeakng_loader.get_library_path())
        data_path = Path(espeakng_loader.get_data_path())
        try:
            self._lib = ctypes.CDLL(str(library_path))
        except OSError as error:
            raise SpeechSynthesisError(f"cannot load libespeak-ng from {library_path}: {error}") from error
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self._lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        self._lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self.sample_rate = self._lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_path.parent).encode(), INITIALIZE_DONT_EXIT
        )
        if self.sample_rate <= 0:
            raise SpeechSynthesisError(f"espeak-ng failed to initialize with data at {data_path}")
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # kept referenced: C holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, samples: Any, count: int, _events: int) -> int:  # samples: POINTER(c_short)
        if samples and count > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0

    def synthesize(self, text: str, voice: Voice, seed: int = 0) -> np.ndarray:
        """Speak ``text`` in ``voice``; float32 samples in [-1, 1] at :attr:`sample_rate`.

        Voice variants add random breath and pitch flutter; ``seed`` fixes them, so the same
        arguments give the same samples.
        """
        with self._lock:
            self._lib.espeak_ng_SetRandSeed(int(seed))
            if self._lib.espeak_SetVoiceByName(voice.espeak_name.encode()) != 0:
                raise SpeechSynthesisError(f"espeak-ng has no voice {voice.espeak_name!r}")
            for parameter, value in (
                (PARAMETER_RATE, voice.rate_wpm),
                (PARAMETER_PITCH, voice.pitch),
                (PARAMETER_RANGE, voice.pitch_range),
                (PARAMETER_VOLUME, 100),
            ):
                self._lib.espeak_SetParameter(parameter, int(value), 0)
            self._chunks = []
            encoded = text.encode("utf-8") + b"\0"
            if self._lib.espeak_Synth(encoded, len(encoded), 0, POSITION_CHARACTER, 0, CHARS_UTF8, None, None) != 0:
                raise SpeechSynthesisError(f"espeak-ng could not speak {text!r}")
            self._lib.espeak_Synchronize()
            audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
        if audio.size == 0:
            raise SpeechSynthesisError(f"espeak-ng produced no audio for {text!r} in voice {voice.espeak_name!r}")
        return audio.astype(np.float32) / 32768.0

    def phonemes(self, text: str, voice_name: str = "en-us") -> str:
        """``text`` as espeak-ng's IPA phonemes in ``voice_name``'s language, clauses joined by spaces."""
        with self._lock:
            if self._lib.espeak_SetVoiceByName(voice_name.encode()) != 0:
                raise SpeechSynthesisError(f"espeak-ng has no voice {voice_name!r}")
            buffer = ctypes.create_string_buffer(text.encode("utf-8"))
            cursor = ctypes.c_char_p(ctypes.addressof(buffer))
            clauses = []
            while cursor.value:  # the library advances the cursor clause by clause, to NULL
                clause = self._lib.espeak_TextToPhonemes(ctypes.byref(cursor), CHARS_UTF8, PHONEMES_IPA)
                clauses.append((clause or b"").decode("utf-8"))
        return " ".join(c.strip() for c in clauses if c.strip())
