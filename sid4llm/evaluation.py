"""Leave-one-out evaluation on the full catalogue (no sampled negatives).

With one held-out positive per user, Recall@K is the hit rate and NDCG@K is ``1 / log2(rank + 1)`` for a hit.
Coverage@K is the number of distinct items in all top-K lists divided by the catalogue size. Head items are the
most popular ``head_fraction`` of the catalogue by train interactions, tail the rest; head/tail recall is over
the users whose target falls in each group. The same function scores every method, the most-popular floor
included, so tables are comparable.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)
DEFAULT_KS = (1, 5, 10, 20)
METRIC_MODULE = Path(__file__).resolve().parent / "metrics" / "recommendation_metrics"


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


def most_popular_rankings(popularity: np.ndarray, n_users: int, k: int) -> list[list[int]]:
    top = np.argsort(-popularity, kind="stable")[:k].tolist()
    return [top] * n_users


def load_metric():
    """The local ``evaluate`` metric module (works offline: loaded by path)."""
    import evaluate

    return evaluate.load(str(METRIC_MODULE))


def evaluate_recommender(recommender, data, split: str = "test", ks: Sequence[int] = DEFAULT_KS,
                         num_beams: int | None = None, batch_size: int = 16, max_users: int | None = None,
                         invalid_rate_users: int = 64, accelerator=None, show_progress: bool = True) -> dict:
    """Constrained top-K for every user of ``split``, metrics against the held-out targets, the
    most-popular floor, and the invalid-ID rate of unconstrained beam search on a sample of users.

    Under ``accelerate launch`` the users are split across processes and the rankings gathered (each user
    counted once)."""
    import time

    from accelerate import Accelerator
    from accelerate.utils import gather_object

    accelerator = accelerator or Accelerator()
    seq = data.sequences[split]
    histories, targets = list(seq["history"]), list(seq["target"])
    if max_users is not None:
        histories, targets = histories[:max_users], targets[:max_users]
    k_max = max(ks)
    users = list(range(len(histories)))
    start = time.time()
    with accelerator.split_between_processes(users) as mine:
        recs = recommender.recommend([histories[u] for u in mine], k=k_max, num_beams=num_beams,
                                     batch_size=batch_size, show_progress=show_progress and accelerator.is_main_process)
        local = [(u, [r["index"] for r in ranked]) for u, ranked in zip(mine, recs)]
    gathered = sorted(gather_object(local))
    seconds = time.time() - start
    ranked = [r for _, r in gathered]
    n_items = len(recommender.codebook)
    popularity = np.asarray(data.item_popularity)
    id_lengths = recommender.codebook.id_lengths
    model_metrics = ranking_metrics(ranked, targets, n_items, ks, popularity, id_lengths=id_lengths)
    model_metrics["invalid_rate_constrained"] = float(np.mean([len(r) < min(k_max, n_items) or any(i < 0 or i >= n_items for i in r)
                                                               for r in ranked]))
    model_metrics["users_per_second"] = len(ranked) / seconds if seconds else None
    result = {"split": split, "model": model_metrics,
              "most_popular": ranking_metrics(most_popular_rankings(popularity, len(targets), k_max), targets,
                                              n_items, ks, popularity, id_lengths=id_lengths)}
    if invalid_rate_users and accelerator.is_main_process:
        sample = histories[:invalid_rate_users]
        beams = recommender.generate_ids(sample, num_beams=1, constrained=False)
        result["model"]["invalid_rate_unconstrained"] = float(np.mean([b[0] is None for b in beams]))
        result["model"]["invalid_rate_unconstrained_users"] = len(sample)
    return result


def format_table(result: dict, ks: Sequence[int] = DEFAULT_KS) -> str:
    """A markdown table: one row per method."""
    cols = [f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks] + [f"coverage@{max(ks)}"]
    lines = ["| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name in ("model", "most_popular"):
        m = result[name]
        lines.append(f"| {name} | " + " | ".join(
            "–" if m.get(c) is None or (isinstance(m.get(c), float) and math.isnan(m[c])) else f"{m[c]:.4f}"
            for c in cols) + " |")
    return "\n".join(lines)
