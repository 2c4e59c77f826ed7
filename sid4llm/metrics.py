"""Ranking metrics of one held-out item per user, and the seeded user sample every evaluation draws: the one
definition that evaluation, model selection during training and the transition prior's weight fit all use.

With one held-out positive per user, Recall@K is the hit rate and NDCG@K is ``1 / log2(rank + 1)`` for a hit.
Coverage@K is the number of distinct items in all top-K lists divided by the catalogue size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_KS = (1, 5, 10, 20)


def sample_users(n_users: int, max_users: int | None, seed: int = 0) -> list[int]:
    """All users, or a seeded random sample of ``max_users`` of them (in user order): a quick evaluation
    should look like the full one, and the first users of a file are not a random sample."""
    if not max_users or max_users >= n_users:
        return list(range(n_users))
    return sorted(np.random.default_rng(seed).choice(n_users, size=max_users, replace=False).tolist())


def head_items(popularity: np.ndarray, head_fraction: float = 0.2) -> np.ndarray:
    """Boolean mask of the most popular ``head_fraction`` of items (ties broken by index)."""
    order = np.argsort(-popularity, kind="stable")
    mask = np.zeros(len(popularity), dtype=bool)
    mask[order[: max(1, int(round(head_fraction * len(popularity))))]] = True
    return mask


def ranking_metrics(ranked: Sequence[Sequence[int]], targets: Sequence[int], n_items: int,
                    ks: Sequence[int] = DEFAULT_KS, popularity: np.ndarray | None = None,
                    head_fraction: float = 0.2, id_lengths: np.ndarray | None = None) -> dict:
    """Recall/NDCG/coverage@K (+ head/tail recall and mean recommended ID length when given the data)."""
    if len(ranked) != len(targets):
        raise ValueError(f"{len(ranked)} ranked lists for {len(targets)} targets")
    targets = np.asarray(targets)
    ranks = np.array([list(r).index(t) + 1 if t in r else 0 for r, t in zip(ranked, targets)])  # 0 = missed
    out: dict = {"n_users": int(len(targets))}
    head = head_items(popularity, head_fraction) if popularity is not None else None
    for k in ks:
        hit = (ranks > 0) & (ranks <= k)
        out[f"recall@{k}"] = float(hit.mean()) if len(hit) else 0.0
        gains = np.where(hit, 1.0 / np.log2(np.maximum(ranks, 1) + 1), 0.0)
        out[f"ndcg@{k}"] = float(gains.mean()) if len(gains) else 0.0
        top = {i for r in ranked for i in list(r)[:k]}
        out[f"coverage@{k}"] = len(top) / n_items
        out[f"distinct_items@{k}"] = len(top)
        if head is not None:
            in_head = head[targets]
            out[f"head_recall@{k}"] = float(hit[in_head].mean()) if in_head.any() else None
            out[f"tail_recall@{k}"] = float(hit[~in_head].mean()) if (~in_head).any() else None
        if id_lengths is not None:
            lens = [id_lengths[i] for r in ranked for i in list(r)[:k]]
            out[f"mean_recommended_id_length@{k}"] = float(np.mean(lens)) if lens else None
    return out
