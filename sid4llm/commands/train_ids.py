"""Learn semantic IDs for the items of a prepared dataset.

    sid4llm train-ids --config ids/varlen_dvae --data_dir data/ml-1m --output_dir outputs/ids/varlen
    sid4llm train-ids --method rqkmeans --data_dir data/ml-1m --output_dir outputs/ids/rqkmeans

Writes OUT/codebook/ (a SemanticIdCodebook), OUT/metrics.json and OUT/length_vs_popularity.png, and prints a
summary. A collapsed codebook (few codes in use, or 1-code IDs) is an error: exit status 1, a message saying what
to change, its metrics in OUT/collapse_report.json (``--allow_collapse`` saves it anyway).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from ..cli import load_arguments, peek_option, read_config, run_command
from ..data import PreparedData
from ..ids import (
    IdMethodConfig,
    IdTrainingArguments,
    SemanticIdCodebook,
    config_class,
    load_finished_run,
    save_training_outputs,
    summary_table,
    train_semantic_ids,
)

logger = logging.getLogger(__name__)
# Each ID method by its shipped config (sid4llm/configs/): what the paper reproduction and cold start compare.
SHIPPED_ID_CONFIGS = {"varlen": "ids/varlen_dvae.yaml", "fixed": "ids/fixed_dvae.yaml", "rqkmeans": "ids/rqkmeans.yaml",
                      "reinforce": "ids/reinforce.yaml"}


def arguments(argv: list[str] | None = None) -> tuple[type, type]:
    """The dataclasses to parse: the training arguments and the config of the method ``--method`` names."""
    return IdTrainingArguments, config_class(peek_option("method", default="dvae", args=argv))


def main(args: IdTrainingArguments, method_config: IdMethodConfig, data: PreparedData | None = None) -> SemanticIdCodebook:
    if not args.data_dir or not args.output_dir:
        raise SystemExit("error: --data_dir and --output_dir are required")
    data = data or PreparedData.load(args.data_dir)
    codebook = train_semantic_ids(data.item_embeddings(), data.item_popularity, method_config, args,
                                  item_ids=list(data.items["item_id"]), titles=list(data.items["title"]),
                                  histories=data.train_histories() if args.collaborative_for(method_config) else None)
    cfg = codebook.config
    print(f"{cfg.method}{' (variable length)' if cfg.variable_length else ''}, V={cfg.vocab_size}, "
          f"L={cfg.max_length}, {len(codebook):,} items:")
    print(summary_table(codebook.metrics))
    out = save_training_outputs(codebook, args.output_dir, plot=args.plot, allow_collapse=args.allow_collapse)
    print(f"codebook saved to {out / 'codebook'}; metrics in {out / 'metrics.json'}")
    if args.push_to_hub:
        if not args.hub_model_id:
            raise SystemExit("error: --push_to_hub needs --hub_model_id")
        print("pushed:", codebook.push_to_hub(args.hub_model_id))
    return codebook


def trained_or_train(config: str | Path | None = None, **overrides: Any) -> SemanticIdCodebook:
    """``main`` on a config (file or shipped name) and typed overrides, or the codebook already saved in their
    ``output_dir`` by the same method config and steps (a finished step of a longer run is loaded, not
    retrained; other settings train again)."""
    method = overrides.get("method") or read_config(config).get("method", "dvae")
    args, method_config = load_arguments((IdTrainingArguments, config_class(method)), config, **overrides)
    if not args.data_dir or not args.output_dir:
        raise ValueError("train-ids needs data_dir and output_dir")
    data = PreparedData.load(args.data_dir)
    finished = load_finished_run(args.output_dir, method_config, args, data.item_popularity)
    if finished is not None:
        logger.info("IDs trained with these settings found in %s", args.output_dir)
        return finished
    return main(args, method_config, data)


def run(argv: list[str] | None = None) -> SemanticIdCodebook:
    return run_command(main, arguments(sys.argv[1:] if argv is None else argv), argv)
