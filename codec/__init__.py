"""Neural audio codecs built around group-residual vector quantization (GRVQ)."""

from codec.model import Codec, CodecOutput

__all__ = ["Codec", "CodecOutput"]
