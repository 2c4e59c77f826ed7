"""How the new ID-token rows are initialised, measured: validation loss at the start and after a few LoRA steps.

    python scripts/bench_embedding_init.py --data_dir data/ml-1m --codebook outputs/ids/varlen \
        --train_steps 20 --json outputs/bench_embedding_init.json

For each strategy (titles, mean, random) the same model, examples and seed: loss on held-out next-item
examples (valid split, sequential task, answer tokens only) before training and after ``--train_steps``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field

import torch
from transformers import DataCollatorForSeq2Seq, TrainingArguments

from sid4llm.cli import parse_config_and_args
from sid4llm.data import PreparedData
from sid4llm.finetuning import (
    ModelArguments,
    apply_lora,
    build_model_and_vocab,
    load_codebook,
)
from sid4llm.tasks import IGNORE_INDEX, TaskArguments, build_task_examples, tokenize_examples
from sid4llm.workflow import write_json


@dataclass
class InitBenchArguments:
    data_dir: str = field(default=None, metadata={"help": "Prepared dataset."})
    codebook: str = field(default=None, metadata={"help": "Saved codebook (or train_ids output folder)."})
    model_name_or_path: str = field(default="default", metadata={"help": "Causal LM."})
    strategies: str = field(default="titles,mean,random", metadata={"help": "Strategies to compare."})
    eval_examples: int = field(default=128, metadata={"help": "Held-out examples for the loss."})
    train_steps: int = field(default=20, metadata={"help": "LoRA steps before the second measurement (0 = none)."})
    batch_size: int = field(default=8, metadata={"help": "Batch size for training and evaluation."})
    json: str | None = field(default=None, metadata={"help": "Write results as JSON here."})
    seed: int = field(default=0, metadata={"help": "Seed."})


@torch.no_grad()
def answer_loss(model, dataset, collator, batch_size: int) -> float:
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(dataset), batch_size):
        batch = collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                 ignore_index=IGNORE_INDEX, reduction="sum")
        total += float(loss)
        count += int((labels != IGNORE_INDEX).sum())
    return total / count


def main(args: InitBenchArguments) -> list[dict]:
    from transformers import Trainer

    data = PreparedData.load(args.data_dir)
    codebook = load_codebook(args.codebook)
    titles = list(data.items["title"])
    rows = []
    for strategy in args.strategies.split(","):
        model_args = ModelArguments(model_name_or_path=args.model_name_or_path, embedding_init=strategy)
        model, vocab = build_model_and_vocab(model_args, codebook, args.seed)
        task_args = TaskArguments(tasks="sequential", max_examples_per_task=args.eval_examples)
        held_out = tokenize_examples(build_task_examples(data, vocab, task_args, "valid"), vocab, task_args, titles)
        held_out = held_out.select_columns(["input_ids", "attention_mask", "labels"])
        collator = DataCollatorForSeq2Seq(vocab.tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
        row = {"strategy": strategy, "loss_at_init": round(answer_loss(model, held_out, collator, args.batch_size), 4)}
        if args.train_steps:
            train_args = TaskArguments(windows_per_user=1, max_examples_per_task=args.train_steps * args.batch_size)
            train = tokenize_examples(build_task_examples(data, vocab, train_args, "train"), vocab, train_args, titles)
            model = apply_lora(model, model_args, vocab)
            torch.manual_seed(args.seed)
            Trainer(model=model, data_collator=collator, train_dataset=train.select_columns(["input_ids", "attention_mask", "labels"]),
                    args=TrainingArguments(output_dir=tempfile.mkdtemp(), max_steps=args.train_steps,
                                           per_device_train_batch_size=args.batch_size, learning_rate=5e-4,
                                           report_to="none", save_strategy="no", seed=args.seed, disable_tqdm=True,
                                           logging_steps=args.train_steps)).train()
            row[f"loss_after_{args.train_steps}_steps"] = round(answer_loss(model, held_out, collator, args.batch_size), 4)
        print(row, flush=True)
        rows.append(row)
    if args.json:
        write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    (bench_args,) = parse_config_and_args([InitBenchArguments])
    main(bench_args)
