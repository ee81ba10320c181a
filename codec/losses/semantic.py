"""Semantic supervision (``loss.semantic``): a CTC recognizer on one group's quantized output.

Mimi, SpeechTokenizer and stable-codec put content into a chosen codebook by supervising it; here
the target is the transcript the data already carries (characters, or espeak-ng phonemes), so no
teacher model is downloaded. Each step a few whole training utterances with transcripts go
through the encoder, the quantizer's :meth:`~codec.quantization.base.BaseQuantizer.semantic_view`
of one group (its first ``layers`` residual layers) and a small convolutional CTC head. The CTC
loss, times ``weight``, joins the generator's objective, and its gradient reaches the encoder
through that group's channels alone. The token probes then show whether content moved there.

The utterances of a step are a pure function of (seed, step, rank), so a resumed run sees the
same ones as an uninterrupted run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from codec.data.audio_io import read_audio
from codec.data.manifest import AudioEntry
from codec.text import CharacterUnits, PhonemeUnits, TextUnits

if TYPE_CHECKING:
    from codec.model import Codec

log = logging.getLogger(__name__)

UNITS = ("characters", "phonemes")
# CTC needs at least one output slot per target symbol (plus blanks between repeats); the head
# repeats frames up to this many slots per second, as the content probe does.
CTC_SLOTS_PER_SECOND = 30.0
# The entropy gate's moving average keeps this much of its past each step (about 20 steps).
ENTROPY_DECAY = 0.95
# The head's weights come from their own seed, so a run with the term matches the same run without
# it until the term starts (the paired comparison of codec-bench-semantic relies on it).
HEAD_SEED_OFFSET = 0x5E3A


class SemanticSupervisionError(ValueError):
    """``loss.semantic`` cannot work with this codec or this data."""


@dataclass(frozen=True)
class TranscribedUtterance:
    entry: AudioEntry
    targets: tuple[int, ...]


@dataclass
class SemanticBatch:
    audio: torch.Tensor  # [B, 1, T], zero-padded
    samples: torch.Tensor  # [B] true lengths
    targets: torch.Tensor  # concatenated target ids
    target_lengths: torch.Tensor  # [B]


class SemanticSupervision(nn.Module):
    """CTC from group ``group``'s first ``layers`` layers to the transcript, weighted by ``weight``."""

    def __init__(
        self,
        weight: float,
        group: int = 0,
        layers: int = 1,
        units: str = "characters",
        language: str = "en-us",
        utterances_per_step: int = 2,
        max_seconds: float = 6.0,
        hidden: int = 64,
        start_step: int = 0,
        warmup_steps: int = 0,
        start_entropy_bits: float | None = None,
    ) -> None:
        super().__init__()
        if not weight > 0:
            raise SemanticSupervisionError(
                f"loss.semantic.weight={weight} must be > 0 (loss.semantic=null turns it off)"
            )
        if units not in UNITS:
            raise SemanticSupervisionError(f"loss.semantic.units={units!r} is unknown; choose one of {UNITS}")
        if utterances_per_step < 1 or max_seconds <= 0 or hidden < 1 or layers < 1 or group < 0:
            raise SemanticSupervisionError(
                "loss.semantic: utterances_per_step, hidden and layers must be >= 1, group >= 0, max_seconds > 0"
            )
        if start_step < 0 or warmup_steps < 0:
            raise SemanticSupervisionError(
                f"loss.semantic.start_step={start_step} and warmup_steps={warmup_steps} must be >= 0"
            )
        if start_entropy_bits is not None and not start_entropy_bits >= 0:
            raise SemanticSupervisionError(
                f"loss.semantic.start_entropy_bits={start_entropy_bits} must be >= 0 or null (no gate)"
            )
        self.start_step, self.warmup_steps = int(start_step), int(warmup_steps)
        self.start_entropy_bits = None if start_entropy_bits is None else float(start_entropy_bits)
        # The step the term began (-1: not yet) and the gate's average entropy: host numbers (read
        # every step without a device sync), kept in the state dict as extra state for a resume.
        self.started_at = -1 if start_entropy_bits is not None else self.start_step
        self.entropy_average = 0.0
        self.last_observed_step = -1
        self.weight, self.group, self.layers = float(weight), int(group), int(layers)
        self.units_name, self.language = units, language
        self.utterances_per_step, self.max_seconds, self.hidden = int(utterances_per_step), float(max_seconds), hidden
        self.utterances: list[TranscribedUtterance] = []
        self.head: nn.Sequential | None = None
        self.sample_rate = 0
        self.hop_length = 1
        self.upsample = 1
        self.seed = 0

    def attach(self, codec: Codec, transcripts: Sequence[tuple[AudioEntry, str]], seed: int) -> None:
        """Check the target against the codec, keep the transcribed utterances that fit
        ``max_seconds``, and build the head (its weights from its own seed: the global RNG is untouched)."""
        quantizer = codec.quantizer
        if self.group >= quantizer.groups:
            raise SemanticSupervisionError(
                f"loss.semantic.group={self.group}, but the quantizer has {quantizer.groups} group(s)"
            )
        if self.layers > quantizer.layers:
            raise SemanticSupervisionError(
                f"loss.semantic.layers={self.layers}, but the quantizer has {quantizer.layers} layer(s) per group"
            )
        units = self._units([text for _, text in transcripts])
        self.utterances = [
            TranscribedUtterance(entry, tuple(units.encode(text)))
            for entry, text in transcripts
            if entry.seconds <= self.max_seconds and units.encode(text)
        ]
        if not self.utterances:
            raise SemanticSupervisionError(
                f"loss.semantic needs training utterances of at most {self.max_seconds:g} s "
                f"(loss.semantic.max_seconds) with a transcript (<file>.txt beside the audio); the train "
                f"split has {len(transcripts)} transcribed file(s) and none fits"
            )
        self.sample_rate, self.hop_length, self.seed = int(codec.sample_rate), int(codec.hop_length), int(seed)
        self.upsample = max(1, math.ceil(CTC_SLOTS_PER_SECOND / (self.sample_rate / self.hop_length)))
        width = quantizer.dim // quantizer.groups
        with torch.random.fork_rng(devices=[]):  # the codec's own draws stay as without the term
            torch.manual_seed(self.seed + HEAD_SEED_OFFSET)
            self.head = nn.Sequential(
                nn.Conv1d(width, self.hidden, 3, padding=1), nn.GELU(), nn.Conv1d(self.hidden, units.classes, 1)
            )
        self.units, self.classes = units, units.classes

    def _units(self, texts: list[str]) -> TextUnits:
        return CharacterUnits() if self.units_name == "characters" else PhonemeUnits(texts, self.language)

    def batch(self, step: int, rank: int = 0) -> SemanticBatch:
        """The utterances of ``step`` on ``rank``: a pure function of (seed, step, rank)."""
        rng = np.random.default_rng([self.seed, step, rank, 0x5E])
        picked = [self.utterances[i] for i in rng.choice(len(self.utterances), self.utterances_per_step)]
        waves = [read_audio(u.entry.path, self.sample_rate)[0] for u in picked]
        samples = torch.tensor([w.shape[-1] for w in waves])
        audio = torch.zeros(len(waves), 1, int(samples.max()))
        for row, wave in enumerate(waves):
            audio[row, 0, : wave.shape[-1]] = wave
        targets = torch.tensor([t for u in picked for t in u.targets])
        return SemanticBatch(audio, samples, targets, torch.tensor([len(u.targets) for u in picked]))

    def get_extra_state(self) -> dict[str, float]:
        return {"started_at": self.started_at, "entropy_average": self.entropy_average}

    def set_extra_state(self, state: dict[str, float]) -> None:
        self.started_at, self.entropy_average = int(state["started_at"]), float(state["entropy_average"])

    def waiting(self) -> bool:
        """Whether the entropy gate still decides the start."""
        return self.start_entropy_bits is not None and self.started_at < 0

    def observe(self, step: int, entropy_bits: float) -> None:
        """Follow the training batch's codebook entropy (bits per token, the mean over codebooks as
        ``train/codebook_entropy_bits_mean``, the same figure on every rank) as a moving average
        over about 20 steps, and start the term at the first step from ``start_step`` on where the
        average reaches ``start_entropy_bits``. Only a step's first call counts (the first
        micro-batch). Averaged, because one batch of still-collapsed codebooks can show 3 bits;
        latched, because it never stops again."""
        threshold = self.start_entropy_bits
        if threshold is None or self.started_at >= 0 or step == self.last_observed_step:
            return
        self.last_observed_step = step
        self.entropy_average = ENTROPY_DECAY * self.entropy_average + (1 - ENTROPY_DECAY) * entropy_bits
        average = self.entropy_average / (1 - ENTROPY_DECAY ** (step + 1))  # without the start's bias
        if step >= self.start_step and average >= threshold:
            self.started_at = step
            log.info("loss.semantic starts at step %d (codebook entropy %.2f bits per token, averaged)", step, average)

    def ramp(self, step: int) -> float:
        """The share of ``weight`` at ``step``: 0 before the term starts (``start_step``, or with
        ``start_entropy_bits`` the first step from ``start_step`` on whose codes carry that many
        bits), then rising linearly to 1 over ``warmup_steps``. Lets the codebooks settle on
        reconstruction before content pulls at the encoder (a CTC gradient before they did kept
        the demo's EMA codebooks collapsed)."""
        if self.started_at < 0 or step < self.started_at:
            return 0.0
        return min(1.0, (step - self.started_at + 1) / self.warmup_steps) if self.warmup_steps else 1.0

    def forward(self, codec: Codec, step: int, rank: int = 0) -> torch.Tensor:
        """The CTC loss (unweighted, not ramped) of this step's utterances, read from the chosen group."""
        if self.head is None:
            raise RuntimeError("SemanticSupervision.attach(codec, transcripts, seed) must run before training")
        device = next(self.head.parameters()).device
        batch = self.batch(step, rank)
        latent = codec.latent(batch.audio.to(device))
        view = codec.quantizer.semantic_view(latent, self.group, self.layers)
        logits = self.head(view.float()).repeat_interleave(self.upsample, dim=-1)
        slots = torch.div(batch.samples + self.hop_length - 1, self.hop_length, rounding_mode="floor") * self.upsample
        log_probs = logits.log_softmax(1).permute(2, 0, 1)  # [T, B, classes]
        return F.ctc_loss(
            log_probs, batch.targets.to(device), slots.to(device), batch.target_lengths.to(device), zero_infinity=True
        )
