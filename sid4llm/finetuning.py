"""Fine-tuning a causal LM to write semantic IDs: what ``recipes/finetune.py`` runs.

The HF ``Trainer`` does the loop, so ``accelerate launch`` (CPU, one or many GPUs, DeepSpeed, FSDP),
gradient accumulation, checkpoints and resuming all work as users know them. LoRA goes through PEFT with
the new ID-token rows trainable (``trainable_token_indices``; a tied ``lm_head`` follows the embeddings).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from .data import PreparedData
from .ids import SemanticIdCodebook
from .models import load_causal_lm, load_tokenizer, scratch_model
from .recommender import SidRecommender, recommendation_generation_config
from .tasks import IGNORE_INDEX, TaskArguments, build_task_examples, tokenize_examples
from .tokenization import IdVocabulary, init_id_embeddings

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="default", metadata={"help": "Causal LM folder or Hub id; 'default' = bundled SmolLM2-135M-Instruct."})
    from_scratch: bool = field(default=False, metadata={"help": "Train a small Llama from scratch (the paper's setting); the tokenizer still comes from model_name_or_path."})
    scratch_hidden_size: int = field(default=256, metadata={"help": "From scratch: hidden size."})
    scratch_layers: int = field(default=4, metadata={"help": "From scratch: layers."})
    scratch_heads: int = field(default=4, metadata={"help": "From scratch: attention heads."})
    use_peft: bool = field(default=True, metadata={"help": "LoRA (pretrained models only); False = full fine-tuning."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(default="all-linear", metadata={"help": "Modules to adapt ('all-linear' or comma-separated names)."})
    embedding_init: str = field(default="titles", metadata={"help": "New ID-token rows: titles, mean or random."})
    reserve_disambiguation_tokens: int = field(default=8, metadata={"help": "Extra disambiguation tokens for items added later."})


@dataclass
class SidDataArguments:
    data_dir: str = field(default=None, metadata={"help": "Prepared dataset (scripts/prepare_data.py)."})
    codebook: str = field(default=None, metadata={"help": "A saved SemanticIdCodebook (or the output_dir of recipes/train_ids.py)."})
    eval_examples: int = field(default=256, metadata={"help": "Validation examples (next-item on the valid split) for eval loss."})


def load_codebook(path: str | Path) -> SemanticIdCodebook:
    """A codebook folder, or a ``train_ids`` output folder holding ``codebook/``."""
    path = Path(path)
    if (path / "codebook" / "codebook_config.json").is_file():
        path = path / "codebook"
    return SemanticIdCodebook.from_pretrained(path)


def check_same_catalogue(codebook: SemanticIdCodebook, data: PreparedData) -> None:
    ids = list(data.items["item_id"])
    if codebook.item_ids[: len(ids)] != ids:
        raise ValueError(f"the codebook's items do not match {data.path / 'items'}: train IDs on this dataset "
                         "(recipes/train_ids.py --data_dir ...)")


def build_model_and_vocab(model_args: ModelArguments, codebook: SemanticIdCodebook, seed: int = 0):
    tokenizer = load_tokenizer(model_args.model_name_or_path)
    vocab = IdVocabulary.extend(tokenizer, codebook, extra_disambiguation=model_args.reserve_disambiguation_tokens)
    if model_args.from_scratch:
        model = scratch_model(len(tokenizer), model_args.scratch_hidden_size, model_args.scratch_layers,
                              model_args.scratch_heads, tokenizer=tokenizer, seed=seed)
    else:
        model = load_causal_lm(model_args.model_name_or_path)
        init_id_embeddings(model, vocab, model_args.embedding_init, seed=seed)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, vocab


def apply_lora(model, model_args: ModelArguments, vocab: IdVocabulary):
    from peft import LoraConfig, get_peft_model

    targets = model_args.lora_target_modules
    config = LoraConfig(
        r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
        target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
        task_type="CAUSAL_LM", trainable_token_indices=vocab.new_token_ids,
    )
    return get_peft_model(model, config)


class AnswerLossTrainer(Trainer):
    """``Trainer`` whose loss needs LM-head logits only where the answer is.

    Batches are left-padded, so every answer ends its row; the model is asked for the logits of the last
    ``keep`` positions only (``logits_to_keep``, through the model's own forward, so DDP/FSDP/DeepSpeed
    wrapping is untouched). On a 49k-token vocabulary this removes most of the activation memory and about
    a fifth of the compute, since prompts are far longer than answers."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        answer = labels != IGNORE_INDEX
        width = labels.shape[1]
        starts = torch.where(answer.any(1), answer.float().argmax(1), torch.full_like(labels[:, 0], width))
        keep = min(width, int(width - starts.min()) + 1)
        outputs = model(**inputs, logits_to_keep=keep)
        logits = outputs.logits[:, :-1].float()
        targets = labels[:, width - keep + 1:]
        total = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                  ignore_index=IGNORE_INDEX, reduction="sum")
        if num_items_in_batch is not None:  # normalised over the whole accumulated (and gathered) batch
            loss = total / num_items_in_batch
            if self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes
            self.loss_is_scaled_for_ga = True
        else:
            loss = total / answer.sum().clamp(min=1)
            self.loss_is_scaled_for_ga = False
        return (loss, outputs) if return_outputs else loss


def resolve_resume(training_args: TrainingArguments) -> str | None:
    """Resume from ``--resume_from_checkpoint PATH``; with no flag, from the last checkpoint in output_dir
    when there is one (re-running a killed command continues it); ``--resume_from_checkpoint none`` starts over."""
    value = training_args.resume_from_checkpoint
    if value is not None and str(value).lower() in ("none", "false", "no"):
        return None
    if value is not None and str(value).lower() not in ("auto", "true", "yes"):
        return str(value)
    if os.path.isdir(training_args.output_dir):
        last = get_last_checkpoint(training_args.output_dir)
        if last:
            logger.warning("resuming from %s", last)
        return last
    return None


def run_finetune(model_args: ModelArguments, data_args: SidDataArguments, task_args: TaskArguments,
                 training_args: TrainingArguments, callbacks: list | None = None,
                 data_collator=None) -> SidRecommender:
    if not data_args.data_dir or not data_args.codebook:
        raise ValueError("--data_dir and --codebook are required")
    set_seed(training_args.seed)
    data = PreparedData.load(data_args.data_dir)
    codebook = load_codebook(data_args.codebook)
    check_same_catalogue(codebook, data)
    model, vocab = build_model_and_vocab(model_args, codebook, training_args.seed)
    titles = list(data.items["title"])

    with training_args.main_process_first(desc="building task datasets"):
        train_raw = build_task_examples(data, vocab, task_args, "train")
        train_ds = tokenize_examples(train_raw, vocab, task_args, titles)
        eval_ds = None
        if data_args.eval_examples > 0:
            eval_args = TaskArguments(**{**asdict(task_args), "tasks": "sequential",
                                         "max_examples_per_task": data_args.eval_examples})
            eval_ds = tokenize_examples(build_task_examples(data, vocab, eval_args, "valid"), vocab, eval_args, titles)

    use_peft = model_args.use_peft and not model_args.from_scratch
    if use_peft:
        model = apply_lora(model, model_args, vocab)
    columns = ["input_ids", "attention_mask", "labels"]
    vocab.tokenizer.padding_side = "left"  # answers end every row (AnswerLossTrainer), as in generation
    trainer = AnswerLossTrainer(
        model=model, args=training_args,
        train_dataset=train_ds.select_columns(columns),
        eval_dataset=eval_ds.select_columns(columns) if eval_ds is not None else None,
        data_collator=data_collator or DataCollatorForSeq2Seq(vocab.tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX),
        processing_class=vocab.tokenizer, callbacks=callbacks,
    )
    result = trainer.train(resume_from_checkpoint=resolve_resume(training_args))
    trainer.save_state()
    metrics = dict(result.metrics)
    if eval_ds is not None:
        metrics.update(trainer.evaluate())
    tasks, counts = np.unique(train_raw["task"], return_counts=True)
    metrics["train_examples_by_task"] = {str(t): int(c) for t, c in zip(tasks, counts)}
    stats = {
        "train_examples": len(train_ds), "train_examples_by_task": metrics["train_examples_by_task"],
        "mean_train_tokens": float(np.mean([len(x) for x in train_ds["input_ids"]])),
        "mean_history_tokens": float(np.mean([t for t, k in zip(train_raw["history_tokens"], train_raw["task"]) if k != "alignment"] or [0])),
    }
    config = {
        "base_model": model_args.model_name_or_path, "peft": use_peft, "from_scratch": model_args.from_scratch,
        "model_args": asdict(model_args), "task_args": asdict(task_args), "data_dir": str(data_args.data_dir),
        "dataset": data.stats.get("source"),
        "dataset_stats": {k: data.stats.get(k) for k in ("n_users", "n_items", "n_interactions", "density")},
        "metrics": _jsonable(metrics), "example_stats": _jsonable(stats),
    }
    recommender = SidRecommender(trainer.model, vocab, recommendation_generation_config(vocab), config)
    if trainer.is_world_process_zero():
        recommender.save_pretrained(training_args.output_dir)
        if training_args.push_to_hub:
            repo = training_args.hub_model_id or Path(training_args.output_dir).name
            logger.info("pushed: %s", recommender.push_to_hub(repo, private=training_args.hub_private_repo,
                                                              token=training_args.hub_token))
    return recommender


def _jsonable(value):
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
