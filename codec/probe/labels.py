"""The probes' labelled set: a split's codes with each utterance's speaker and transcript."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from codec.model import Codec


class ProbeDataError(ValueError):
    """The data cannot label a probe (no speakers, no transcripts, too few utterances)."""


@dataclass
class LabelledCodes:
    """Codes [codebooks, frames] per utterance, with its speaker index and transcript ('' if none)."""

    names: list[str]
    codes: list[torch.Tensor]
    speakers: list[int]
    speaker_names: list[str]
    texts: list[str]
    codebook_size: int
    groups: int
    layers: int
    frame_rate: float

    def subset(self, indices: list[int]) -> LabelledCodes:
        pick = lambda items: [items[i] for i in indices]  # noqa: E731
        return LabelledCodes(
            pick(self.names),
            pick(self.codes),
            pick(self.speakers),
            self.speaker_names,
            pick(self.texts),
            self.codebook_size,
            self.groups,
            self.layers,
            self.frame_rate,
        )


def speaker_of(relative_name: str, pattern: str) -> str:
    """The speaker named by ``pattern``'s first group in a file's path relative to the data root."""
    match = re.search(pattern, Path(relative_name).with_suffix("").as_posix())
    if not match or not match.groups():
        raise ProbeDataError(
            f"probe.speaker_pattern={pattern!r} finds no speaker in {relative_name!r}; give a regular "
            "expression whose first group is the speaker (e.g. '([^/]+)/[^/]+$' for one folder per speaker)"
        )
    return match.group(1)


@torch.no_grad()
def encode_labelled(
    codec: Codec, data, split: str, speaker_pattern: str, max_utterances: int | None = None
) -> LabelledCodes:
    """Encode every utterance of ``split`` with the frozen ``codec`` and label it."""
    codec = codec.eval()
    device = next(codec.parameters()).device
    root = data.root().resolve()
    transcripts = data.transcripts(split)
    names, codes, speakers, texts = [], [], [], []
    for name, wav in data.utterances(split, max_utterances):
        relative = Path(name).resolve().relative_to(root).as_posix()
        names.append(relative)
        speakers.append(speaker_of(relative, speaker_pattern))
        texts.append(transcripts.get(name, ""))
        codes.append(codec.encode(wav.reshape(1, 1, -1).to(device))[0].cpu())
    if len(names) < 4:
        raise ProbeDataError(f"probe: split {split!r} has {len(names)} utterance(s); probes need at least 4")
    speaker_names = sorted(set(speakers))
    q = codec.quantizer
    return LabelledCodes(
        names,
        codes,
        [speaker_names.index(s) for s in speakers],
        speaker_names,
        texts,
        int(q.codebook_size),
        int(q.groups),
        int(q.layers),
        float(codec.frame_rate),
    )
