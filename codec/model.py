"""The codec: encoder -> group-residual quantizer -> decoder, with bitrate bookkeeping."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn
from torch.nn import functional as F

from codec.quantization.base import BaseQuantizer, QuantizedResult

if TYPE_CHECKING:
    from codec.streaming import StreamingCodec


@dataclass
class CodecOutput:
    """Reconstruction [B, 1, T] plus everything the quantizer reported."""

    audio: torch.Tensor
    quantizer: QuantizedResult


class Codec(nn.Module):
    """A neural audio codec. ``encode``/``decode`` work on whole waveforms of any length.

    The encoder must provide ``hop_length``, ``dimension`` and ``make_decoder()``; the decoder
    is the encoder's mirror unless one is passed explicitly. The quantizer is used only through
    the :class:`~codec.quantization.base.BaseQuantizer` contract.
    """

    # Set when loaded from a training checkpoint: the run's identity and its recorded valid/test split.
    identity: str = ""
    split_record: dict[str, Any] | None = None

    def __init__(
        self, encoder: nn.Module, quantizer: BaseQuantizer, sample_rate: int, decoder: nn.Module | None = None
    ) -> None:
        super().__init__()
        if not isinstance(quantizer, BaseQuantizer):
            raise ValueError(
                f"quantizer {type(quantizer).__name__} does not implement codec.quantization.base.BaseQuantizer"
            )
        if quantizer.dim != encoder.dimension:
            raise ValueError(f"quantizer.dim={quantizer.dim} must equal encoder.dimension={encoder.dimension}")
        self.encoder = encoder
        self.quantizer = quantizer
        contract = cast(Any, encoder)  # the encoder contract above, which nn.Module's typing cannot express
        self.decoder: nn.Module = decoder if decoder is not None else contract.make_decoder()
        self.sample_rate = int(sample_rate)
        self.hop_length: int = int(contract.hop_length)

    # -- bookkeeping -------------------------------------------------------------------------
    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def num_codebooks(self) -> int:
        return self.quantizer.num_codebooks

    def tokens_per_second(self, n_layers: int | None = None) -> float:
        return self.frame_rate * self.quantizer.codebooks_in_use(n_layers)

    def bitrate_kbps(self, n_layers: int | None = None) -> float:
        return self.frame_rate * self.quantizer.bits_per_frame(n_layers) / 1000.0

    # -- signal path -------------------------------------------------------------------------
    def _pad(self, wav: torch.Tensor) -> tuple[torch.Tensor, int]:
        if wav.dim() == 2:
            wav = wav.unsqueeze(1)
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise ValueError(f"expected mono audio [B, 1, T] or [B, T]; got shape {tuple(wav.shape)}")
        length = wav.shape[-1]
        padded = math.ceil(length / self.hop_length) * self.hop_length
        return F.pad(wav, (0, padded - length)), length

    def forward(self, wav: torch.Tensor, n_layers: int | None = None) -> CodecOutput:
        padded, length = self._pad(wav)
        latent = self.encoder(padded)
        quantized = self.quantizer(latent, n_layers)
        audio = self.decoder(quantized.quantized.to(latent.dtype))[..., :length]
        return CodecOutput(audio, quantized)

    def latent(self, wav: torch.Tensor) -> torch.Tensor:
        """The encoder's latent [B, dim, frames] of a waveform, with gradient (auxiliary losses)."""
        padded, _ = self._pad(wav)
        return self.encoder(padded)

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, n_layers: int | None = None) -> torch.Tensor:
        """Waveform [B, 1, T] -> codes [B, groups * n_layers, ceil(T / hop_length)]."""
        padded, _ = self._pad(wav)
        return self.quantizer.encode(self.encoder(padded), n_layers)

    def stream(self) -> StreamingCodec:
        """A chunk-by-chunk coder equal to offline coding (causal encoders only; see codec.streaming)."""
        from codec.streaming import StreamingCodec

        return StreamingCodec(self)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Codes -> waveform [B, 1, frames * hop_length], trimmed to ``length`` when given."""
        audio = self.decoder(self.quantizer.decode(codes))
        return audio if length is None else audio[..., :length]
