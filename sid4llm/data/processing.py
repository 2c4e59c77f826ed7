"""From raw events to clean sequential splits.

Order of operations (each step is deterministic):
rating filter → drop duplicate events → (optional) drop repeat consumption → iterative k-core →
stable chronological sort (timestamp, then file order) → leave-one-out split → train-only popularity →
contiguous item indices (original ids kept).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from datasets import Dataset, DatasetDict, Features, Sequence, Value

from .readers import DataFormatError, RawData

logger = logging.getLogger(__name__)

MIN_EVENTS_PER_USER = 3  # one to train on, one to validate, one to test


@dataclass
class ProcessedData:
    """Clean splits, the item catalogue and the numbers that describe them."""

    sequences: DatasetDict
    items: Dataset
    stats: dict


def _natural_key(values: np.ndarray) -> np.ndarray:
    """Sort order for ids: numerically when every id is an integer ("2" before "10"), else as strings."""
    if all(re.fullmatch(r"-?\d+", v) for v in values):
        return np.argsort(values.astype(np.int64), kind="stable")
    return np.argsort(values, kind="stable")


def k_core(df: pd.DataFrame, user_core: int, item_core: int) -> pd.DataFrame:
    """Iteratively drop users with < ``user_core`` and items with < ``item_core`` events until stable."""
    while True:
        item_counts = df["item_id"].map(df["item_id"].value_counts())
        user_counts = df["user_id"].map(df["user_id"].value_counts())
        keep = (item_counts >= item_core) & (user_counts >= user_core)
        if keep.all():
            return df
        df = df[keep]


def tied_timestamp_fraction(df: pd.DataFrame) -> float:
    """Share of events that have the same timestamp as another event of the same user."""
    if df.empty:
        return 0.0
    return float(df.duplicated(["user_id", "timestamp"], keep=False).mean())


def process_interactions(
    raw: RawData,
    user_core: int = 5,
    item_core: int = 5,
    min_rating: float | None = None,
    drop_repeat_consumption: bool = False,
    max_users: int | None = None,
    seed: int = 0,
) -> ProcessedData:
    """Turn raw events into a leave-one-out ``DatasetDict`` and an items table.

    Every split has one row per user: ``history`` (item indices, oldest first) and the ``target`` to predict.
    ``train``'s target is the user's last training event, ``valid``'s the second-to-last event and ``test``'s
    the last one; each split's history is everything before its target. Popularity (``train_count``) counts
    training events only, so it never sees a valid or test target.
    """
    df = raw.interactions.reset_index(drop=True).copy()
    df["order"] = np.arange(len(df), dtype=np.int64)
    if raw.event_order == "file":
        logger.info("%s has no time: each user's events are ordered as they appear in the file, and the "
                    "leave-one-out split follows that order", raw.source)
    # One rule in every format: metadata for an item nobody interacted with is dropped, and counted.
    without_interactions = raw.item_rows_without_interactions
    if raw.items is not None and len(raw.items):
        without_interactions += int((~raw.items["item_id"].drop_duplicates().isin(set(df["item_id"]))).sum())
    if without_interactions:
        logger.info("%d item metadata rows have no interaction and are dropped", without_interactions)
    n_raw = len(df)
    if n_raw == 0:
        raise DataFormatError(f"{raw.source}: no interactions in {raw.files}")
    if min_rating is not None:
        if "rating" not in df.columns:
            raise DataFormatError(f"{raw.source}: min_rating={min_rating} given but the data has no rating field")
        df = df[df["rating"] >= min_rating]
    duplicates = df.duplicated(["user_id", "item_id", "timestamp"])
    n_duplicates = int(duplicates.sum())
    df = df[~duplicates]
    df = df.sort_values(["user_id", "timestamp", "order"], kind="stable")
    n_repeats = 0
    if drop_repeat_consumption:
        repeats = df.duplicated(["user_id", "item_id"])  # keeps each user's first (earliest) event per item
        n_repeats = int(repeats.sum())
        df = df[~repeats]
    if max_users is not None and df["user_id"].nunique() > max_users:
        users = np.sort(df["user_id"].unique())
        chosen = np.random.default_rng(seed).choice(users, size=max_users, replace=False)
        df = df[df["user_id"].isin(set(chosen))]
    n_before_core = len(df)
    df = k_core(df, user_core, item_core)
    short = df["user_id"].map(df["user_id"].value_counts()) < MIN_EVENTS_PER_USER
    n_short_users = int(df.loc[short, "user_id"].nunique())
    df = df[~short]
    if df.empty:
        raise DataFormatError(
            f"{raw.source}: no interactions left after filtering ({n_before_core} events before "
            f"{user_core}-core users / {item_core}-core items, and users need >= {MIN_EVENTS_PER_USER} events); "
            "lower --user_core / --item_core or check the input"
        )

    item_ids = df["item_id"].unique()
    item_ids = item_ids[_natural_key(item_ids)]
    item_index = pd.Series(np.arange(len(item_ids), dtype=np.int64), index=item_ids)
    user_ids = df["user_id"].unique()
    user_ids = user_ids[_natural_key(user_ids)]
    user_rank = pd.Series(np.arange(len(user_ids), dtype=np.int64), index=user_ids)

    df = df.assign(item_idx=df["item_id"].map(item_index), user_idx=df["user_id"].map(user_rank))
    df = df.sort_values(["user_idx", "timestamp", "order"], kind="stable")
    items_seq = df["item_idx"].to_numpy()
    times_seq = df["timestamp"].to_numpy()
    starts = np.flatnonzero(np.r_[True, np.diff(df["user_idx"].to_numpy()) != 0])
    ends = np.r_[starts[1:], len(df)]

    splits: dict[str, dict[str, list]] = {
        s: {"user_id": [], "user_idx": [], "history": [], "history_timestamps": [], "target": [],
            "target_timestamp": []}
        for s in ("train", "valid", "test")
    }
    train_counts = np.zeros(len(item_ids), dtype=np.int64)
    for u, (a, b) in enumerate(zip(starts, ends)):
        for split, cut in (("train", b - 3), ("valid", b - 2), ("test", b - 1)):
            rows = splits[split]
            rows["user_id"].append(user_ids[u])
            rows["user_idx"].append(u)
            rows["history"].append(items_seq[a:cut].tolist())
            rows["history_timestamps"].append(times_seq[a:cut].tolist())
            rows["target"].append(int(items_seq[cut]))
            rows["target_timestamp"].append(int(times_seq[cut]))
        np.add.at(train_counts, items_seq[a : b - 2], 1)

    features = Features({
        "user_id": Value("string"), "user_idx": Value("int64"),
        "history": Sequence(Value("int64")), "history_timestamps": Sequence(Value("int64")),
        "target": Value("int64"), "target_timestamp": Value("int64"),
    })
    sequences = DatasetDict({s: Dataset.from_dict(rows, features=features) for s, rows in splits.items()})
    items = _items_table(item_ids, raw.items, train_counts, np.bincount(items_seq, minlength=len(item_ids)))

    lengths = ends - starts
    n_users, n_items, n_events = len(user_ids), len(item_ids), len(df)
    missing_titles = int(sum(not str(t).strip() for t in items["title"])) if raw.items is not None else None
    if missing_titles:
        logger.warning("%d of %d items have no title (missing or blank in the item file); they are embedded from "
                       "their other fields only", missing_titles, n_items)
    has_text = bool(any(t for t in items["title"]) or any(d for d in items["description"]))
    stats = {
        "source": raw.source,
        "files": raw.files,
        "n_users": int(n_users),
        "n_items": int(n_items),
        "n_interactions": int(n_events),
        "density": float(n_events / (n_users * n_items)),
        "median_seq_len": float(np.median(lengths)),
        "mean_seq_len": float(lengths.mean()),
        "max_seq_len": int(lengths.max()),
        "has_text": has_text,
        "n_interactions_raw": int(n_raw),
        "n_duplicate_events_dropped": n_duplicates,
        "n_repeat_consumption_dropped": n_repeats,
        "n_users_dropped_too_short": n_short_users,
        "user_core": user_core,
        "item_core": item_core,
        "min_rating": min_rating,
        "max_users": max_users,
        "event_order": raw.event_order,  # "file": the source had no time, its row order is each user's order
        "fraction_events_with_tied_timestamp": tied_timestamp_fraction(df),
        "n_train_events": int(train_counts.sum()),
        "items_without_train_events": int((train_counts == 0).sum()),
        "item_rows_without_interactions_dropped": without_interactions,
        "items_without_title": missing_titles,
        "timestamp_min": int(times_seq.min()),
        "timestamp_max": int(times_seq.max()),
    }
    return ProcessedData(sequences, items, stats)


def _items_table(item_ids: np.ndarray, meta: pd.DataFrame | None, train_counts, all_counts) -> Dataset:
    table = pd.DataFrame({"item_idx": np.arange(len(item_ids), dtype=np.int64), "item_id": item_ids})
    if meta is not None and len(meta):
        meta = meta.drop_duplicates("item_id", keep="first")
        table = table.merge(meta, on="item_id", how="left", validate="one_to_one")
    for col in ("title", "brand", "description"):
        table[col] = table[col].fillna("") if col in table else ""
    table["categories"] = table["categories"].map(lambda v: v if isinstance(v, list) else []) \
        if "categories" in table else [[] for _ in range(len(table))]
    table["train_count"] = train_counts
    table["n_interactions"] = all_counts.astype(np.int64)
    features = Features({
        "item_idx": Value("int64"), "item_id": Value("string"), "title": Value("string"),
        "categories": Sequence(Value("string")), "brand": Value("string"), "description": Value("string"),
        "train_count": Value("int64"), "n_interactions": Value("int64"),
    })
    return Dataset.from_pandas(table[list(features)], features=features, preserve_index=False)
