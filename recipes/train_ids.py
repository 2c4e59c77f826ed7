"""Learn semantic IDs for the items of a prepared dataset.

    accelerate launch recipes/train_ids.py --config recipes/configs/ids/varlen_dvae.yaml \
        --data_dir data/ml-1m --output_dir outputs/ids/varlen
    python recipes/train_ids.py --method rqkmeans --data_dir data/ml-1m --output_dir outputs/ids/rqkmeans

Writes OUT/codebook/ (a SemanticIdCodebook), OUT/metrics.json and OUT/length_vs_popularity.png.
"""

import json
import logging

from sid4llm.cli import parse_config_and_args, peek_option
from sid4llm.data import PreparedData
from sid4llm.ids import (
    IdMethodConfig,
    IdTrainingArguments,
    config_class,
    save_training_outputs,
    train_semantic_ids,
)

SUMMARY_KEYS = ["recon_mse_uniform", "recon_mse_unigram", "mean_length_uniform", "mean_length_unigram",
                "spearman_length_popularity", "codebook_usage", "collision_rate_before_dedup", "unique_ids",
                "train_seconds"]


def main(args: IdTrainingArguments, method_config: IdMethodConfig) -> None:
    if not args.data_dir or not args.output_dir:
        raise SystemExit("error: --data_dir and --output_dir are required")
    data = PreparedData.load(args.data_dir)
    codebook = train_semantic_ids(data.item_embeddings(), data.item_popularity, method_config, args,
                                  item_ids=list(data.items["item_id"]), titles=list(data.items["title"]))
    out = save_training_outputs(codebook, args.output_dir, plot=args.plot)
    print(json.dumps({k: codebook.metrics[k] for k in SUMMARY_KEYS}, indent=2))
    print(f"codebook saved to {out / 'codebook'}; metrics in {out / 'metrics.json'}")
    if args.push_to_hub:
        if not args.hub_model_id:
            raise SystemExit("error: --push_to_hub needs --hub_model_id")
        print("pushed:", codebook.push_to_hub(args.hub_model_id))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    method = peek_option("method", default="dvae")
    training_args, config = parse_config_and_args([IdTrainingArguments, config_class(method)])
    main(training_args, config)
