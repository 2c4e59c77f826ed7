"""Fine-tune a causal LM to recommend items by writing their semantic IDs.

    accelerate launch recipes/finetune.py --config recipes/configs/finetune/smollm2_lora.yaml \
        --data_dir data/ml-1m --codebook outputs/ids/varlen --output_dir outputs/rec/smollm2
    python recipes/finetune.py --config recipes/configs/finetune/from_scratch.yaml --data_dir ... --codebook ...

Any TrainingArguments flag works (--max_steps, --gradient_accumulation_steps, --save_steps, ...). Re-running a
killed command resumes from its last checkpoint. Writes OUT/ flat, as on the Hub (see SidRecommender).
"""

import logging

from transformers import TrainingArguments

from sid4llm.cli import parse_config_and_args, user_errors
from sid4llm.finetuning import ModelArguments, SidDataArguments, run_finetune
from sid4llm.tasks import TaskArguments


def main(model_args, data_args, task_args, training_args) -> None:
    recommender = run_finetune(model_args, data_args, task_args, training_args)
    metrics = recommender.config["metrics"]
    print({k: metrics[k] for k in ("train_loss", "eval_loss", "train_runtime") if k in metrics})
    print(f"saved to {training_args.output_dir}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with user_errors():
        main(*parse_config_and_args([ModelArguments, SidDataArguments, TaskArguments, TrainingArguments]))
