"""Two saved recommenders on the same users: recall@K and coverage@K of each, and their difference A − B with a
paired bootstrap interval over the users (``sid4llm.evaluation.paired``), so a before/after claim is read from an
interval rather than from two numbers each ± a standard error.

    python scripts/paired_compare.py --model_a outputs/rec/after --model_b outputs/rec/before \
        --data_dir data/ml-1m --json paired.json

Prints a table and writes JSON (the per-user lists are not kept).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from transformers import HfArgumentParser

from sid4llm.data import PreparedData
from sid4llm.evaluation import evaluate_recommender
from sid4llm.lm.recommender import SidRecommender
from sid4llm.research.paired import interval_verdict, paired_bootstrap


@dataclass
class PairedArguments:
    model_a: str = field(metadata={"help": "The recommender whose gain is measured (A in A − B)."})
    model_b: str = field(metadata={"help": "The one it is compared with (B)."})
    data_dir: str = field(metadata={"help": "Prepared dataset both were trained on."})
    split: Literal["valid", "test"] = field(default="test", metadata={"help": "Split to score."})
    max_users: int | None = field(default=None, metadata={"help": "A seeded sample of users (default: all)."})
    k: int = field(default=10, metadata={"help": "Cut-off of recall and coverage."})
    num_beams: int | None = field(default=None, metadata={"help": "Beam width (default: each model's saved one)."})
    resamples: int = field(default=2000, metadata={"help": "Bootstrap draws of the users."})
    json: str | None = field(default=None, metadata={"help": "Write the result here."})


def main(args: PairedArguments) -> dict:
    data = PreparedData.load(args.data_dir)
    lists, targets, n_items = {}, None, None
    for name, path in (("a", args.model_a), ("b", args.model_b)):
        rec = SidRecommender.from_pretrained(path)
        result = evaluate_recommender(rec, data, args.split, [args.k], num_beams=args.num_beams,
                                      max_users=args.max_users, invalid_rate_users=0, return_rankings=True)
        rankings = result["rankings"]
        if targets is not None and rankings["targets"] != targets:
            raise SystemExit("error: the two models were scored on different users (other datasets?)")
        targets, n_items, lists[name] = rankings["targets"], len(rec.codebook), rankings["model"]
    paired = paired_bootstrap([lists["a"]], [lists["b"]], targets, n_items, k=args.k, resamples=args.resamples)
    out = {"model_a": args.model_a, "model_b": args.model_b, "data_dir": args.data_dir, "split": args.split, **paired}
    recall, coverage = paired[f"recall@{args.k}"], paired[f"coverage@{args.k}"]
    print(f"| measure | A | B | A − B | {paired['confidence']:.0%} interval | verdict |")
    print("|---|---|---|---|---|---|")
    print(f"| recall@{args.k} | {paired[f'recall@{args.k}_a']:.4f} | {paired[f'recall@{args.k}_b']:.4f} | "
          f"{recall['difference']:+.4f} | [{recall['low']:+.4f}, {recall['high']:+.4f}] | {interval_verdict(recall)} |")
    print(f"| coverage@{args.k} | | | {coverage['difference']:+.4f} | [{coverage['low']:+.4f}, {coverage['high']:+.4f}] "
          f"| {interval_verdict(coverage)} |")
    print(f"{paired['users']} users, {args.split} split, {args.resamples} resamples")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main(*HfArgumentParser(PairedArguments).parse_args_into_dataclasses())
