"""Neural building blocks: padded convolutions, activations and the SEANet encoder/decoder."""

from codec.modules.conv import CausalOrCenteredConv1d, CausalOrCenteredConvTranspose1d, Snake, make_activation
from codec.modules.seanet import SEANetDecoder, SEANetEncoder

__all__ = [
    "CausalOrCenteredConv1d",
    "CausalOrCenteredConvTranspose1d",
    "SEANetDecoder",
    "SEANetEncoder",
    "Snake",
    "make_activation",
]
