"""Recall@10 against beam width on a trained recommender: what a wider search buys, and what it costs.

    python scripts/bench_beam_width.py --model outputs/rec/varlen --data_dir data/ml-1m \
        --beams 10,20,50,100 --max_users 1000 --json docs/beam_width.json

The same seeded users for every width, seen items left out (the default protocol); prints a table and
writes JSON. The default beam width of saved recommenders was chosen from this table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sid4llm.cli import parse_config_and_args
from sid4llm.data import PreparedData
from sid4llm.evaluation import evaluate_recommender
from sid4llm.lm.recommender import SidRecommender
from sid4llm.reporting import machine_description, markdown_table, write_json


@dataclass
class BeamWidthArguments:
    model: str = field(metadata={"help": "A trained recommender folder (recipes/finetune.py output)."})
    data_dir: str = field(metadata={"help": "The prepared dataset it was trained on."})
    beams: list[int] = field(default_factory=lambda: [10, 20, 50, 100], metadata={"help": "Beam widths to compare."})
    split: str = field(default="test", metadata={"help": "valid or test."})
    max_users: int | None = field(default=1000, metadata={"help": "Seeded random sample of users (0 = all)."})
    batch_size: int = field(default=16, metadata={"help": "Users per decoding batch."})
    json: str | None = field(default=None, metadata={"help": "Write the table here as JSON."})


def main(args: BeamWidthArguments) -> list[dict]:
    recommender = SidRecommender.from_pretrained(args.model)
    data = PreparedData.load(args.data_dir)
    rows = []
    for beams in args.beams:
        # Cut-offs up to 10 only: the search keeps max(num_beams, largest K) beams, so K=20 would hide widths below 20.
        result = evaluate_recommender(recommender, data, args.split, (1, 5, 10), num_beams=beams,
                                      batch_size=args.batch_size, max_users=args.max_users or None,
                                      invalid_rate_users=0, show_progress=False)
        m = result["model"]
        rows.append({"num_beams": beams, "recall@10": m["recall@10"], "ndcg@10": m["ndcg@10"],
                     "coverage@10": m["coverage@10"],
                     "users_per_second": round(m["users_per_second"], 1),
                     "most_popular_recall@10": result["most_popular"]["recall@10"]})
        print(rows[-1], flush=True)
    print(markdown_table(list(rows[0]), [[f"{v:.4f}" if isinstance(v, float) else v for v in row.values()] for row in rows]))
    if args.json:
        write_json(args.json, {"model": args.model, "users": result["model"]["n_users"],
                               "machine": machine_description(), "rows": rows})
    return rows


if __name__ == "__main__":
    (arguments,) = parse_config_and_args([BeamWidthArguments])
    main(arguments)
