"""Streaming: a causal preset coded chunk by chunk gives the offline codes and audio; a
non-causal model refuses with a reason."""

from __future__ import annotations

import pytest
import torch

from codec.config import build_codec, compose_config
from codec.streaming import StreamingError


def stream(codec, wav: torch.Tensor, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    streamer = codec.stream()
    chunk = frames * codec.hop_length
    codes = [streamer.encode_chunk(wav[..., start : start + chunk]) for start in range(0, wav.shape[-1], chunk)]
    audio = [streamer.decode_chunk(c) for c in codes]
    return torch.cat(codes, dim=-1), torch.cat(audio, dim=-1)


@pytest.mark.parametrize("frames", [1, 4])
def test_streamed_causal_preset_equals_offline(frames: int) -> None:
    torch.manual_seed(0)
    codec = build_codec(compose_config(["experiment=encodec_24k_320x_8cb"])).eval()
    assert codec.encoder.settings.causal and codec.decoder.settings.causal and codec.encoder.settings.lstm_layers == 2
    t = torch.linspace(0, 1, 12 * codec.hop_length)
    wav = (0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.05 * torch.randn(t.shape)).view(1, 1, -1)
    offline_codes = codec.encode(wav)
    offline = codec.decode(offline_codes)
    codes, audio = stream(codec, wav, frames)
    assert torch.equal(codes, offline_codes)
    assert audio.shape == offline.shape
    torch.testing.assert_close(audio, offline, rtol=1e-4, atol=1e-5)
    assert codec.stream().latency_seconds(frames * codec.hop_length) == pytest.approx(frames * 320 / 24000)


def test_chunk_state_matters() -> None:
    """Chunks coded without their predecessors' state differ from offline: the state is what makes it equal."""
    torch.manual_seed(0)
    codec = build_codec(compose_config(["experiment=smoke", "encoder.causal=true", "encoder.lstm_layers=1"])).eval()
    wav = 0.1 * torch.randn(1, 1, 6 * codec.hop_length)
    offline = codec.decode(codec.encode(wav))
    fresh = torch.cat(
        [
            codec.stream().process(wav[..., i : i + 2 * codec.hop_length])
            for i in range(0, wav.shape[-1], 2 * codec.hop_length)
        ],
        -1,
    )
    assert not torch.allclose(fresh, offline, atol=1e-4)
    _, streamed = stream(codec, wav, 2)
    torch.testing.assert_close(streamed, offline, rtol=1e-4, atol=1e-5)


def test_non_causal_models_and_partial_frames_are_refused() -> None:
    with pytest.raises(StreamingError, match=r"not causal \(encoder.causal=false\)"):
        build_codec(compose_config(["experiment=smoke"])).stream()
    codec = build_codec(compose_config(["experiment=smoke", "encoder.causal=true"])).eval()
    with pytest.raises(StreamingError, match="not a whole number of frames of 320 samples"):
        codec.stream().encode_chunk(torch.zeros(1, 1, 500))
