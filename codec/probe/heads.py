"""A small probe on frozen codes: an embedding per codebook, summed, then a 1D conv head."""

from __future__ import annotations

import torch
from torch import nn

from codec.text.units import BLANK, CHARACTERS, ids_to_text, text_to_ids

__all__ = ["BLANK", "CHARACTERS", "TokenProbe", "greedy_ctc", "ids_to_text", "text_to_ids"]


def greedy_ctc(log_probs: torch.Tensor, length: int) -> list[int]:
    """Best path of one utterance's [frames, classes] log-probabilities, repeats and blanks removed."""
    best = log_probs[:length].argmax(-1).tolist()
    return [c for i, c in enumerate(best) if c != BLANK and (i == 0 or c != best[i - 1])]


class TokenProbe(nn.Module):
    """Codes [B, K, T] -> [B, outputs, T * upsample]. A masked codebook reads one learned
    "masked" embedding at every frame, so it carries no information about the input."""

    offsets: torch.Tensor

    def __init__(
        self, num_codebooks: int, codebook_size: int, outputs: int, embedding_dim: int, hidden: int, upsample: int = 1
    ) -> None:
        super().__init__()
        self.codebook_size, self.upsample = codebook_size, upsample
        self.embedding = nn.Embedding(num_codebooks * (codebook_size + 1), embedding_dim)
        self.register_buffer(
            "offsets", torch.arange(num_codebooks).view(1, -1, 1) * (codebook_size + 1), persistent=False
        )
        self.head = nn.Sequential(
            nn.Conv1d(embedding_dim, hidden, 5, padding=2),
            nn.GELU(),
            nn.Conv1d(hidden, hidden, 5, padding=2),
            nn.GELU(),
            nn.Conv1d(hidden, outputs, 1),
        )

    def forward(self, codes: torch.Tensor, masked: list[int] | tuple[int, ...] = ()) -> torch.Tensor:
        codes = codes.clone()
        if masked:
            codes[:, list(masked)] = self.codebook_size
        x = self.embedding(codes + self.offsets).sum(1).transpose(1, 2)  # [B, dim, T]
        if self.upsample > 1:
            x = x.repeat_interleave(self.upsample, dim=-1)
        return self.head(x)
