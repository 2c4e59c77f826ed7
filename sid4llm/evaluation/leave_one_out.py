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

from ..metrics import DEFAULT_KS, ranking_metrics, sample_users
from ..reporting import markdown_table

logger = logging.getLogger(__name__)
METRIC_MODULE = Path(__file__).resolve().parent / "recommendation_metrics"


def most_popular_rankings(popularity: np.ndarray, histories: Sequence[Sequence[int]], k: int,
                          exclude_seen: bool = True) -> list[list[int]]:
    """The ``k`` most popular train items for every user (without the user's own history items when
    ``exclude_seen``): the floor every model must beat, ranked under the same rule as the model."""
    order = np.argsort(-popularity, kind="stable")
    if not exclude_seen:
        return [order[:k].tolist()] * len(histories)
    lists = []
    for history in histories:
        seen = set(history)
        lists.append([int(i) for i in order[: k + len(seen)] if int(i) not in seen][:k])
    return lists


def load_metric():
    """The local ``evaluate`` metric module (works offline: loaded by path)."""
    import evaluate

    return evaluate.load(str(METRIC_MODULE))


def evaluate_recommender(recommender, data, split: str = "test", ks: Sequence[int] = DEFAULT_KS,
                         num_beams: int | None = None, batch_size: int = 16, max_users: int | None = None,
                         invalid_rate_users: int = 64, accelerator=None, show_progress: bool = True,
                         exclude_seen: bool = True, report_with_seen: bool = False, seed: int = 0,
                         style: str = "ids", return_rankings: bool = False, prior_weight: float | None = None) -> dict:
    """Constrained top-K for the users of ``split`` (all, or a seeded random ``max_users``), metrics against
    the held-out targets, the most-popular floor on the same users under the same rule, and the invalid-ID
    rate of unconstrained greedy decoding on a sample of users.

    ``exclude_seen`` (default) leaves each user's history items out of its list, for the model and the floor
    alike, as evaluations in the field do. ``report_with_seen`` also decodes with history items allowed and
    adds ``model_with_seen`` / ``most_popular_with_seen``. Under ``accelerate launch`` the users are split
    across processes and the rankings gathered (each user counted once). ``style``: the prompt the model reads,
    ``ids`` (the history as an ID stream) or ``titles`` (the natural-language prompt that chat uses).
    ``prior_weight``: the weight of the recommender's transition prior (None: the saved one; 0: the model alone)."""
    from accelerate import Accelerator

    accelerator = accelerator or Accelerator()
    seq = data.sequences[split]
    all_histories, all_targets = list(seq["history"]), list(seq["target"])
    users = sample_users(len(all_histories), max_users, seed)
    histories, targets = [all_histories[u] for u in users], [all_targets[u] for u in users]
    k_max = max(ks)
    n_items = len(recommender.codebook)
    popularity = np.asarray(data.item_popularity)
    id_lengths = recommender.codebook.id_lengths

    def score(ranked: list[list[int]]) -> dict:
        return ranking_metrics(ranked, targets, n_items, ks, popularity, id_lengths=id_lengths)

    result = {"split": split, "exclude_seen": exclude_seen, "user_sample_seed": seed if max_users else None,
              "prompt_style": style, "transition_prior_weight": recommender.transition_prior_weight(prior_weight)}
    for name, exclude in [("", exclude_seen)] + ([("_with_seen", False)] if report_with_seen and exclude_seen else []):
        ranked, seconds = _gathered_rankings(recommender, histories, k_max, num_beams, batch_size, exclude,
                                             accelerator, show_progress, style, prior_weight)
        metrics = score(ranked)
        if return_rankings and not name:
            result["rankings"] = {"users": users, "targets": [int(t) for t in targets], "model": ranked}
        # A list is invalid when it names a non-item, or is shorter than the items it could hold.
        room = [n_items - (len(set(h)) if exclude else 0) for h in histories]
        metrics["invalid_rate_constrained"] = float(np.mean([len(r) < min(k_max, n) or any(i < 0 or i >= n_items for i in r)
                                                             for r, n in zip(ranked, room)]))
        metrics["users_per_second"] = len(ranked) / seconds if seconds else None
        result["model" + name] = metrics
        result["most_popular" + name] = score(most_popular_rankings(popularity, histories, k_max, exclude))
    if invalid_rate_users and accelerator.is_main_process:
        sample = histories[:invalid_rate_users]
        beams = recommender.generate_ids(sample, num_beams=1, constrained=False, style=style)
        result["model"]["invalid_rate_unconstrained"] = float(np.mean([b[0] is None for b in beams]))
        result["model"]["invalid_rate_unconstrained_users"] = len(sample)
    return result


def _gathered_rankings(recommender, histories, k, num_beams, batch_size, exclude_seen, accelerator,
                       show_progress, style: str = "ids",
                       prior_weight: float | None = None) -> tuple[list[list[int]], float]:
    """Every user's top-``k`` codebook indices (this process's share decoded here, all gathered) and the time."""
    import time

    from accelerate.utils import gather_object

    start = time.time()
    with accelerator.split_between_processes(list(range(len(histories)))) as mine:
        recs = recommender.recommend([histories[u] for u in mine], k=k, num_beams=num_beams, batch_size=batch_size,
                                     exclude_seen=exclude_seen, style=style,
                                     show_progress=show_progress and accelerator.is_main_process,
                                     prior_weight=prior_weight)
        local = [(u, [r["index"] for r in ranked]) for u, ranked in zip(mine, recs)]
    return [r for _, r in sorted(gather_object(local))], time.time() - start


def format_table(result: dict, ks: Sequence[int] = DEFAULT_KS) -> str:
    """A markdown table: one row per method (``*_with_seen``: history items allowed in the list)."""
    cols = [f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks] + [f"coverage@{max(ks)}"]
    rows = [[name, *("–" if result[name].get(c) is None or (isinstance(result[name].get(c), float) and math.isnan(result[name][c]))
                     else f"{result[name][c]:.4f}" for c in cols)]
            for name in ("model", "most_popular", "model_with_seen", "most_popular_with_seen") if name in result]
    return markdown_table(["method", *cols], rows)
