"""Full-utterance evaluation: PESQ, STOI/ESTOI, ViSQOL, DNSMOS, ASR word error rate, mel distance,
SI-SDR, bitrate and codebook health."""

from codec.evaluation.evaluator import EvalResult, Evaluator
from codec.evaluation.metrics import KNOWN_METRICS

__all__ = ["EvalResult", "Evaluator", "KNOWN_METRICS"]
