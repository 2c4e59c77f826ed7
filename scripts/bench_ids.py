"""Train every ID method on the same embeddings and print one comparison table (and write JSON).

    python scripts/bench_ids.py --data_dir data/ml-1m                      # all four methods, their YAML configs
    python scripts/bench_ids.py --data_dir data/ml-1m --epochs 1 --methods varlen_dvae rqkmeans
    python scripts/bench_ids.py --scaling_only                             # time vs catalogue size, synthetic
    python scripts/bench_ids.py --data_dir data/ml-1m --methods fixed_dvae \
        --variants "c6: varlen_dvae; c9: varlen_dvae --length_cost 9; L5: varlen_dvae --max_length 5"   # a study

Each method is configured by ``sid4llm/configs/ids/<method>.yaml`` (the files the recipe uses), so the table
is what a user gets from ``recipes/train_ids.py`` with those configs. A run whose folder under ``--output_dir``
already holds a codebook trained with the same method config is reused, so a long study can be resumed. ``--scaling`` adds the time per epoch
and encoding throughput as the number of items grows (synthetic unit vectors, Zipf popularity).
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sid4llm.cli import parse_config_and_args, peek_option
from sid4llm.data import PreparedData
from sid4llm.ids import (
    DVAEConfig,
    IdTrainingArguments,
    config_class,
    load_finished_run,
    save_training_outputs,
    train_semantic_ids,
)
from sid4llm.reporting import markdown_table

METHODS = ["varlen_dvae", "fixed_dvae", "rqkmeans", "reinforce"]


@dataclass
class BenchArguments:
    data_dir: str | None = field(default=None, metadata={"help": "Prepared dataset (sid4llm prepare-data)."})
    methods: list[str] = field(default_factory=lambda: list(METHODS), metadata={"help": "Shipped config names (sid4llm/configs/ids/) to compare."})
    variants: str = field(default="", metadata={"help": "More runs, ';'-separated, each 'label: config_name --flag value ...' (a config with overrides)."})
    epochs: float | None = field(default=None, metadata={"help": "Override every config's epochs."})
    seed: int = field(default=0, metadata={"help": "Seed for every method."})
    output_dir: str = field(default="outputs/bench_ids", metadata={"help": "Codebooks, plots and results.json go here."})
    scaling: bool = field(default=False, metadata={"help": "Also time training and encoding vs catalogue size."})
    scaling_only: bool = field(default=False, metadata={"help": "Only the scaling table (no dataset needed)."})
    scaling_sizes: list[int] = field(default_factory=lambda: [1000, 10000, 100000], metadata={"help": "Catalogue sizes for --scaling."})
    scaling_steps: int = field(default=30, metadata={"help": "Training steps timed per size."})


def load_method(name: str, overrides: list[str]):
    args = ["--config", f"ids/{name}", *overrides]
    method = peek_option("method", "dvae", args)
    return parse_config_and_args([IdTrainingArguments, config_class(method)], args)


def fmt(value, digits=3):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def runs(args: BenchArguments) -> list[tuple[str, str, list[str]]]:
    """(label, config name, extra flags) for every method and variant."""
    out = [(name, name, []) for name in args.methods]
    for entry in filter(str.strip, args.variants.split(";")):
        label, _, rest = entry.partition(":")
        if not rest.strip():
            raise SystemExit(f"error: --variants entry {entry!r} is not 'label: config_name --flag value ...'")
        name, *flags = rest.split()
        out.append((label.strip(), name, flags))
    return out


def popularity_ratio(m: dict) -> float | None:
    """Median train popularity of the shortest codes over that of the longest (the paper: ~56x on Amazon)."""
    by_length = {int(k): v for k, v in m["median_popularity_by_length"].items()}
    if len(by_length) < 2 or by_length[max(by_length)] <= 0:
        return None
    return by_length[min(by_length)] / by_length[max(by_length)]


def compare(args: BenchArguments) -> list[dict]:
    data = PreparedData.load(args.data_dir)
    x, pop, histories = data.item_embeddings(), data.item_popularity, data.train_histories()
    rows = []
    for label, name, flags in runs(args):
        overrides = ["--seed", str(args.seed)] + (["--epochs", str(args.epochs)] if args.epochs else []) + flags
        train_args, config = load_method(name, overrides)
        run_dir = Path(args.output_dir) / label.replace(" ", "_")
        finished = load_finished_run(run_dir, config, train_args, pop)
        if finished is not None:
            print(f"== {label}: reusing the finished run in {run_dir}", flush=True)
            m = finished.metrics
        else:
            print(f"== {label}: {config.to_dict()}", flush=True)
            codebook = train_semantic_ids(x, pop, config, train_args, list(data.items["item_id"]),
                                          list(data.items["title"]), histories=histories)
            save_training_outputs(codebook, run_dir, allow_collapse=True)
            m = codebook.metrics
        rows.append({**{k: v for k, v in m.items() if k != "history"}, "id_method": m["method"], "method": label,
                     "config": name, "flags": flags, "popularity_ratio_shortest_longest": popularity_ratio(m),
                     "epochs": train_args.epochs if config.method != "rqkmeans" else None})
    return rows


def print_table(rows: list[dict]) -> str:
    """One row per run; with a fixed_dvae run, lengths and errors also relative to it (the paper's claim 1)."""
    fixed = next((r for r in rows if r.get("config") == "fixed_dvae"), None)
    header = ["method", "mean len (uniform)", "mean len (unigram)", "recon (uniform)", "recon (unigram)",
              "Spearman(len, pop)", "median pop shortest / longest", "usage", "min usage per step", "perplexity@1",
              "collisions", "train steps", "train s"]
    if fixed:
        header[3:3] = ["codes per interaction / fixed", "recon (unigram) / fixed"]
    table_rows = []
    for r in rows:
        cells = [r["method"], fmt(r["mean_length_uniform"], 2), fmt(r["mean_length_unigram"], 2),
                 fmt(r["recon_mse_uniform"]), fmt(r["recon_mse_unigram"]), fmt(r["spearman_length_popularity"]),
                 fmt(r["popularity_ratio_shortest_longest"], 1), fmt(r["codebook_usage_overall"]),
                 fmt(min(r["codebook_usage"]), 3), fmt(r["codebook_perplexity"][0], 1),
                 fmt(r["collision_rate_before_dedup"]), fmt(r["train_steps"]), fmt(r["train_seconds"], 1)]
        if fixed:
            recon = r["recon_mse_unigram"]
            cells[3:3] = [fmt(r["mean_length_unigram"] / fixed["mean_length_unigram"], 2),
                          fmt(recon / fixed["recon_mse_unigram"], 2) if recon is not None else "–"]
        table_rows.append(cells)
    table = markdown_table(header, table_rows)
    print(table)
    return table


def scaling(args: BenchArguments) -> list[dict]:
    """Seconds per training step and items/s at encode time, as the catalogue grows."""
    rows = []
    for n in args.scaling_sizes:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(n, 384)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        pop = np.maximum(1, 1e5 / (np.arange(n) + 1)).astype(np.int64)
        # synthetic items have no histories: the dVAE's own speed, on text-only input
        train_args, config = load_method("varlen_dvae", ["--max_steps", str(args.scaling_steps), "--collaborative_weight", "0"])
        start = time.time()
        codebook = train_semantic_ids(x, pop, config, train_args)
        total = time.time() - start
        step_seconds = codebook.metrics["train_seconds"] / args.scaling_steps
        encode_seconds = total - codebook.metrics["train_seconds"]
        row = {"n_items": n, "dvae_seconds_per_step": round(step_seconds, 4),
               "dvae_train_examples_per_second": codebook.metrics["train_examples_per_second"],
               "encode_and_metrics_seconds": round(encode_seconds, 2),
               "encode_items_per_second": round(n / encode_seconds, 1)}
        if n <= 100_000:
            km_args, km_config = load_method("rqkmeans", ["--kmeans_iters", "20"])
            start = time.time()
            train_semantic_ids(x, pop, km_config, km_args)
            row["rqkmeans_seconds_20_iters"] = round(time.time() - start, 2)
        print(row, flush=True)
        rows.append(row)
    return rows


def main(args: BenchArguments) -> None:
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                          "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()},
              "dvae_defaults": DVAEConfig().to_dict()}
    if not args.scaling_only:
        if not args.data_dir:
            raise SystemExit("error: --data_dir is required (or pass --scaling_only)")
        result["data_dir"] = args.data_dir
        result["methods"] = compare(args)
        result["table"] = print_table(result["methods"])
    if args.scaling or args.scaling_only:
        result["scaling"] = scaling(args)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print(f"results written to {out / 'results.json'}")


if __name__ == "__main__":
    (bench_args,) = parse_config_and_args([BenchArguments])
    main(bench_args)
