"""The main job in one command (`make quickstart`): run the pipeline on the bundled default data.

Steps so far: prepare MovieLens-1M (splits, items, stats) and embed its items with the bundled
all-MiniLM-L6-v2. Each step is skipped when its output already exists, so a second run is instant.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from sid4llm.cli import parse_config_and_args
from sid4llm.data import PrepareDataArguments, PreparedData, prepare_dataset


@dataclass
class QuickstartArguments:
    output_dir: str = field(default="outputs/quickstart", metadata={"help": "Where every output goes."})
    dataset: str = field(default="default", metadata={"help": "Bundled dataset name or path (see prepare_data.py)."})
    encoder: str = field(default="default", metadata={"help": "Sentence encoder for item text."})
    max_users: int | None = field(default=None, metadata={"help": "Subsample users for a faster run."})


def main(args: QuickstartArguments) -> None:
    out = Path(args.output_dir)
    data_dir = out / "data"
    start = time.time()
    if not (data_dir / "stats.json").exists():
        print(f"[1/1] preparing {args.dataset} and embedding its items → {data_dir}")
        prepare_dataset(PrepareDataArguments(output_dir=str(data_dir), dataset=args.dataset, encoder=args.encoder,
                                             max_users=args.max_users))
    else:
        print(f"[1/1] prepared dataset found in {data_dir} (delete it to rebuild)")
    data = PreparedData.load(data_dir)
    stats = data.stats
    print("\nDataset:", json.dumps({k: stats[k] for k in ("source", "n_users", "n_items", "n_interactions",
                                                          "density", "median_seq_len", "has_text")}))
    print(f"\nDone in {time.time() - start:.0f}s. Outputs:")
    print(f"  splits        {data_dir / 'sequences'}  (train / valid / test, datasets.load_from_disk)")
    print(f"  items         {data_dir / 'items'}")
    print(f"  statistics    {data_dir / 'stats.json'}")
    print(f"  embeddings    {data_dir / 'item_embeddings.safetensors'}  ({len(data.item_embeddings())} items)")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    (arguments,) = parse_config_and_args([QuickstartArguments])
    main(arguments)
