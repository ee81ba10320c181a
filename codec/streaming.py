"""Chunk-by-chunk encoding and decoding of causal codecs, equal to offline processing.

A causal SEANet looks only at the past, so it can code audio as it arrives: each convolution
keeps the last ``kernel - stride`` input samples of the previous chunk, each transposed
convolution keeps the tail of its output that the next chunk's frames overlap, and each LSTM
keeps its hidden state. With chunks of whole frames (multiples of the hop), the streamed output
equals the offline output within float tolerance (``tests/unit/test_streaming.py``). The algorithmic
latency is one chunk: a frame is coded once its last sample has arrived.

Non-causal models are refused: their centred convolutions look ahead by half a kernel at every
layer, which no chunking can give them.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F

from codec.model import Codec
from codec.modules.conv import CausalOrCenteredConv1d, CausalOrCenteredConvTranspose1d, Snake
from codec.modules.seanet import ResidualUnit, SEANetDecoder, SEANetEncoder, SkipLSTM

# Modules that act on each time step alone: streaming them needs no state.
POINTWISE = (nn.ELU, nn.LeakyReLU, nn.GELU, nn.Identity, Snake)


class StreamingError(ValueError):
    """The codec, or a chunk given to it, cannot be streamed."""


class _Streamer:
    """Runs one module tree on successive chunks, keeping each stateful layer's state."""

    def __init__(self, root: nn.Module) -> None:
        self.root = root
        self.states: dict[int, Any] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(self.root, x)

    def _run(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if isinstance(module, (SEANetEncoder, SEANetDecoder)):
            return self._run(module.model, x)
        if isinstance(module, nn.Sequential):
            for child in module:
                x = self._run(child, x)
            return x
        if isinstance(module, ResidualUnit):
            return x + self._run(module.block, x)
        if isinstance(module, CausalOrCenteredConv1d):
            return self._conv(module, x)
        if isinstance(module, CausalOrCenteredConvTranspose1d):
            return self._transposed(module, x)
        if isinstance(module, SkipLSTM):
            y, state = module.lstm(x.transpose(1, 2), self.states.get(id(module)))
            self.states[id(module)] = state
            return x + y.transpose(1, 2)
        if isinstance(module, POINTWISE):
            return module(x)
        raise StreamingError(
            f"{type(module).__name__} has no streaming rule; stream SEANet-family codecs, or add one to "
            "codec/streaming.py"
        )

    def _conv(self, module: CausalOrCenteredConv1d, x: torch.Tensor) -> torch.Tensor:
        """The offline left padding (kernel - stride zeros) becomes the previous chunk's last samples."""
        if x.shape[-1] % module.stride:
            raise StreamingError(f"a chunk of {x.shape[-1]} samples does not divide into strides of {module.stride}")
        history = module.effective_kernel - module.stride
        previous = self.states.get(id(module))
        if previous is None:
            previous = x.new_zeros(*x.shape[:-1], history)
        joined = torch.cat([previous, x], dim=-1)
        self.states[id(module)] = joined[..., joined.shape[-1] - history :] if history > 0 else joined[..., :0]
        return module.conv(joined)

    def _transposed(self, module: CausalOrCenteredConvTranspose1d, x: torch.Tensor) -> torch.Tensor:
        """Overlap-add: the part of each chunk's output that reaches past its frames waits for the next."""
        conv = cast(nn.ConvTranspose1d, module.conv)
        full = F.conv_transpose1d(x, conv.weight, None, stride=module.stride)
        tail = self.states.get(id(module))
        if tail is not None:
            full = torch.cat([full[..., : tail.shape[-1]] + tail, full[..., tail.shape[-1] :]], dim=-1)
        ready = x.shape[-1] * module.stride
        self.states[id(module)] = full[..., ready:]
        out = full[..., :ready]
        return out if conv.bias is None else out + conv.bias.view(1, -1, 1)


class StreamingCodec:
    """A causal codec coding audio chunk by chunk: ``encode_chunk``, ``decode_chunk``, ``process``.

    Every chunk must hold whole frames (a multiple of ``hop_length`` samples); call :meth:`reset`
    before a new stream.
    """

    def __init__(self, codec: Codec) -> None:
        for part in (codec.encoder, codec.decoder):
            settings = getattr(part, "settings", None)
            if settings is None or not getattr(settings, "causal", False):
                raise StreamingError(
                    f"this codec's {type(part).__name__} is not causal (encoder.causal=false): its centred "
                    "convolutions look ahead, so streamed output could not equal offline output. "
                    "Train a causal model (encoder.causal=true) to stream."
                )
        self.codec = codec
        self.hop_length = codec.hop_length
        self.reset()

    def reset(self) -> None:
        self._encoder = _Streamer(self.codec.encoder)
        self._decoder = _Streamer(self.codec.decoder)

    def latency_seconds(self, chunk_samples: int) -> float:
        """Algorithmic latency for chunks of ``chunk_samples``: the chunk must be complete first."""
        return chunk_samples / self.codec.sample_rate

    def _check(self, samples: int) -> None:
        if samples % self.hop_length or samples == 0:
            raise StreamingError(
                f"a chunk of {samples} samples is not a whole number of frames of {self.hop_length} samples"
            )

    @torch.no_grad()
    def encode_chunk(self, wav: torch.Tensor) -> torch.Tensor:
        """Audio [B, 1, n x hop] -> codes [B, codebooks, n]."""
        self._check(wav.shape[-1])
        return self.codec.quantizer.encode(self._encoder(wav))

    @torch.no_grad()
    def decode_chunk(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, codebooks, n] -> audio [B, 1, n x hop]."""
        return self._decoder(self.codec.quantizer.decode(codes))

    def process(self, wav: torch.Tensor) -> torch.Tensor:
        """Encode then decode one chunk: what a listener at the far end of a call would hear."""
        return self.decode_chunk(self.encode_chunk(wav))
