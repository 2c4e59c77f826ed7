"""Prepare a recommendation dataset: splits, items, stats.json and item embeddings.

    python scripts/prepare_data.py --dataset default --output_dir data/ml-1m
    python scripts/prepare_data.py --dataset ml-100k --output_dir data/ml-100k
    python scripts/prepare_data.py --dataset path/to/Beauty_5.json.gz --item_file meta_Beauty.json.gz \
        --format amazon --output_dir data/beauty
"""

import json
import logging

from sid4llm.cli import parse_config_and_args, user_errors
from sid4llm.data import PrepareDataArguments, prepare_dataset


def main(args: PrepareDataArguments) -> None:
    out = prepare_dataset(args)
    stats = json.loads((out / "stats.json").read_text())
    keys = ["source", "n_users", "n_items", "n_interactions", "density", "median_seq_len", "has_text", "embedding_dim"]
    print(json.dumps({k: stats.get(k) for k in keys}, indent=2))
    print(f"prepared dataset written to {out}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with user_errors():
        (arguments,) = parse_config_and_args([PrepareDataArguments])
        main(arguments)
