"""Classical next-item baselines on the leave-one-out protocol of ``sid4llm evaluate``: what a dataset gives
without a neural model, so a learned recommender's number has a reference besides the most-popular floor.

    python scripts/classical_baselines.py --data_dir data/ml-100k --json docs/per_cpu_minute/ml-100k_classical.json

Counted from the train events only (as the models are trained), scored for every user of ``valid`` and ``test``
over the full catalogue, seen items left out, with the same metric function as the models:

- ``most_popular``: train popularity (the floor);
- ``item_cosine``: items co-rated with the history (cosine over user sets), the recent ones weighted more;
- ``item_transitions``: what followed each of the last ``recent`` history items within ``span`` steps in train
  histories (a decayed first-order Markov chain): the sequential signal a dataset holds at its simplest.

Prints a table and writes JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from sid4llm.cli import parse_config_and_args
from sid4llm.data import PreparedData
from sid4llm.evaluation.leave_one_out import most_popular_rankings
from sid4llm.metrics import DEFAULT_KS, ranking_metrics
from sid4llm.reporting import machine_description, markdown_table, write_json

LIST_LENGTH = max(DEFAULT_KS)  # ranked lists as long as the longest cut-off ranking_metrics reports


@dataclass
class BaselineArguments:
    data_dir: str = field(metadata={"help": "A prepared dataset (sid4llm prepare-data output)."})
    splits: list[str] = field(default_factory=lambda: ["valid", "test"], metadata={"help": "Splits to score."})
    recent: int = field(default=5, metadata={"help": "History items (the most recent) that vote."})
    span: int = field(default=3, metadata={"help": "item_transitions: how many later items count as following one "
                                                   "(the d-th after it with weight 1/d)."})
    recency_decay: float = field(default=0.9, metadata={"help": "Vote of the item n places from the end: decay**n."})
    json: str | None = field(default=None, metadata={"help": "Write the results here as JSON."})


def item_counts(train: list[list[int]], n_items: int, span: int) -> tuple[np.ndarray, np.ndarray]:
    """Item-item cosine over user sets and row-normalised transition weights, from the train histories."""
    users = np.zeros((len(train), n_items), dtype=np.float32)
    transitions = np.zeros((n_items, n_items), dtype=np.float32)
    for u, seq in enumerate(tqdm(train, desc="counting", leave=False)):
        users[u, seq] = 1.0
        seq = np.asarray(seq)
        for d in range(1, span + 1):
            np.add.at(transitions, (seq[:-d], seq[d:]), 1.0 / d)
    together = users.T @ users
    np.fill_diagonal(together, 0.0)
    counts = users.sum(0)
    cosine = together / np.sqrt(np.outer(counts, counts) + 1e-9)
    transitions /= transitions.sum(1, keepdims=True) + 1e-9
    return cosine, transitions


def rank_by_votes(scores: np.ndarray, histories: list[list[int]], k: int, recent: int, decay: float) -> list[list[int]]:
    """Top-``k`` unseen items by the decayed votes of each history's last ``recent`` items (row i of ``scores``:
    item i's vote for every item)."""
    lists = []
    for history in histories:
        last = history[-recent:]
        weights = decay ** np.arange(len(last))[::-1]
        votes = weights @ scores[last]
        votes[history] = -np.inf
        order = np.argsort(-votes, kind="stable")[:k]
        lists.append([int(i) for i in order if np.isfinite(votes[i])])
    return lists


def main(args: BaselineArguments) -> dict:
    data = PreparedData.load(args.data_dir)
    n_items = len(data.items)
    popularity = np.asarray(data.item_popularity, dtype=float)
    train = data.train_histories()
    cosine, transitions = item_counts(train, n_items, args.span)
    results, rows = {}, []
    for split in args.splits:
        seq = data.sequences[split]
        histories, targets = list(seq["history"]), list(seq["target"])
        methods = {"most_popular": most_popular_rankings(popularity, histories, LIST_LENGTH),
                   **{name: rank_by_votes(scores, histories, LIST_LENGTH, args.recent, args.recency_decay)
                      for name, scores in (("item_cosine", cosine), ("item_transitions", transitions))}}
        results[split] = {name: ranking_metrics(ranked, targets, n_items, popularity=popularity)
                          for name, ranked in methods.items()}
        floor = results[split]["most_popular"]["recall@10"]
        for name, m in results[split].items():
            rows.append([split, name, f"{m['recall@10']:.4f}", f"{m['recall@10'] / floor:.2f}", f"{m['ndcg@10']:.4f}",
                         f"{m['recall@20']:.4f}", f"{m['coverage@10']:.3f}"])
    print(markdown_table(["split", "method", "recall@10", "× floor", "ndcg@10", "recall@20", "coverage@10"], rows))
    out = {"data_dir": args.data_dir, "n_users": len(train), "n_items": n_items, "exclude_seen": True,
           "settings": {"recent": args.recent, "span": args.span, "recency_decay": args.recency_decay},
           "machine": machine_description(), "results": results}
    if args.json:
        write_json(args.json, out)
    return out


if __name__ == "__main__":
    (arguments,) = parse_config_and_args([BaselineArguments])
    main(arguments)
