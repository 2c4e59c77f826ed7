"""How often a cold-start item is recommended when it should be.

A recommender trained on a warm dataset (:func:`sid4llm.data.cold_start.write_without_items`) gets the held-out
items back through ``add_items`` — IDs from their text alone, no retraining — and is scored on the *full*
dataset's test users: those whose held-out target is a cold item, and the rest. Histories keep their warm items
only (a cold item has no interactions before its test, which is what makes it cold). Beside it, on the same
users and under the same rule (history items left out): a content baseline that ranks every item by the cosine
of its text embedding with the mean embedding of the user's recent items, and the most-popular floor (a cold
item has no train events, so it never ranks: 0 on cold targets by construction, as for atomic IDs, which have
no token for an item they never trained on).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..data import PreparedData
from ..evaluation.leave_one_out import most_popular_rankings
from ..metrics import ranking_metrics
from .cold_start_items import ColdItems


@dataclass
class ColdStartUsers:
    """The full dataset's test users in the warm recommender's catalogue: warm items keep the warm dataset's
    indices, cold item ``j`` is ``n_warm + j`` (the order ``add_items`` appends them in)."""

    histories: list[list[int]]
    targets: list[int]
    cold_target: np.ndarray  # [users] bool
    n_warm: int
    n_cold: int
    dropped_users: int  # no warm history item left, or a target in neither catalogue
    full_rows: list[int] = field(default_factory=list)  # the full dataset row of every catalogue item, warm then cold

    @property
    def n_items(self) -> int:
        return self.n_warm + self.n_cold


def cold_start_users(full: PreparedData, warm: PreparedData, cold: ColdItems) -> ColdStartUsers:
    """The full dataset's test split mapped into the warm + cold catalogue (see :class:`ColdStartUsers`)."""
    full_ids = list(full.items["item_id"])
    index = {item: i for i, item in enumerate(warm.items["item_id"])}
    n_warm = len(index)
    index.update({item: n_warm + j for j, item in enumerate(cold.item_ids)})
    new_index = np.array([index.get(i, -1) for i in full_ids])
    cold_rows = set(cold.item_idx)
    histories, targets, dropped = [], [], 0
    test = full.sequences["test"]
    for history, target in zip(test["history"], test["target"]):
        kept = [int(new_index[i]) for i in history if i not in cold_rows and new_index[i] >= 0]
        if not kept or new_index[target] < 0:
            dropped += 1
            continue
        histories.append(kept)
        targets.append(int(new_index[target]))
    targets_array = np.asarray(targets)
    row_of = {item: i for i, item in enumerate(full_ids)}
    full_rows = [row_of[i] for i in list(warm.items["item_id"]) + cold.item_ids]
    return ColdStartUsers(histories, targets, targets_array >= n_warm, n_warm, len(cold.item_ids), dropped, full_rows)


def content_rankings(embeddings: np.ndarray, histories: Sequence[Sequence[int]], k: int,
                     recent_items: int = 10) -> list[list[int]]:
    """Items ranked by cosine similarity of their embedding to the mean of the user's last ``recent_items``
    history embeddings, history items left out: what text alone recommends."""
    vectors = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    lists = []
    for history in histories:
        profile = vectors[list(history)[-recent_items:]].mean(axis=0)
        scores = vectors @ profile
        scores[list(set(history))] = -np.inf
        top = np.argpartition(-scores, k)[:k] if k < len(scores) else np.arange(len(scores))
        lists.append([int(i) for i in top[np.argsort(-scores[top], kind="stable")]])
    return lists


def split_metrics(ranked: Sequence[Sequence[int]], users: ColdStartUsers, ks: Sequence[int] = (10, 20)) -> dict:
    """recall/NDCG@K on the cold-target users and on the rest, and how much of the lists cold items fill."""
    out: dict = {}
    for group, mask in (("cold", users.cold_target), ("warm", ~users.cold_target)):
        chosen = np.flatnonzero(mask)
        metrics = ranking_metrics([ranked[u] for u in chosen], [users.targets[u] for u in chosen], users.n_items, ks)
        out[group] = {key: metrics[key] for key in ["n_users", *(f"{m}@{k}" for k in ks for m in ("recall", "ndcg"))]}
    k = min(ks)
    slots = [i for r in ranked for i in list(r)[:k]]
    out[f"cold_share_of_lists@{k}"] = float(np.mean([i >= users.n_warm for i in slots])) if slots else 0.0
    out[f"cold_items_recommended@{k}"] = len({i for i in slots if i >= users.n_warm})
    return out


def baseline_metrics(users: ColdStartUsers, embeddings: np.ndarray, warm_popularity: np.ndarray,
                     ks: Sequence[int] = (10, 20), recent_items: int = 10) -> dict:
    """The content baseline and the most-popular floor on the cold-start users (``embeddings``: every item of the
    warm + cold catalogue in its order; ``warm_popularity``: train events of the warm items)."""
    k = max(ks)
    popularity = np.concatenate([np.asarray(warm_popularity), np.zeros(users.n_cold, dtype=np.int64)])
    return {"content": split_metrics(content_rankings(embeddings, users.histories, k, recent_items), users, ks),
            "most_popular": split_metrics(most_popular_rankings(popularity, users.histories, k), users, ks)}
