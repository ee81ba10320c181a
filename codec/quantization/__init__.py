"""Quantizers: the contract (:mod:`codec.quantization.base`), group-residual VQ and the
codebook layers it is built from, and FSQ (:mod:`codec.quantization.fsq`)."""

from codec.quantization.base import BaseQuantizer, QuantizedResult
from codec.quantization.codebook import VectorQuantizer
from codec.quantization.grvq import GroupResidualVQ
from codec.quantization.stats import codebook_stats

__all__ = ["BaseQuantizer", "GroupResidualVQ", "QuantizedResult", "VectorQuantizer", "codebook_stats"]
