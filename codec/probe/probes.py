"""Train and score the token probes on a frozen codec (the ``probe=`` config group's target)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from codec.evaluation.speech_quality import edit_distance
from codec.model import Codec
from codec.probe.heads import CHARACTERS, TokenProbe, greedy_ctc, text_to_ids
from codec.probe.labels import LabelledCodes, ProbeDataError, encode_labelled, speaker_of

log = logging.getLogger(__name__)

TASKS = ("speaker", "content")
# Character slots per second the content probe's output must offer (speech: ~15 characters/s).
CTC_SLOTS_PER_SECOND = 30.0


def pad_codes(
    codes: Sequence[torch.Tensor], shuffle_time: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes [K, T_i] -> padded [B, K, max T] and lengths; ``shuffle_time`` permutes each
    utterance's frames (all codebooks alike): the control that keeps which codes occur, not when."""
    lengths = torch.tensor([c.shape[-1] for c in codes])
    batch = torch.zeros(len(codes), codes[0].shape[0], int(lengths.max()), dtype=torch.long)
    for i, c in enumerate(codes):
        if shuffle_time is not None:
            c = c[:, torch.randperm(c.shape[-1], generator=shuffle_time)]
        batch[i, :, : c.shape[-1]] = c
    return batch, lengths


class TokenProbes:
    """Speaker and content probes on a codec's frozen codes, with per-codebook masking.

    Every ``held_out_every``-th utterance of ``split`` (per speaker) is held out, so the speaker
    probe is scored on sentences it never saw from voices it knows, and the content probe on
    unseen sentences. Metrics (``probe/...``):

    - ``speaker_accuracy`` and ``speaker_chance`` (the most frequent held-out speaker's share);
    - ``content_cer`` (greedy CTC character error rate) and ``content_cer_shuffled``: the same
      probe on codes whose frames are shuffled in time, the control a content probe must beat;
    - with ``mask_codebooks``, ``<metric>_without_group<g>`` and ``<metric>_without_layer<l>``.
    """

    def __init__(
        self,
        tasks: Sequence[str] = TASKS,
        split: str = "train",
        held_out_every: int = 5,
        speaker_pattern: str = r"([^/]+)_\d+$",
        steps: int = 300,
        learning_rate: float = 3e-3,
        embedding_dim: int = 64,
        hidden: int = 128,
        mask_codebooks: bool = True,
        max_utterances: int | None = None,
        seed: int = 0,
    ) -> None:
        unknown = sorted(set(tasks) - set(TASKS))
        if unknown or not tasks:
            raise ValueError(f"probe.tasks={list(tasks)} must name some of {list(TASKS)}")
        if held_out_every < 2 or steps < 1 or learning_rate <= 0:
            raise ValueError(
                f"probe: held_out_every={held_out_every} must be at least 2, steps={steps} and "
                f"learning_rate={learning_rate} positive"
            )
        self.tasks, self.split, self.held_out_every, self.speaker_pattern = (
            list(tasks),
            split,
            int(held_out_every),
            speaker_pattern,
        )
        self.steps, self.learning_rate, self.embedding_dim, self.hidden = (
            int(steps),
            float(learning_rate),
            int(embedding_dim),
            int(hidden),
        )
        self.mask_codebooks, self.max_utterances, self.seed = bool(mask_codebooks), max_utterances, int(seed)

    # -- the labelled set ------------------------------------------------------------------------
    def held_out_indices(self, speakers: Sequence) -> tuple[list[int], list[int]]:
        """Indices that train and that are held out: every ``held_out_every``-th utterance of each speaker."""
        train: list[Any] = []
        test: list[Any] = []
        seen: dict[Any, Any] = {}
        for index, speaker in enumerate(speakers):
            seen[speaker] = seen.get(speaker, 0) + 1
            (test if seen[speaker] % self.held_out_every == 0 else train).append(index)
        if not test or not train:
            raise ProbeDataError(
                f"probe: {len(speakers)} utterance(s) of {len(seen)} speaker(s) in split {self.split!r} are too few "
                f"to hold every {self.held_out_every}th utterance of a speaker out (probe.held_out_every)"
            )
        return train, test

    def split_held_out(self, labelled: LabelledCodes) -> tuple[LabelledCodes, LabelledCodes]:
        train, test = self.held_out_indices(labelled.speakers)
        return labelled.subset(train), labelled.subset(test)

    def check(self, data) -> None:
        """Refuse, before any training, data that cannot label these probes (speakers, transcripts, sizes)."""
        entries = data.split(self.split)[: self.max_utterances or None]
        root = data.root().resolve()
        speakers = [
            speaker_of(Path(e.name).resolve().relative_to(root).as_posix(), self.speaker_pattern) for e in entries
        ]
        self.held_out_indices(speakers)
        if "speaker" in self.tasks and len(set(speakers)) < 2:
            raise ProbeDataError(
                f"probe: the speaker probe needs at least 2 speakers; probe.speaker_pattern={self.speaker_pattern!r} "
                f"finds {sorted(set(speakers))}"
            )
        if "content" in self.tasks:
            missing = len(entries) - len(data.transcripts(self.split))
            if missing:
                raise ProbeDataError(
                    f"probe: the content probe needs a transcript (<file>.txt beside the audio) for every utterance of "
                    f"split {self.split!r}; {missing} have none. Drop it with probe.tasks=[speaker]"
                )

    def masks(self, labelled: LabelledCodes) -> dict[str, list[int]]:
        """Name -> codebook indices to mask; codes are group-major (group * layers + layer)."""
        found: dict[str, list[int]] = {"": []}
        if not self.mask_codebooks:
            return found
        groups, layers = labelled.groups, labelled.layers
        if groups > 1:
            found.update({f"_without_group{g}": [g * layers + k for k in range(layers)] for g in range(groups)})
        if layers > 1:
            found.update({f"_without_layer{k}": [g * layers + k for g in range(groups)] for k in range(layers)})
        return found

    # -- training --------------------------------------------------------------------------------
    def _train(self, probe: TokenProbe, loss_fn) -> None:
        optimizer = torch.optim.AdamW(probe.parameters(), lr=self.learning_rate)
        probe.train()
        for _ in range(self.steps):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn()
            loss.backward()
            optimizer.step()
        probe.eval()

    def speaker_accuracy(self, train: LabelledCodes, test: LabelledCodes, masked: list[int]) -> float:
        codes, lengths = pad_codes(train.codes)
        labels = torch.tensor(train.speakers)
        probe = TokenProbe(
            codes.shape[1], train.codebook_size, len(train.speaker_names), self.embedding_dim, self.hidden
        )

        def pooled(batch: torch.Tensor, batch_lengths: torch.Tensor) -> torch.Tensor:
            logits = probe(batch, masked)
            valid = (torch.arange(logits.shape[-1]) < batch_lengths[:, None]).unsqueeze(1)
            return (logits * valid).sum(-1) / batch_lengths[:, None]

        self._train(probe, lambda: F.cross_entropy(pooled(codes, lengths), labels))
        with torch.no_grad():
            test_codes, test_lengths = pad_codes(test.codes)
            predicted = pooled(test_codes, test_lengths).argmax(-1)
        return float((predicted == torch.tensor(test.speakers)).float().mean())

    def content_cer(self, train: LabelledCodes, test: LabelledCodes, masked: list[int], shuffle: bool = False) -> float:
        shuffler = torch.Generator().manual_seed(self.seed) if shuffle else None
        codes, lengths = pad_codes(train.codes, shuffler)
        targets = [torch.tensor(text_to_ids(t)) for t in train.texts]
        frames_per_second = train.frame_rate
        upsample = max(1, math.ceil(CTC_SLOTS_PER_SECOND / frames_per_second))
        probe = TokenProbe(
            codes.shape[1], train.codebook_size, len(CHARACTERS) + 1, self.embedding_dim, self.hidden, upsample
        )
        flat_targets, target_lengths = torch.cat(targets), torch.tensor([len(t) for t in targets])

        def loss() -> torch.Tensor:
            log_probs = probe(codes, masked).log_softmax(1).permute(2, 0, 1)  # [T, B, C]
            return F.ctc_loss(log_probs, flat_targets, lengths * upsample, target_lengths, zero_infinity=True)

        self._train(probe, loss)
        errors, characters = 0, 0
        with torch.no_grad():
            test_codes, test_lengths = pad_codes(test.codes, shuffler)
            log_probs = probe(test_codes, masked).log_softmax(1).transpose(1, 2)  # [B, T, C]
            for row, length, text in zip(log_probs, test_lengths, test.texts):
                truth = text_to_ids(text)
                errors += edit_distance(truth, greedy_ctc(row, int(length) * upsample))
                characters += len(truth)
        return errors / max(characters, 1)

    # -- the whole set ---------------------------------------------------------------------------
    def run(self, codec: Codec, data) -> dict[str, float]:
        """Encode ``data``'s split with the frozen ``codec``, train every probe, return ``probe/*`` metrics."""
        labelled = encode_labelled(codec, data, self.split, self.speaker_pattern, self.max_utterances)
        return self.run_on(labelled)

    def run_on(self, labelled: LabelledCodes) -> dict[str, float]:
        train, test = self.split_held_out(labelled)
        tasks = list(self.tasks)
        if "speaker" in tasks and len(labelled.speaker_names) < 2:
            raise ProbeDataError(
                f"probe: the speaker probe needs at least 2 speakers; probe.speaker_pattern={self.speaker_pattern!r} "
                f"finds {labelled.speaker_names}"
            )
        if "content" in tasks and not all(text_to_ids(t) for t in labelled.texts):
            raise ProbeDataError(
                "probe: the content probe needs a transcript (<file>.txt beside the audio) for every utterance of "
                f"split {self.split!r}; drop it with probe.tasks=[speaker]"
            )
        metrics: dict[str, float] = {}
        with torch.random.fork_rng(devices=[]):
            for suffix, masked in self.masks(labelled).items():
                torch.manual_seed(self.seed)
                if "speaker" in tasks:
                    metrics[f"probe/speaker_accuracy{suffix}"] = self.speaker_accuracy(train, test, masked)
                if "content" in tasks:
                    metrics[f"probe/content_cer{suffix}"] = self.content_cer(train, test, masked)
                log.info(
                    "probe%s: %s",
                    suffix or " (all codebooks)",
                    {k: round(v, 3) for k, v in metrics.items() if k.endswith(suffix or "")},
                )
            if "content" in tasks:
                torch.manual_seed(self.seed)
                metrics["probe/content_cer_shuffled"] = self.content_cer(train, test, [], shuffle=True)
        if "speaker" in tasks:
            counts = torch.bincount(torch.tensor(test.speakers), minlength=len(labelled.speaker_names))
            metrics["probe/speaker_chance"] = float(counts.max()) / len(test.speakers)
        metrics["probe/utterances_train"], metrics["probe/utterances_test"] = (
            float(len(train.names)),
            float(len(test.names)),
        )
        return metrics
