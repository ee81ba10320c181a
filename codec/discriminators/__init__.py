"""Discriminators: MS-STFT (EnCodec), MPD and MSD (HiFi-GAN), multi-band multi-resolution STFT (DAC)."""

from codec.discriminators.base import DiscriminatorOutput, MultiDiscriminator
from codec.discriminators.mpd import MultiPeriodDiscriminator
from codec.discriminators.mrd import MultiBandMultiResolutionDiscriminator
from codec.discriminators.msd import MultiScaleDiscriminator
from codec.discriminators.msstft import MultiScaleSTFTDiscriminator

__all__ = [
    "DiscriminatorOutput",
    "MultiBandMultiResolutionDiscriminator",
    "MultiDiscriminator",
    "MultiPeriodDiscriminator",
    "MultiScaleDiscriminator",
    "MultiScaleSTFTDiscriminator",
]
