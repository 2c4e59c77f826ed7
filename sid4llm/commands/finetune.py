"""Fine-tune a causal LM to recommend items by writing their semantic IDs.

    accelerate launch recipes/finetune.py --config finetune/smollm2_lora \
        --data_dir data/ml-1m --codebook outputs/ids/varlen --output_dir outputs/rec/smollm2
    sid4llm finetune --config finetune/from_scratch --data_dir data/ml-1m --codebook outputs/ids/varlen ...

Any TrainingArguments flag works (--max_steps, --gradient_accumulation_steps, --save_steps, --bf16, ...), beside
sid4llm's own training settings (SidTrainingConfig: validation, weight average, time budget, ...). Re-running a
killed command resumes from its last checkpoint. Writes OUT/ flat, as on the Hub (see SidRecommender).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..cli import load_arguments, run_command
from ..lm.models import ModelArguments
from ..lm.recommender import SidRecommender
from ..lm.tasks import TaskArguments
from ..training import SidDataArguments, SidTrainingConfig, load_finished_run, run_finetune

ARGUMENTS = (ModelArguments, SidDataArguments, TaskArguments, SidTrainingConfig)
logger = logging.getLogger(__name__)


def main(model_args: ModelArguments, data_args: SidDataArguments, task_args: TaskArguments,
         training_args: SidTrainingConfig) -> SidRecommender:
    recommender = run_finetune(model_args, data_args, task_args, training_args)
    metrics = recommender.results["metrics"]
    print({k: metrics[k] for k in ("train_loss", "eval_loss", "train_runtime") if k in metrics})
    print(f"saved to {training_args.output_dir}")
    return recommender


def trained_or_train(config: str | Path | None = None, **overrides: Any) -> SidRecommender:
    """``main`` on a config (file or shipped name) and typed overrides, or the recommender already saved in their
    ``output_dir`` with the same settings (:func:`load_finished_run`; an unfinished run resumes from its last
    checkpoint)."""
    arguments = load_arguments(ARGUMENTS, config, **overrides)
    finished = load_finished_run(*arguments)
    if finished is not None:
        logger.info("a recommender trained with these settings found in %s", arguments[-1].output_dir)
        return finished
    return main(*arguments)


def run(argv: list[str] | None = None) -> SidRecommender:
    return run_command(main, ARGUMENTS, argv)
