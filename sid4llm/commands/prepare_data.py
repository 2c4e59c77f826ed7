"""Prepare a recommendation dataset: splits, items, stats.json and item embeddings.

    sid4llm prepare-data --dataset default --output_dir data/ml-1m
    sid4llm prepare-data --dataset ml-100k --output_dir data/ml-100k
    sid4llm prepare-data --dataset path/to/Beauty_5.json.gz --item_file meta_Beauty.json.gz \
        --format amazon --output_dir data/beauty
"""

from __future__ import annotations

import json
from pathlib import Path

from ..cli import run_command
from ..data import PrepareDataArguments, prepare_dataset

ARGUMENTS = (PrepareDataArguments,)


def main(args: PrepareDataArguments) -> Path:
    out = prepare_dataset(args)
    stats = json.loads((out / "stats.json").read_text())
    keys = ["source", "n_users", "n_items", "n_interactions", "density", "median_seq_len", "has_text", "embedding_dim"]
    print(json.dumps({k: stats.get(k) for k in keys}, indent=2))
    print(f"prepared dataset written to {out}")
    return out


def run(argv: list[str] | None = None) -> Path:
    return run_command(main, ARGUMENTS, argv)
