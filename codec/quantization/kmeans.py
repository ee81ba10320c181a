"""Plain k-means used to initialise codebooks from the first batch (EnCodec, SoundStream)."""

from __future__ import annotations

import torch


def kmeans(
    samples: torch.Tensor, num_clusters: int, iterations: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Cluster samples [N, D] into ``num_clusters`` centroids [K, D] by Lloyd's algorithm.

    Centroids start at random samples (with replacement when N < K); an empty cluster keeps its
    previous centroid.
    """
    num_samples = samples.shape[0]
    if num_samples >= num_clusters:
        index = torch.randperm(num_samples, generator=generator, device="cpu")[:num_clusters]
    else:
        index = torch.randint(0, num_samples, (num_clusters,), generator=generator, device="cpu")
    centroids = samples[index.to(samples.device)].clone()
    for _ in range(iterations):
        assignment = torch.cdist(samples, centroids).argmin(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, samples)
        counts = torch.bincount(assignment, minlength=num_clusters).unsqueeze(1).to(samples.dtype)
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
    return centroids
