"""Learn semantic IDs for the items of a prepared dataset.

    accelerate launch recipes/train_ids.py --config recipes/configs/ids/varlen_dvae.yaml \
        --data_dir data/ml-1m --output_dir outputs/ids/varlen
    python recipes/train_ids.py --method rqkmeans --data_dir data/ml-1m --output_dir outputs/ids/rqkmeans

Writes OUT/codebook/ (a SemanticIdCodebook), OUT/metrics.json and OUT/length_vs_popularity.png, and prints a
summary. A collapsed codebook (few codes in use, or 1-code IDs) is an error: exit status 1, a message saying what
to change, its metrics in OUT/collapse_report.json (``--allow_collapse`` saves it anyway).
"""

import logging

from sid4llm.cli import parse_config_and_args, peek_option, user_errors
from sid4llm.data import PreparedData
from sid4llm.ids import (
    IdMethodConfig,
    IdTrainingArguments,
    config_class,
    save_training_outputs,
    summary_table,
    train_semantic_ids,
)


def main(args: IdTrainingArguments, method_config: IdMethodConfig) -> None:
    if not args.data_dir or not args.output_dir:
        raise SystemExit("error: --data_dir and --output_dir are required")
    data = PreparedData.load(args.data_dir)
    codebook = train_semantic_ids(data.item_embeddings(), data.item_popularity, method_config, args,
                                  item_ids=list(data.items["item_id"]), titles=list(data.items["title"]))
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


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with user_errors():
        method = peek_option("method", default="dvae")
        training_args, config = parse_config_and_args([IdTrainingArguments, config_class(method)])
        main(training_args, config)
