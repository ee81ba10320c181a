"""Using a trained codec: load a checkpoint, encode audio to codes, decode codes to audio.

Codes files are meant to be shared, so they are plain data: a NumPy ``.npz`` archive read with
``allow_pickle=False`` (nothing in it can execute), holding

- ``codes``: int16 (int32 for codebooks above 32768 codes) [codebooks, frames];
- ``sample_rate``, ``length`` (samples of the original), ``groups``, ``layers``, ``codebook_size``;
- ``identity``: the run identity of the codec that wrote them, and ``format``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from codec.config import build_codec
from codec.data.audio_io import read_audio, write_audio
from codec.messages import error_summary
from codec.model import Codec
from codec.training.checkpoint import safe_load

CODES_FORMAT = "grvq-codes/2"


def load_codec(checkpoint: Path | str, device: str | torch.device = "cpu", use_ema: bool = True) -> Codec:
    """The codec stored in a training checkpoint (EMA weights when the run kept them).

    The checkpoint is read as data only (``weights_only=True``): a crafted file is refused.
    """
    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = safe_load(path)
    except Exception as error:
        raise ValueError(f"{path} is not a loadable training checkpoint ({error_summary(error)})") from error
    if not isinstance(state, dict) or "config" not in state or "codec" not in state:
        raise ValueError(f"{path} is not a training checkpoint written by train.py")
    codec = build_codec(OmegaConf.create(dict(state["config"])))
    weights = state["ema_codec"] if use_ema and state.get("ema_codec") else state["codec"]
    codec.load_state_dict(weights)
    codec.identity = state.get("identity", "")
    codec.split_record = state.get("splits")  # valid and test as the run recorded them (None if older)
    return codec.to(device).eval()


def encode_file(
    codec: Codec, audio_path: Path | str, codes_path: Path | str, n_layers: int | None = None
) -> dict[str, Any]:
    """Audio file -> ``.npz`` codes file (see the module docstring)."""
    wav = read_audio(audio_path, codec.sample_rate)
    device = next(codec.parameters()).device
    codes = codec.encode(wav.unsqueeze(0).to(device), n_layers=n_layers)[0]
    quantizer = codec.quantizer
    payload = {
        "format": np.array(CODES_FORMAT),
        "codes": codes.cpu().numpy().astype(np.int16 if quantizer.codebook_size <= 32768 else np.int32),
        "length": np.array(wav.shape[-1]),
        "sample_rate": np.array(codec.sample_rate),
        "groups": np.array(quantizer.groups),
        "layers": np.array(codes.shape[0] // quantizer.groups),
        "codebook_size": np.array(quantizer.codebook_size),
        "identity": np.array(getattr(codec, "identity", "")),
    }
    codes_path = Path(codes_path)
    codes_path.parent.mkdir(parents=True, exist_ok=True)
    with open(codes_path, "wb") as handle:  # a file handle, so numpy does not append ".npz"
        np.savez(handle, **payload)  # type: ignore[arg-type]  # numpy's stub types **kwds too narrowly
    return payload


def read_codes(codes_path: Path | str) -> dict[str, Any]:
    """A codes file's fields; refuses anything else (a wav, a pickle) with a one-line reason."""
    path = Path(codes_path)
    if not path.exists():
        raise FileNotFoundError(f"codes file {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            fields = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        raise ValueError(
            f"{path} is not a codes file written by `python -m codec encode` ({type(error).__name__})"
        ) from error
    if str(fields.get("format", "")) != CODES_FORMAT:
        raise ValueError(
            f"{path} is not a codes file written by `python -m codec encode` (format {fields.get('format')!r})"
        )
    return fields


def decode_file(codec: Codec, codes_path: Path | str, audio_path: Path | str) -> torch.Tensor:
    """Decode a codes file, refusing codes another codec wrote (their numbers would mean other
    vectors: wrong audio without a word), codes outside the codebooks and files with no frames."""
    fields = read_codes(codes_path)
    check_codes_fit(codec, fields, codes_path)
    device = next(codec.parameters()).device
    codes = torch.from_numpy(fields["codes"].astype(np.int64)).unsqueeze(0).to(device)
    wav = codec.decode(codes, length=int(fields["length"]))[0]
    write_audio(audio_path, wav, codec.sample_rate)
    return wav


def _layout(sample_rate: int, groups: int, layers: int, codebook_size: int) -> str:
    return f"{groups} groups x {layers} layers of {codebook_size} codes at {sample_rate} Hz"


def check_codes_fit(codec: Codec, fields: Mapping[str, Any], codes_path: Path | str) -> None:
    quantizer = codec.quantizer
    written = str(fields.get("identity", ""))
    mine = str(getattr(codec, "identity", ""))
    theirs = _layout(
        int(fields["sample_rate"]), int(fields["groups"]), int(fields["layers"]), int(fields["codebook_size"])
    )
    ours = _layout(codec.sample_rate, quantizer.groups, quantizer.layers, quantizer.codebook_size)
    if (written and mine and written != mine) or (
        int(fields["sample_rate"]) != codec.sample_rate
        or int(fields["groups"]) != quantizer.groups
        or int(fields["codebook_size"]) != quantizer.codebook_size
    ):
        raise ValueError(
            f"{codes_path} was encoded by codec {written[:12] or '?'} ({theirs}); this checkpoint is codec "
            f"{mine[:12] or '?'} ({ours}): decode with the checkpoint that encoded it"
        )
    codes = fields["codes"]
    if codes.ndim != 2 or codes.shape[-1] == 0:
        raise ValueError(f"{codes_path} holds no frames (codes of shape {tuple(codes.shape)})")
    low, high = int(codes.min()), int(codes.max())
    if low < 0 or high >= quantizer.codebook_size:
        raise ValueError(
            f"{codes_path} holds codes from {low} to {high}, outside this codec's 0..{quantizer.codebook_size - 1}"
        )
