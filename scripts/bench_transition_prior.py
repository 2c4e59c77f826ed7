"""How the transition prior's count settings (span, the user's last items that vote, their decay) move a saved
recommender's recall@10: the beam is decoded once per split (1,000 seeded valid and test users, seen items left
out), then re-ranked by priors counted each way, at every weight; each setting's weight is chosen on valid users,
as ``sid4llm finetune`` chooses it, and its test recall read at that weight.

    python scripts/bench_transition_prior.py --model outputs/qs_d/model --data_dir outputs/qs_d/data \
        --json docs/experiments/llm/prior_count_settings.json

Prints a table and writes JSON.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from sid4llm.cli import parse_config_and_args
from sid4llm.data import PreparedData
from sid4llm.decoding.transition_prior import ItemTransitionPrior
from sid4llm.lm.recommender import SidRecommender
from sid4llm.metrics import ranking_metrics, sample_users
from sid4llm.reporting import markdown_table, write_json


@dataclass
class PriorBenchArguments:
    model: str = field(metadata={"help": "A saved recommender folder."})
    data_dir: str = field(metadata={"help": "Its prepared data folder."})
    users: int = field(default=1000, metadata={"help": "Seeded users per split."})
    num_beams: int = field(default=20, metadata={"help": "Candidates the prior re-ranks."})
    spans: list[int] = field(default_factory=lambda: [3, 1, 5])
    recent: list[int] = field(default_factory=lambda: [5, 1, 10, 20])
    decays: list[float] = field(default_factory=lambda: [0.9, 0.7])
    weights: list[float] = field(default_factory=lambda: [0, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
    json: str | None = field(default=None, metadata={"help": "Write the results here."})


def main(argv: list[str] | None = None) -> list[dict]:
    (args,) = parse_config_and_args([PriorBenchArguments], argv)
    recommender = SidRecommender.from_pretrained(args.model)
    data = PreparedData.load(args.data_dir)
    splits = {}
    for split in ("valid", "test"):
        rows = data.sequences[split]
        users = sample_users(len(rows), args.users, 0)
        histories = [list(rows[u]["history"]) for u in users]
        targets = [int(rows[u]["target"]) for u in users]
        found = recommender.recommend(histories, k=args.num_beams, num_beams=args.num_beams, batch_size=32,
                                      prior_weight=0.0, show_progress=True)
        splits[split] = (histories, targets, [[(r["index"], r["score"]) for r in lists] for lists in found])
    train, n_items = data.train_histories(), len(recommender.codebook)
    results = []
    for span, recent, decay in itertools.product(args.spans, args.recent, args.decays):
        prior = ItemTransitionPrior.count(train, n_items, span=span, recent=recent, recency_decay=decay)
        row = {"span": span, "recent": recent, "recency_decay": decay}
        for split, (histories, targets, ranked) in splits.items():
            log_priors = [prior.candidate_log_prior(r, h) for r, h in zip(ranked, histories)]
            row[split] = {w: round(ranking_metrics([[i for i, _ in prior.fuse(r, p, 10, w)] for r, p in zip(ranked, log_priors)],
                                                   targets, len(targets), ks=(10,))["recall@10"], 4) for w in args.weights}
        best = max(args.weights, key=lambda w: (row["valid"][w], -w))
        row.update(best_weight=best, valid_best=row["valid"][best], test_at_best=row["test"][best])
        results.append(row)
    print(markdown_table(["span", "recent", "decay", "weight (valid)", "valid recall@10", "test recall@10", "test, prior off"],
                         [[r["span"], r["recent"], r["recency_decay"], r["best_weight"], f"{r['valid_best']:.3f}",
                           f"{r['test_at_best']:.3f}", f"{r['test'][0]:.3f}"] for r in results]))
    if args.json:
        write_json(args.json, {"model": args.model, "users": args.users, "num_beams": args.num_beams, "settings": results})
    return results


if __name__ == "__main__":
    main()
