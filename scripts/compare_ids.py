"""One recommender config, several ID sets, one table: which IDs recommend best under the same training.

    python scripts/compare_ids.py --data_dir data/ml-1m \
        --codebooks varlen=outputs/ids/varlen,fixed=outputs/ids/fixed,rqkmeans=outputs/ids/rqkmeans,atomic=outputs/ids/atomic \
        --finetune_config sid4llm/configs/finetune/from_scratch.yaml --output_dir outputs/compare --eval_users 1000

Trains ``--finetune_config`` (recipes/finetune.py) once per codebook with the same seed, budget and epochs/steps, then
evaluates every model on the same seeded test users (seen items left out, and kept) beside the most-popular
floor. Writes OUT/results.md and OUT/results.json; a finished model is reused on a re-run.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sid4llm.cli import parse_config_and_args
from sid4llm.commands import finetune
from sid4llm.data import PreparedData
from sid4llm.evaluation import evaluate_recommender
from sid4llm.lm.tasks import stream_tokens_per_item
from sid4llm.reporting import machine_description, markdown_table, write_json

# Published full-catalogue leave-one-out HR@10 on MovieLens-1M (their public READMEs).
REFERENCE = "SASRec 0.24–0.29, gSASRec 0.30, BERT4Rec 0.28, HSTU 0.33"


@dataclass
class CompareArguments:
    data_dir: str = field(metadata={"help": "A prepared dataset."})
    codebooks: list[str] = field(metadata={"help": "name=path ... (train_ids.py output folders or codebooks)."})
    finetune_config: str = field(default="finetune/from_scratch.yaml", metadata={"help": "Fine-tuning config."})
    output_dir: str = field(default="outputs/compare", metadata={"help": "Models, results.md and results.json."})
    eval_users: int = field(default=1000, metadata={"help": "Seeded random test users (0 = all)."})
    num_beams: int | None = field(default=None, metadata={"help": "Beam width (default: the saved generation config's)."})
    max_steps: int | None = field(default=None, metadata={"help": "Override the config's steps (same for every run)."})
    num_train_epochs: float | None = field(default=None, metadata={"help": "Override the config's epochs."})
    history_token_budget: int | None = field(default=None, metadata={"help": "Override the config's history budget."})
    seed: int = field(default=0, metadata={"help": "Training seed, the same for every codebook."})


def main(args: CompareArguments) -> dict:
    bad = [pair for pair in args.codebooks if "=" not in pair]
    if bad:
        raise SystemExit(f"error: --codebooks takes name=path pairs, got {bad}")
    out = Path(args.output_dir)
    data = PreparedData.load(args.data_dir)
    rows = []
    for name, path in (pair.split("=", 1) for pair in args.codebooks):
        start = time.time()
        rec = finetune.trained_or_train(
            args.finetune_config, data_dir=args.data_dir, codebook=path, output_dir=out / name, seed=args.seed,
            max_steps=args.max_steps, num_train_epochs=args.num_train_epochs,
            history_token_budget=args.history_token_budget)
        train_seconds = rec.results.get("metrics", {}).get("train_runtime", time.time() - start)
        ev = evaluate_recommender(rec, data, "test", (1, 5, 10, 20), num_beams=args.num_beams,
                                  max_users=args.eval_users or None, report_with_seen=True, invalid_rate_users=32)
        rows.append({"ids": name, "train_seconds": round(float(train_seconds), 1),
                     "train_loss": rec.results["metrics"].get("train_loss"),
                     "epochs": rec.results["metrics"].get("epoch"),
                     **stream_tokens_per_item(rec.vocab, data.item_popularity),
                     "model": ev["model"], "most_popular": ev["most_popular"],
                     "model_with_seen": ev["model_with_seen"], "most_popular_with_seen": ev["most_popular_with_seen"]})
        print(f"{name}: recall@10 {ev['model']['recall@10']:.4f} (most popular {ev['most_popular']['recall@10']:.4f}), "
              f"coverage@10 {ev['model']['coverage@10']:.4f}, trained in {train_seconds:.0f} s", flush=True)
    result = {"arguments": asdict(args), "machine": machine_description(), "rows": rows, "reference": REFERENCE}
    write_json(out / "results.json", result)
    (out / "results.md").write_text(results_markdown(result))
    print(results_markdown(result))
    return result


def results_markdown(result: dict) -> str:
    rows = result["rows"]
    args = result["arguments"]
    lines = [
        "# Recommenders on different IDs, same training", "",
        f"Config `{args['finetune_config']}` on `{args['data_dir']}`, seed {args['seed']}; test split, leave-one-out, full "
        f"catalogue, {rows[0]['model']['n_users']:,} seeded random users. Machine: {result['machine']}.", "",
    ]
    table = [[r["ids"], f"{r['tokens_per_item_uniform']:.2f} / {r['tokens_per_item_unigram']:.2f}", f"{r['epochs']:.2f}",
              f"{r['train_seconds']:.0f}", f"{r['model']['recall@10']:.4f}", f"{r['model']['ndcg@10']:.4f}",
              f"{r['model']['coverage@10']:.4f}", f"{r['model_with_seen']['recall@10']:.4f}"] for r in rows]
    p, pw = rows[0]["most_popular"], rows[0]["most_popular_with_seen"]
    table.append(["most popular", "–", "–", "–", f"{p['recall@10']:.4f}", f"{p['ndcg@10']:.4f}", f"{p['coverage@10']:.4f}",
                  f"{pw['recall@10']:.4f}"])
    lines += [markdown_table(["IDs", "tokens/item (uniform / per interaction)", "epochs", "train s", "recall@10", "ndcg@10",
                              "coverage@10", "recall@10, seen kept"], table), "",
              "Seen items are left out of every list (model and most popular alike) unless the column says kept. "
              f"Published HR@10 on MovieLens-1M, same protocol: {result['reference']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    (arguments,) = parse_config_and_args([CompareArguments])
    main(arguments)
