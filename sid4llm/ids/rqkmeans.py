"""Residual k-means (RQ-KMeans), the usual fixed-length baseline (TIGER/GRID-style pipelines): level t
clusters the residual left by levels < t; the reconstruction from a prefix is the sum of its centroids."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from .base import IdInputError, IdMethodConfig, IdModel


@dataclass
class RQKMeansConfig(IdMethodConfig):
    method = "rqkmeans"
    kmeans_iters: int = field(default=50, metadata={"help": "Lloyd iterations per level."})
    kmeans_init: Literal["kmeans++", "random"] = field(default="kmeans++", metadata={"help": "How k-means picks its first centroids."})


def _nearest(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    c_sq = centroids.pow(2).sum(1)
    out = []
    for part in x.split(chunk):
        out.append((c_sq[None, :] - 2 * part @ centroids.T).argmin(1))
    return torch.cat(out)


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator, init: str = "kmeans++") -> torch.Tensor:
    """Lloyd's algorithm with k-means++ seeding; empty clusters are re-seeded at the worst-served points."""
    n = x.shape[0]
    if init == "kmeans++":
        first = torch.randint(n, (1,), generator=generator)
        centroids = [x[first]]
        d2 = (x - centroids[0]).pow(2).sum(1)
        for _ in range(1, k):
            probs = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / n)
            idx = torch.multinomial(probs, 1, generator=generator)
            centroids.append(x[idx])
            d2 = torch.minimum(d2, (x - x[idx]).pow(2).sum(1))
        c = torch.cat(centroids)
    elif init == "random":
        c = x[torch.randperm(n, generator=generator)[:k]].clone()
    else:
        raise IdInputError(f"kmeans_init must be 'kmeans++' or 'random', got {init!r}")
    for _ in range(iters):
        assign = _nearest(x, c)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        new = sums / counts.clamp(min=1)[:, None]
        empty = counts == 0
        if empty.any():
            err = (x - c[assign]).pow(2).sum(1)
            worst = err.topk(int(empty.sum())).indices
            new[empty] = x[worst]
        if torch.allclose(new, c):
            c = new
            break
        c = new
    return c


class ResidualKMeans(IdModel):
    def __init__(self, config: RQKMeansConfig, input_dim: int):
        super().__init__()
        self.config = config
        self.input_dim = input_dim
        self.register_buffer("centroids", torch.zeros(config.max_length, config.vocab_size, input_dim))

    def fit(self, x: torch.Tensor) -> None:
        """Fit level by level on the unique item embeddings (each item once)."""
        if x.shape[0] < self.config.vocab_size:
            raise IdInputError(f"RQ-KMeans needs at least vocab_size={self.config.vocab_size} items, got {x.shape[0]}")
        generator = torch.Generator().manual_seed(self.config.seed)
        residual = x.clone()
        for level in range(self.config.max_length):
            c = kmeans(residual.cpu(), self.config.vocab_size, self.config.kmeans_iters, generator,
                       self.config.kmeans_init).to(x.device)
            self.centroids[level] = c
            residual = residual - c[_nearest(residual, c)]

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        residual, codes = x.clone(), []
        for level in range(self.config.max_length):
            z = _nearest(residual, self.centroids[level])
            codes.append(z)
            residual = residual - self.centroids[level][z]
        lengths = torch.full((x.shape[0],), self.config.max_length, dtype=torch.long, device=x.device)
        return torch.stack(codes, 1), lengths

    @torch.no_grad()
    def reconstruct(self, codes: torch.Tensor) -> torch.Tensor:
        levels = torch.arange(self.config.max_length, device=codes.device)
        parts = self.centroids[levels[None, :], codes]  # [B, L, d]
        return torch.cumsum(parts, dim=1)
