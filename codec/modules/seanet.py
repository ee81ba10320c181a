"""SEANet-family encoder and its mirrored decoder (EnCodec, SoundStream, HiFi-Codec, DAC).

One class covers all of them: the DAC variant is the same topology with Snake activations,
three dilated residual units per block and no LSTM.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from codec.modules.conv import (
    ACTIVATIONS,
    CausalOrCenteredConv1d,
    CausalOrCenteredConvTranspose1d,
    make_activation,
)


class ResidualUnit(nn.Module):
    """activation -> dilated conv -> activation -> 1x1 conv, plus a skip connection."""

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        dilation: int,
        hidden_channels: int,
        activation: str,
        causal: bool,
        weight_norm: bool,
    ) -> None:
        super().__init__()
        self.block = nn.Sequential(
            make_activation(activation, channels),
            CausalOrCenteredConv1d(
                channels, hidden_channels, kernel_size, dilation=dilation, causal=causal, weight_norm=weight_norm
            ),
            make_activation(activation, hidden_channels),
            CausalOrCenteredConv1d(hidden_channels, channels, 1, causal=causal, weight_norm=weight_norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class SkipLSTM(nn.Module):
    """LSTM over time with a residual connection, on [B, C, T] tensors."""

    def __init__(self, channels: int, num_layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(channels, channels, num_layers, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(x.transpose(1, 2))
        return x + y.transpose(1, 2)


@dataclass(frozen=True)
class SEANetSettings:
    """The validated encoder settings, shared with the mirrored decoder."""

    channels: int
    dimension: int
    strides: list[int]
    dilations: list[int]
    residual_kernel_size: int
    kernel_size: int
    last_kernel_size: int
    compress: int
    lstm_layers: int
    activation: str
    weight_norm: bool
    causal: bool
    audio_channels: int

    def residual_units(self, width: int) -> list[nn.Module]:
        hidden = max(width // self.compress, 1)
        return [
            ResidualUnit(width, self.residual_kernel_size, d, hidden, self.activation, self.causal, self.weight_norm)
            for d in self.dilations
        ]


def _check_encoder_arguments(
    channels: int,
    dimension: int,
    strides: list[int],
    residual_units: int,
    dilations: list[int],
    compress: int,
    lstm_layers: int,
    activation: str,
) -> None:
    """Refuse a SEANet configuration that cannot be built, naming the argument."""
    _check_positive(channels=channels, dimension=dimension, residual_units=residual_units, compress=compress)
    if not strides or any(s < 1 for s in strides):
        raise ValueError(f"strides={strides} must be a non-empty list of positive integers")
    if len(dilations) != residual_units:
        raise ValueError(
            f"dilations={dilations} must have one entry per residual unit (residual_units={residual_units})"
        )
    if lstm_layers < 0:
        raise ValueError(f"lstm_layers={lstm_layers} must be >= 0")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is unknown; choose one of {ACTIVATIONS}")


class SEANetEncoder(nn.Module):
    """Waveform [B, 1, T] -> latent [B, dimension, T / prod(strides)].

    Config keys are the constructor arguments, so ``conf/encoder/*.yaml`` fully describes
    both this encoder and the decoder built by :meth:`make_decoder`.
    """

    def __init__(
        self,
        channels: int = 32,
        dimension: int = 128,
        strides: Sequence[int] = (2, 4, 5, 8),
        residual_units: int = 1,
        dilations: Sequence[int] = (1,),
        residual_kernel_size: int = 3,
        kernel_size: int = 7,
        last_kernel_size: int = 7,
        compress: int = 2,
        lstm_layers: int = 2,
        activation: str = "elu",
        weight_norm: bool = True,
        causal: bool = False,
        audio_channels: int = 1,
    ) -> None:
        super().__init__()
        strides = [int(s) for s in strides]
        dilations = [int(d) for d in dilations]
        _check_encoder_arguments(
            channels, dimension, strides, residual_units, dilations, compress, lstm_layers, activation
        )
        self.settings = SEANetSettings(
            channels,
            dimension,
            strides,
            dilations,
            residual_kernel_size,
            kernel_size,
            last_kernel_size,
            compress,
            lstm_layers,
            activation,
            weight_norm,
            causal,
            audio_channels,
        )
        self.dimension = dimension
        self.strides = strides
        self.residual_units = residual_units
        self.hop_length = math.prod(strides)
        self.model = nn.Sequential(*self._layers())

    def _layers(self) -> list[nn.Module]:
        """Input conv, then per stride: residual units, activation, strided conv doubling the width;
        an optional LSTM; the projection to ``dimension``."""
        c = self.settings
        conv = dict(causal=c.causal, weight_norm=c.weight_norm)
        layers: list[nn.Module] = [CausalOrCenteredConv1d(c.audio_channels, c.channels, c.kernel_size, **conv)]
        width = c.channels
        for stride in c.strides:
            layers += c.residual_units(width)
            layers.append(make_activation(c.activation, width))
            layers.append(CausalOrCenteredConv1d(width, width * 2, 2 * stride, stride=stride, **conv))
            width *= 2
        if c.lstm_layers:
            layers.append(SkipLSTM(width, c.lstm_layers))
        layers.append(make_activation(c.activation, width))
        layers.append(CausalOrCenteredConv1d(width, c.dimension, c.last_kernel_size, **conv))
        return layers

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.model(wav)

    def make_decoder(self) -> SEANetDecoder:
        """The decoder that mirrors this encoder: same widths, reversed strides."""
        return SEANetDecoder(self.settings)


class SEANetDecoder(nn.Module):
    """Latent [B, dimension, F] -> waveform [B, 1, F * prod(strides)], mirroring SEANetEncoder."""

    def __init__(self, settings: SEANetSettings) -> None:
        super().__init__()
        self.settings = settings
        c = settings
        conv = dict(causal=c.causal, weight_norm=c.weight_norm)
        width = c.channels * 2 ** len(c.strides)
        layers: list[nn.Module] = [CausalOrCenteredConv1d(c.dimension, width, c.kernel_size, **conv)]
        if c.lstm_layers:
            layers.append(SkipLSTM(width, c.lstm_layers))
        for stride in reversed(c.strides):
            layers.append(make_activation(c.activation, width))
            layers.append(CausalOrCenteredConvTranspose1d(width, width // 2, 2 * stride, stride=stride, **conv))
            width //= 2
            layers += c.residual_units(width)
        layers.append(make_activation(c.activation, width))
        layers.append(CausalOrCenteredConv1d(width, c.audio_channels, c.last_kernel_size, **conv))
        self.model = nn.Sequential(*layers)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.model(latent)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) < 1:
            raise ValueError(f"{name}={value} must be a positive integer")
