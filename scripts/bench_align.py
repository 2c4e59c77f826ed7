"""Does the preference stage help? A trained recommender, the stage (``sid4llm align``) on it, and its honest control —
the same minutes given to more supervised training instead (``finetune --init_from``) — scored on the same test
users, with paired bootstrap intervals for every difference.

    python scripts/bench_align.py --model outputs/rec/from_scratch --finetune_config finetune/from_scratch \
        --minutes 10 --output_dir outputs/bench_align --json docs/experiments/align/ml-1m_from_scratch.json

Prints a table and writes JSON: recall@K, ndcg@K and coverage@K of the three models beside the most-popular floor,
each stage's wall-clock minutes, the stage's pairs and validation curve, and the three paired differences.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from sid4llm.cli import load_arguments
from sid4llm.commands import align, finetune
from sid4llm.data import PreparedData
from sid4llm.evaluation import evaluate_recommender
from sid4llm.lm.recommender import SidRecommender
from sid4llm.research.paired import interval_verdict, paired_bootstrap


@dataclass
class BenchAlignArguments:
    model: str = field(metadata={"help": "The supervised recommender (a finetune output_dir)."})
    finetune_config: str = field(metadata={"help": "The config it was trained with: the control trains on with it."})
    output_dir: str = field(metadata={"help": "Where the aligned model and the control go (aligned/, more_sft/)."})
    align_config: str = field(default="align/dpo", metadata={"help": "The preference stage's config."})
    minutes: float = field(default=10.0, metadata={"help": "Training budget of the stage and of the control alike."})
    data_dir: str | None = field(default=None, metadata={"help": "Its prepared dataset (default: the saved one)."})
    codebook: str | None = field(default=None, metadata={"help": "Its codebook (default: the model's codebook/)."})
    train_users: int | None = field(default=None, metadata={"help": "Override the stage's train_users."})
    examples_per_user: int | None = field(default=None, metadata={"help": "Override the stage's examples_per_user."})
    requests: int | None = field(default=None, metadata={"help": "Override the stage's requests."})
    max_users: int | None = field(default=None, metadata={"help": "A seeded sample of test users (default: all)."})
    k: int = field(default=10, metadata={"help": "Cut-off."})
    resamples: int = field(default=2000, metadata={"help": "Bootstrap draws of the users."})
    json: str | None = field(default=None, metadata={"help": "Write the result here."})


def main(args: BenchAlignArguments) -> dict:
    start = SidRecommender.from_pretrained(args.model)
    data_dir = args.data_dir or start.config.data_dir
    out = Path(args.output_dir)
    walls = {}
    clock = time.perf_counter()
    align.main(*load_arguments(align.ARGUMENTS, args.align_config, model=args.model, data_dir=data_dir,
                               output_dir=out / "aligned", max_train_minutes=args.minutes,
                               train_users=args.train_users, examples_per_user=args.examples_per_user,
                               requests=args.requests))
    walls["aligned"] = (time.perf_counter() - clock) / 60
    clock = time.perf_counter()
    finetune.main(*load_arguments(finetune.ARGUMENTS, args.finetune_config, init_from=args.model, data_dir=data_dir,
                                  codebook=args.codebook or str(Path(args.model) / "codebook"),
                                  output_dir=out / "more_sft", max_train_minutes=args.minutes))
    walls["more_sft"] = (time.perf_counter() - clock) / 60

    data = PreparedData.load(data_dir)
    models = {"start": args.model, "aligned": str(out / "aligned"), "more_sft": str(out / "more_sft")}
    lists, metrics, targets = {}, {}, None
    for name, path in models.items():
        rec = SidRecommender.from_pretrained(path)
        result = evaluate_recommender(rec, data, "test", [args.k], max_users=args.max_users, invalid_rate_users=0,
                                      return_rankings=True)
        targets, lists[name] = result["rankings"]["targets"], result["rankings"]["model"]
        metrics[name] = {m: result["model"][f"{m}@{args.k}"] for m in ("recall", "ndcg", "coverage")}
        metrics["most_popular"] = {m: result["most_popular"][f"{m}@{args.k}"] for m in ("recall", "ndcg", "coverage")}
        if name == "aligned":
            stage = rec.results.get("preference", {})
    n_items = len(start.codebook)
    paired = {f"{a} - {b}": paired_bootstrap([lists[a]], [lists[b]], targets, n_items, k=args.k,
                                             resamples=args.resamples)
              for a, b in (("aligned", "start"), ("more_sft", "start"), ("aligned", "more_sft"))}
    report = {"arguments": vars(args), "users": len(targets), "metrics": metrics,
              "minutes": {k: round(v, 1) for k, v in walls.items()}, "stage": stage, "paired": paired}
    print(f"| model | recall@{args.k} | ndcg@{args.k} | coverage@{args.k} | minutes |")
    print("|---|---|---|---|---|")
    for name in ("most_popular", "start", "aligned", "more_sft"):
        m = metrics[name]
        minutes = f"+{walls[name]:.1f}" if name in walls else ""
        print(f"| {name} | {m['recall']:.4f} | {m['ndcg']:.4f} | {m['coverage']:.4f} | {minutes} |")
    print()
    print(f"| difference | recall@{args.k} | 95% interval | verdict |")
    print("|---|---|---|---|")
    for name, p in paired.items():
        r = p[f"recall@{args.k}"]
        print(f"| {name} | {r['difference']:+.4f} | [{r['low']:+.4f}, {r['high']:+.4f}] | {interval_verdict(r)} |")
    print(f"{len(targets)} test users")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main(*HfArgumentParser(BenchAlignArguments).parse_args_into_dataclasses())
