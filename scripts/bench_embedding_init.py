"""How the new ID-token rows are initialised, measured: validation loss at the start and after a few LoRA steps.

    python scripts/bench_embedding_init.py --data_dir data/ml-1m --codebook outputs/ids/varlen \
        --train_steps 20 --json outputs/bench_embedding_init.json

For each strategy (titles, mean, random) the same model, examples and seed: the training loss on held-out
next-item examples (valid split, ID streams, the held-out item's tokens only) before training and after
``--train_steps`` LoRA steps on packed whole-history rows.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from sid4llm.cli import parse_config_and_args
from sid4llm.data import PreparedData
from sid4llm.decoding.columns import IdDecoder
from sid4llm.lm.models import ModelArguments
from sid4llm.lm.tasks import IGNORE_INDEX, TaskArguments, build_segments
from sid4llm.reporting import write_json
from sid4llm.training.finetuning import apply_lora, build_model_and_vocab, load_codebook
from sid4llm.training.packing import PackedCollator, pack_segments
from sid4llm.training.trainer import IdLossTrainer


@dataclass
class InitBenchArguments:
    data_dir: str = field(default=None, metadata={"help": "Prepared dataset."})
    codebook: str = field(default=None, metadata={"help": "Saved codebook (or train_ids output folder)."})
    model_name_or_path: str = field(default="default", metadata={"help": "Causal LM."})
    strategies: list[str] = field(default_factory=lambda: ["titles", "mean", "random"], metadata={"help": "Strategies to compare."})
    eval_examples: int = field(default=128, metadata={"help": "Held-out examples for the loss."})
    train_steps: int = field(default=20, metadata={"help": "LoRA steps before the second measurement (0 = none)."})
    batch_size: int = field(default=8, metadata={"help": "Packed rows per batch (training and evaluation)."})
    history_token_budget: int = field(default=128, metadata={"help": "History budget (as in smollm2_lora.yaml)."})
    json: str | None = field(default=None, metadata={"help": "Write results as JSON here."})
    seed: int = field(default=0, metadata={"help": "Seed."})


@torch.no_grad()
def held_out_loss(trainer: IdLossTrainer, dataset, batch_size: int) -> float:
    """The training loss (ID targets over the ID tokens), averaged over every target token of ``dataset``."""
    trainer.model.eval()
    total, count = 0.0, 0
    for start in range(0, len(dataset), batch_size):
        batch = trainer.data_collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        total += float(trainer.compute_loss(trainer.model, dict(batch))) * n
        count += n
    return total / count


def main(args: InitBenchArguments) -> list[dict]:
    data = PreparedData.load(args.data_dir)
    codebook = load_codebook(args.codebook)
    rows = []
    for strategy in args.strategies:
        model_args = ModelArguments(model_name_or_path=args.model_name_or_path, embedding_init=strategy)
        model, vocab = build_model_and_vocab(model_args, codebook, args.seed)
        task_args = TaskArguments(tasks=["sequential"], sequential_targets="last", max_examples_per_task=args.eval_examples,
                                  history_token_budget=args.history_token_budget)
        length = task_args.row_length(vocab)
        held_out = pack_segments(build_segments(data, vocab, task_args, "valid"), length)
        # Two windows fill a packed row: enough windows for train_steps steps of batch_size rows.
        train_args = TaskArguments(tasks=["sequential"], max_examples_per_task=2 * args.train_steps * args.batch_size,
                                   history_token_budget=args.history_token_budget)
        train = pack_segments(build_segments(data, vocab, train_args, "train"), length, args.seed)
        model = apply_lora(model, model_args, vocab)
        torch.manual_seed(args.seed)
        trainer = IdLossTrainer(
            model=model, data_collator=PackedCollator(vocab.tokenizer.pad_token_id), train_dataset=train,
            id_decoder=IdDecoder.build(vocab),
            args=TrainingArguments(output_dir=tempfile.mkdtemp(), max_steps=args.train_steps,
                                   per_device_train_batch_size=args.batch_size,
                                   learning_rate=5e-4, report_to="none", save_strategy="no", seed=args.seed,
                                   disable_tqdm=True, logging_steps=max(args.train_steps, 1)))
        row = {"strategy": strategy, "loss_at_init": round(held_out_loss(trainer, held_out, args.batch_size), 4)}
        if args.train_steps:
            trainer.train()
            row[f"loss_after_{args.train_steps}_steps"] = round(held_out_loss(trainer, held_out, args.batch_size), 4)
        print(row, flush=True)
        rows.append(row)
    if args.json:
        write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    (bench_args,) = parse_config_and_args([InitBenchArguments])
    main(bench_args)
