"""Group-residual vector quantization (GRVQ) and the codebook layers it is built from."""
from codec.quantization.codebook import VectorQuantizer
from codec.quantization.grvq import GroupResidualVQ, QuantizerOutput
from codec.quantization.stats import codebook_stats

__all__ = ["GroupResidualVQ", "QuantizerOutput", "VectorQuantizer", "codebook_stats"]
