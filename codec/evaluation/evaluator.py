"""Evaluates a codec on full utterances; perceptual metrics run in a pool of worker processes."""

from __future__ import annotations

import logging
import math
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from codec.data.audio_io import resample
from codec.evaluation.metrics import KNOWN_METRICS, PERCEPTUAL_METRICS, SignalMetrics, metric_packages
from codec.evaluation.perceptual import init_worker, perceptual_metrics
from codec.model import Codec
from codec.quantization.stats import code_histogram, stats_from_histogram

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Aggregated metrics (mean and ``_std``), per-utterance scores and audio samples."""

    metrics: dict[str, float]
    per_utterance: list[dict[str, float]]
    samples: list[tuple[str, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    codebook: dict[str, list[float]] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    # {distribution: version} of the packages that computed the metrics.
    packages: dict[str, str] = field(default_factory=dict)

    def per_utterance_records(self) -> list[dict]:
        """Per-utterance scores with the file each came from."""
        return [{"name": name, **scores} for name, scores in zip(self.names, self.per_utterance)]


class Evaluator:
    """Reconstructs each utterance with the codec and scores it against the original."""

    def __init__(
        self,
        sample_rate: int,
        metrics: Sequence[str] = KNOWN_METRICS,
        workers: int = 2,
        max_utterances: int | None = 16,
        max_seconds: float | None = 10.0,
        audio_samples: int = 2,
    ) -> None:
        unknown = sorted(set(metrics) - set(KNOWN_METRICS))
        if unknown:
            raise ValueError(f"metrics={unknown} unknown; choose from {list(KNOWN_METRICS)}")
        self.sample_rate = int(sample_rate)
        self.metrics = tuple(metrics)
        self.workers = int(workers)
        self.max_utterances = max_utterances
        self.max_seconds = max_seconds
        self.audio_samples = int(audio_samples)
        self.signal_metrics = SignalMetrics(self.sample_rate)
        self._pool: ProcessPoolExecutor | None = None

    # -- worker pool ---------------------------------------------------------------------------
    def _executor(self) -> ProcessPoolExecutor | None:
        if self.workers <= 0:
            return None
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=init_worker)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- scoring -------------------------------------------------------------------------------
    def packages(self) -> dict[str, str]:
        """``{distribution: version}`` of the packages behind this evaluator's metrics."""
        return metric_packages(self.metrics)

    def perceptual_jobs(
        self,
        pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
        transcripts: Sequence[str | None] | None = None,
        grammar: str | None = None,
    ) -> list[dict]:
        """Worker jobs with copies resampled by soxr (16 kHz wideband, 8 kHz narrowband), in float64."""
        wanted = tuple(m for m in self.metrics if m in PERCEPTUAL_METRICS)
        transcripts = list(transcripts) if transcripts is not None else [None] * len(pairs)
        jobs = []
        for (reference, estimate), transcript in zip(pairs, transcripts):
            job: dict = {
                "metrics": wanted,
                "rate": self.sample_rate,
                "transcript": transcript,
                "grammar": grammar,
                "ref": reference.flatten().double().numpy(),
                "est": estimate.flatten().double().numpy(),
            }
            for rate, key in ((16000, "16k"), (8000, "8k")):
                job[f"ref_{key}"] = resample(reference.view(1, -1).double(), self.sample_rate, rate).flatten().numpy()
                job[f"est_{key}"] = resample(estimate.view(1, -1).double(), self.sample_rate, rate).flatten().numpy()
            jobs.append(job)
        return jobs

    def score_pairs(
        self,
        pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
        transcripts: Sequence[str | None] | None = None,
        grammar: str | None = None,
    ) -> list[dict[str, float]]:
        """Per-utterance scores of (reference, estimate) pairs at the evaluator's sample rate.

        ``transcripts`` (one per pair, None where unknown) and a JSGF ``grammar`` serve the WER metric.
        """
        scores = [self.signal_metrics(r.flatten(), e.flatten(), self.metrics) for r, e in pairs]
        if any(m in PERCEPTUAL_METRICS for m in self.metrics):
            jobs = self.perceptual_jobs(pairs, transcripts, grammar)
            executor = self._executor()
            results = (
                list(executor.map(perceptual_metrics, jobs)) if executor else [perceptual_metrics(j) for j in jobs]
            )
            for score, extra in zip(scores, results):
                score.update(extra)
        return scores

    @torch.no_grad()
    def evaluate(
        self,
        codec: Codec,
        utterances: Sequence[tuple[str, torch.Tensor]],
        device: torch.device | str = "cpu",
        transcripts: dict[str, str] | None = None,
        grammar: str | None = None,
        n_layers: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> EvalResult:
        """Reconstruct and score full utterances; codebook health over the whole set.

        ``transcripts`` maps utterance names to their text (for WER); ``grammar`` is a JSGF file;
        ``n_layers`` decodes with the first residual layers of each group only (a lower bitrate).
        With ``world_size`` ranks (every rank calls this), rank ``r`` scores every ``world_size``-th
        utterance from ``r`` and all ranks receive the whole set's result, in the set's order.
        """
        if not utterances:
            raise ValueError("no utterances to evaluate")
        was_training = codec.training
        codec.eval()
        mine = list(range(rank, len(utterances), world_size))
        if world_size > 1:
            log.info("evaluation: rank %d of %d scores %d of %d utterances", rank, world_size, len(mine),
                     len(utterances))  # fmt: skip
        pairs, histogram = self._reconstruct(codec, [utterances[i][1] for i in mine], device, n_layers)
        codec.train(was_training)
        names = [name for name, _ in utterances]
        scores = self.score_pairs(pairs, [(transcripts or {}).get(names[i]) for i in mine], grammar)
        shares = gather_shares((mine, scores, histogram, pairs[: self.audio_samples]), world_size)
        per_utterance, samples, histogram = self._merge(shares, names)
        metrics = aggregate(per_utterance)
        metrics["bitrate_kbps"] = codec.bitrate_kbps(n_layers)
        metrics["tokens_per_second"] = codec.tokens_per_second(n_layers)
        stats = {k: v.cpu().tolist() for k, v in stats_from_histogram(histogram).items()}
        for key, values in stats.items():
            metrics[f"codebook_{key}_mean"] = float(np.mean(values))
        metrics["effective_bitrate_kbps"] = codec.frame_rate * float(np.sum(stats["entropy_bits"])) / 1000.0
        return EvalResult(metrics, per_utterance, samples, stats, names, self.packages())

    @staticmethod
    def _reconstruct(
        codec: Codec, waves: Sequence[torch.Tensor], device: torch.device | str, n_layers: int | None
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """(reference, reconstruction) pairs on the CPU and the summed code histogram."""
        pairs, histogram = [], torch.zeros(0)
        for wav in waves:
            out = codec(wav.view(1, 1, -1).to(device), n_layers)
            counts = code_histogram(out.quantizer.codes, codec.quantizer.codebook_size).cpu()
            histogram = counts if histogram.numel() == 0 else histogram + counts
            pairs.append((wav.view(1, -1).float(), out.audio.float().cpu().view(1, -1)))
        return pairs, histogram

    def _merge(self, shares: list[Any], names: list[str]) -> tuple[list[dict[str, float]], list, torch.Tensor]:
        """The ranks' shares in the set's order: scores, the first audio samples, one histogram."""
        per_utterance: list[dict[str, float]] = [{} for _ in names]
        samples = []
        for indices, share_scores, _, share_pairs in shares:
            for position, index in enumerate(indices):
                per_utterance[index] = share_scores[position]
                if index < self.audio_samples and position < len(share_pairs):
                    samples.append((index, names[index], *share_pairs[position]))
        histograms = [h for _, _, h, _ in shares if h.numel()]
        if not histograms:
            raise ValueError("no utterances to evaluate")
        ordered = [sample[1:] for sample in sorted(samples, key=lambda sample: sample[0])]
        return per_utterance, ordered, torch.stack(histograms).sum(0)


def gather_shares(share: Any, world_size: int) -> list[Any]:
    """Every rank's share of an evaluation, on every rank (one process: its own)."""
    if world_size <= 1:
        return [share]
    import torch.distributed as dist

    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, share)
    return gathered


def aggregate(per_utterance: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean and standard deviation of each metric, ignoring NaN (e.g. PESQ on silence)."""
    summary: dict[str, float] = {}
    for key in per_utterance[0]:
        values = np.array([s[key] for s in per_utterance], dtype=np.float64)
        finite = values[np.isfinite(values)]
        summary[key] = float(finite.mean()) if finite.size else math.nan
        summary[f"{key}_std"] = float(finite.std()) if finite.size else math.nan
    return summary
