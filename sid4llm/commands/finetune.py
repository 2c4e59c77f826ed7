"""Fine-tune a causal LM to recommend items by writing their semantic IDs.

    accelerate launch recipes/finetune.py --config finetune/smollm2_lora \
        --data_dir data/ml-1m --codebook outputs/ids/varlen --output_dir outputs/rec/smollm2
    sid4llm finetune --config finetune/from_scratch --data_dir data/ml-1m --codebook outputs/ids/varlen ...

Any TrainingArguments flag works (--max_steps, --gradient_accumulation_steps, --save_steps, ...). Re-running a
killed command resumes from its last checkpoint. Writes OUT/ flat, as on the Hub (see SidRecommender).
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import TrainingArguments

from ..cli import parse_config_and_args, peek_option, run_command
from ..lm.finetuning import ModelArguments, SidDataArguments, run_finetune
from ..lm.recommender import CONFIG_FILE, SidRecommender
from ..lm.tasks import TaskArguments

ARGUMENTS = (ModelArguments, SidDataArguments, TaskArguments, TrainingArguments)
logger = logging.getLogger(__name__)


def main(model_args: ModelArguments, data_args: SidDataArguments, task_args: TaskArguments,
         training_args: TrainingArguments) -> SidRecommender:
    recommender = run_finetune(model_args, data_args, task_args, training_args)
    metrics = recommender.config["metrics"]
    print({k: metrics[k] for k in ("train_loss", "eval_loss", "train_runtime") if k in metrics})
    print(f"saved to {training_args.output_dir}")
    return recommender


def trained_or_train(argv: list[str]) -> SidRecommender:
    """``main`` on these flags, or the recommender already saved in their ``--output_dir`` (a finished step of a
    longer run is loaded, not retrained; an unfinished one resumes from its last checkpoint)."""
    out = Path(peek_option("output_dir", args=argv))
    if (out / CONFIG_FILE).is_file():
        logger.info("trained recommender found in %s", out)
        return SidRecommender.from_pretrained(out)
    return main(*parse_config_and_args(ARGUMENTS, argv))


def run(argv: list[str] | None = None) -> SidRecommender:
    return run_command(main, ARGUMENTS, argv)
