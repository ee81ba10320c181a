"""Using a trained codec: load a checkpoint, encode audio to codes, decode codes to audio."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from codec.config import build_codec
from codec.data.audio_io import read_audio, write_audio
from codec.model import Codec

CODES_FORMAT = "grvq-codes/1"


def load_codec(checkpoint: Path | str, device: str | torch.device = "cpu", use_ema: bool = True) -> Codec:
    """The codec stored in a training checkpoint (EMA weights when the run kept them)."""
    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=False)
    codec = build_codec(OmegaConf.create(state["config"]))
    weights = state["ema_codec"] if use_ema and state.get("ema_codec") else state["codec"]
    codec.load_state_dict(weights)
    return codec.to(device).eval()


def encode_file(codec: Codec, audio_path: Path | str, codes_path: Path | str, n_layers: int | None = None) -> dict[str, Any]:
    """Audio file -> ``.pt`` with int16 codes [G*n, frames] and what is needed to decode them."""
    wav = read_audio(audio_path, codec.sample_rate)
    device = next(codec.parameters()).device
    codes = codec.encode(wav.unsqueeze(0).to(device), n_layers=n_layers)[0]
    payload = {
        "format": CODES_FORMAT,
        "codes": codes.to(torch.int16 if codec.quantizer.codebook_size <= 32768 else torch.int32).cpu(),
        "length": wav.shape[-1],
        "sample_rate": codec.sample_rate,
        "groups": codec.quantizer.groups,
        "layers": codes.shape[0] // codec.quantizer.groups,
    }
    torch.save(payload, codes_path)
    return payload


def decode_file(codec: Codec, codes_path: Path | str, audio_path: Path | str) -> torch.Tensor:
    payload = torch.load(codes_path, map_location="cpu", weights_only=False)
    if payload.get("format") != CODES_FORMAT:
        raise ValueError(f"{codes_path} is not a codes file written by `python -m codec encode`")
    if payload["sample_rate"] != codec.sample_rate or payload["groups"] != codec.quantizer.groups:
        raise ValueError(f"{codes_path} was encoded by a different codec (sample_rate/groups differ)")
    device = next(codec.parameters()).device
    wav = codec.decode(payload["codes"].long().unsqueeze(0).to(device), length=payload["length"])[0]
    write_audio(audio_path, wav, codec.sample_rate)
    return wav
