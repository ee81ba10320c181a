"""Audio samples and spectrogram images written next to a run, for MLflow artifacts."""

from __future__ import annotations

from pathlib import Path

import torch

from codec.data.audio_io import write_audio


def save_spectrograms(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int, path: Path) -> Path:
    """Side-by-side log-magnitude spectrograms of original and reconstruction as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_fft = 1024 if sample_rate > 20000 else 512
    window = torch.hann_window(n_fft)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
    for axis, wav, title in zip(axes, (reference, estimate), ("original", "reconstruction")):
        spec = torch.stft(wav.flatten().float(), n_fft, n_fft // 4, window=window, return_complex=True).abs()
        image = 20 * torch.log10(spec + 1e-5)
        axis.imshow(
            image.numpy(),
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=float(image.max()) - 80,
            extent=(0, wav.numel() / sample_rate, 0, sample_rate / 2000),
        )
        axis.set_title(title)
        axis.set_xlabel("time (s)")
    axes[0].set_ylabel("frequency (kHz)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def save_samples(samples, sample_rate: int, directory: Path) -> list[Path]:
    """Write (name, reference, estimate) triples as wav pairs plus a spectrogram image each."""
    written = []
    for index, (_, reference, estimate) in enumerate(samples):
        written.append(write_audio(directory / f"{index:02d}_original.wav", reference, sample_rate))
        written.append(write_audio(directory / f"{index:02d}_reconstruction.wav", estimate, sample_rate))
        written.append(save_spectrograms(reference, estimate, sample_rate, directory / f"{index:02d}_spectrogram.png"))
    return written
