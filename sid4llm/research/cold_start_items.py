"""Cold-start items, simulated on any prepared dataset: a seeded share of the catalogue is taken out of every
history before IDs and the recommender are trained, and comes back later as new items known only by their text.

:func:`choose_cold_items` spreads the share over popularity (one item from each run of equally popular-ranked
items), so head and tail are both represented; :func:`write_without_items` writes the warm dataset — the same
users and events with the cold items removed, split again by the same leave-one-out rule, so no split of it
holds a cold item or a test target of the full data it should not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.prepare import PreparedData, write_prepared_folder
from ..data.processing import process_interactions
from ..data.readers import DataFormatError, RawData

COLD_ITEMS_FILE = "cold_items.json"  # in the warm dataset folder: what was taken out, and how it was chosen


@dataclass
class ColdItems:
    """The held-out items of a warm dataset, by their row in the full dataset and their item id."""

    item_idx: list[int]
    item_ids: list[str]
    fraction: float
    seed: int

    def to_json(self) -> str:
        return json.dumps({"item_idx": self.item_idx, "item_ids": self.item_ids, "fraction": self.fraction,
                           "seed": self.seed})

    @classmethod
    def load(cls, folder: str | Path) -> ColdItems:
        path = Path(folder) / COLD_ITEMS_FILE
        if not path.is_file():
            raise DataFormatError(f"{path} missing: {folder} is not a warm dataset written by write_without_items")
        raw = json.loads(path.read_text())
        return cls(raw["item_idx"], raw["item_ids"], raw["fraction"], raw["seed"])


def choose_cold_items(popularity: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """``round(fraction × items)`` item indices: the items ranked by popularity are cut into that many
    consecutive blocks and one is drawn (seeded) from each, so the cold items span head and tail alike."""
    if not 0 < fraction < 1:
        raise ValueError(f"cold-start fraction must be between 0 and 1, got {fraction}")
    count = int(round(fraction * len(popularity)))
    if count < 1:
        raise ValueError(f"a fraction of {fraction} of {len(popularity)} items is no item")
    order = np.argsort(-np.asarray(popularity), kind="stable")
    rng = np.random.default_rng(seed)
    return np.sort(np.array([int(rng.choice(block)) for block in np.array_split(order, count)], dtype=np.int64))


def full_sequences(data: PreparedData) -> pd.DataFrame:
    """Every event of the dataset, one row each (user_id, item_idx, timestamp, order), users' events in order:
    the test split's history plus its target is a user's whole sequence."""
    test = data.sequences["test"]
    rows = {"user_id": [], "item_idx": [], "timestamp": []}
    for user, history, times, target, when in zip(test["user_id"], test["history"], test["history_timestamps"],
                                                  test["target"], test["target_timestamp"]):
        rows["user_id"] += [user] * (len(history) + 1)
        rows["item_idx"] += [*history, target]
        rows["timestamp"] += [*times, when]
    frame = pd.DataFrame(rows)
    frame["order"] = np.arange(len(frame), dtype=np.int64)
    return frame


def write_without_items(data: PreparedData, cold: np.ndarray, output_dir: str | Path, fraction: float,
                        seed: int) -> PreparedData:
    """The warm dataset at ``output_dir``: ``data`` without the ``cold`` items anywhere (histories, targets,
    catalogue, embeddings), split again (a user left with fewer than 3 events is dropped, as in prepare-data).
    Written to a temporary sibling and moved into place, so a failure leaves nothing half-written."""
    out = Path(output_dir)
    cold = np.asarray(sorted(set(int(i) for i in cold)), dtype=np.int64)
    if len(cold) and (cold.min() < 0 or cold.max() >= len(data.items)):
        raise ValueError(f"cold item indices must lie in 0..{len(data.items) - 1}")
    events = full_sequences(data)
    events = events[~events["item_idx"].isin(set(cold.tolist()))]
    item_ids = np.asarray(data.items["item_id"], dtype=object)
    events = events.assign(item_id=item_ids[events["item_idx"].to_numpy()]).drop(columns="item_idx")
    meta = data.items.select_columns(["item_id", "title", "categories", "brand", "description"]).to_pandas()
    meta["categories"] = meta["categories"].map(list)
    raw = RawData(events, meta, source=f"{data.stats.get('source')} without {len(cold)} cold-start items",
                  files=[str(data.path)])
    processed = process_interactions(raw, user_core=1, item_core=1)
    warm_ids = list(processed.items["item_id"])
    row_of = {item: i for i, item in enumerate(data.items["item_id"])}
    vectors = data.item_embeddings()[[row_of[i] for i in warm_ids]]

    stats = {**processed.stats, "embedding_dim": int(vectors.shape[1]), "embeddings": data.stats.get("embeddings"),
             "cold_start": {"full_dataset": str(data.path), "cold_items": int(len(cold)), "fraction": fraction,
                            "seed": seed}}
    held_out = ColdItems([int(i) for i in cold], [str(item_ids[i]) for i in cold], fraction, seed)
    write_prepared_folder(out, processed, stats, (vectors, {"source": "subset", "of": str(data.path)}),
                          {COLD_ITEMS_FILE: held_out.to_json()})
    return PreparedData.load(out)
