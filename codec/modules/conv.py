"""Convolutions whose output length is exactly ``input_length / stride`` (or ``* stride``).

Padding is computed from the kernel, stride and dilation, so any stack of these layers keeps
the time axis aligned; ``causal=True`` puts all the padding on the left (streaming-friendly).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import weight_norm as _weight_norm


def _maybe_weight_norm(module: nn.Module, enabled: bool) -> nn.Module:
    return _weight_norm(module) if enabled else module


class CausalOrCenteredConv1d(nn.Module):
    """Conv1d with automatic padding so that ``T_out = ceil(T_in / stride)``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        causal: bool = False,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        self.conv = _maybe_weight_norm(
            nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, groups=groups),
            weight_norm,
        )
        self.stride = stride
        self.causal = causal
        self.effective_kernel = (kernel_size - 1) * dilation + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        padding_total = self.effective_kernel - self.stride
        # Extra right padding so the last (partial) frame is still produced.
        frames = -(-length // self.stride)
        ideal_length = (frames - 1) * self.stride + self.effective_kernel
        extra = max(ideal_length - (length + padding_total), 0)
        if self.causal:
            left, right = padding_total, extra
        else:
            right = padding_total // 2
            left = padding_total - right
            right += extra
        return self.conv(F.pad(x, (left, right)))


class CausalOrCenteredConvTranspose1d(nn.Module):
    """ConvTranspose1d trimmed so that ``T_out = T_in * stride``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        causal: bool = False,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        self.conv = _maybe_weight_norm(
            nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride), weight_norm
        )
        self.stride = stride
        self.causal = causal
        self.trim_total = kernel_size - stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.causal:
            left, right = 0, self.trim_total
        else:
            right = self.trim_total // 2
            left = self.trim_total - right
        return y[..., left : y.shape[-1] - right]


class Snake(nn.Module):
    """Periodic activation ``x + sin^2(a x) / a`` with a learned per-channel ``a`` (DAC, BigVGAN)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.sin(self.alpha * x).pow(2) / (self.alpha + 1e-9)


ACTIVATIONS = ("elu", "snake", "leaky_relu", "gelu")


def make_activation(name: str, channels: int) -> nn.Module:
    """Activation by config name; Snake needs the channel count for its learned frequencies."""
    if name == "elu":
        return nn.ELU()
    if name == "snake":
        return Snake(channels)
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2)
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"activation={name!r} is unknown; choose one of {ACTIVATIONS}")
