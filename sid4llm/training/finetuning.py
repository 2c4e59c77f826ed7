"""Fine-tuning a causal LM to write semantic IDs: what ``sid4llm finetune`` runs.

The HF ``Trainer`` does the loop, so ``accelerate launch`` (CPU, one or many GPUs, DeepSpeed, FSDP),
gradient accumulation, checkpoints and resuming all work as users know them. LoRA goes through PEFT with
the new ID-token rows trainable (``trainable_token_indices``; a tied ``lm_head`` follows the embeddings).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from transformers import ProgressCallback, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from ..allocator import keep_freed_memory
from ..data import PreparedData
from ..decoding.columns import IdDecoder
from ..decoding.cooccurrence import MAX_ITEMS as COOCCURRENCE_MAX_ITEMS
from ..decoding.transition_prior import ItemTransitionPrior
from ..ids import SemanticIdCodebook
from ..lm.embedding_init import init_id_embeddings
from ..lm.models import (
    ModelArguments,
    get_peft_config,
    id_only_tokenizer,
    load_causal_lm,
    load_tokenizer,
    peft_without_its_deprecation,
    scratch_model,
)
from ..lm.recommender import SidRecommender
from ..lm.recommender_config import (
    CONFIG_FILE,
    FORMAT_VERSION,
    PromptConfig,
    SidRecommenderConfig,
    recommendation_generation_config,
)
from ..lm.tasks import TaskArguments, build_segments, stream_tokens_per_item
from ..metrics import sample_users
from ..vocabulary import IdVocabulary
from .config import SidTrainingConfig, recorded_settings
from .packing import PackedCollator, pack_segments
from .selection import (
    TrainingTimeBudget,
    ValidationRecall,
    WeightAverage,
    fit_transition_prior_weight,
    plan_training_steps,
)
from .trainer import IdLossTrainer

logger = logging.getLogger(__name__)


@dataclass
class SidDataArguments:
    """Which prepared dataset and which IDs a recommender is trained on."""

    data_dir: str = field(metadata={"help": "Prepared dataset (sid4llm prepare-data)."})
    codebook: str = field(metadata={"help": "A saved SemanticIdCodebook (or the output_dir of sid4llm train-ids)."})


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
                         "(sid4llm train-ids --data_dir ...)")


def scratch_uses_id_tokenizer(model_args: ModelArguments, text_tasks: bool) -> bool:
    choice = model_args.scratch_tokenizer
    if choice not in ("auto", "ids", "text"):
        raise ValueError(f"scratch_tokenizer must be auto, ids or text, got {choice!r}")
    if choice == "ids" and text_tasks:
        raise ValueError("scratch_tokenizer=ids has no words for the natural_language/alignment tasks: "
                         "use --scratch_tokenizer text or --tasks sequential")
    return choice == "ids" or (choice == "auto" and not text_tasks)


def build_vocab(model_args: ModelArguments, codebook: SemanticIdCodebook, text_tasks: bool = True) -> IdVocabulary:
    """The tokenizer the model will use (ID-only, or the model's own), extended with the codebook's ID tokens."""
    if model_args.from_scratch and scratch_uses_id_tokenizer(model_args, text_tasks):
        tokenizer = id_only_tokenizer()
    else:
        tokenizer = load_tokenizer(model_args.model_name_or_path)
    return IdVocabulary.extend(tokenizer, codebook, extra_disambiguation=model_args.reserve_disambiguation_tokens,
                               item_memory=model_args.item_memory_tokens)


def build_model_and_vocab(model_args: ModelArguments, codebook: SemanticIdCodebook, seed: int = 0,
                          text_tasks: bool = True, max_positions: int = 1024):
    """The (extended) tokenizer and the model: pretrained with new ID rows initialised, or from scratch."""
    vocab = build_vocab(model_args, codebook, text_tasks)
    tokenizer = vocab.tokenizer
    if model_args.from_scratch:
        model = scratch_model(len(tokenizer), model_args.scratch_hidden_size, model_args.scratch_layers,
                              model_args.scratch_heads, max_positions=max_positions, tokenizer=tokenizer, seed=seed,
                              dropout=model_args.scratch_dropout)
    else:
        model = load_causal_lm(model_args.model_name_or_path, num_layers=model_args.pretrained_layers)
        init_id_embeddings(model, vocab, model_args.embedding_init, seed=seed)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, vocab


def continued_model(model_args: ModelArguments, codebook: SemanticIdCodebook):
    """The model and vocabulary of the recommender ``model_args.init_from``, trainable, and ``model_args`` with its
    kind (base, from scratch, adapter, layer cut) set to the saved model's."""
    from ..lm.trainable import load_trainable_recommender
    from ..vocabulary import codebook_fingerprint

    recommender = load_trainable_recommender(model_args.init_from)
    if codebook_fingerprint(recommender.codebook) != codebook_fingerprint(codebook):
        raise ValueError(f"init_from {model_args.init_from}: it was trained on other IDs than --codebook; continue "
                         "it with the codebook it was saved with (its codebook/ folder)")
    saved = recommender.config
    kind = {"model_name_or_path": saved.base_model, "from_scratch": saved.from_scratch, "use_peft": saved.peft,
            "pretrained_layers": saved.pretrained_layers, "item_memory_tokens": saved.item_memory_tokens}
    changed = {k: v for k, v in kind.items() if getattr(model_args, k) != v}
    if changed:
        logger.warning("init_from %s: model settings taken from the saved model: %s", model_args.init_from, changed)
    return recommender.model, recommender.vocab, replace(model_args, **kind)


def apply_lora(model, model_args: ModelArguments, vocab: IdVocabulary):
    """The model wrapped in its PEFT adapter (:func:`~sid4llm.lm.models.get_peft_config`)."""
    from peft import get_peft_model

    with peft_without_its_deprecation():
        return get_peft_model(model, get_peft_config(model_args, model, vocab.new_token_ids))


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
                 training_args: SidTrainingConfig, callbacks: list | None = None,
                 data_collator=None) -> SidRecommender:
    keep_freed_memory()
    set_seed(training_args.seed)
    data = PreparedData.load(data_args.data_dir)
    codebook = load_codebook(data_args.codebook)
    check_same_catalogue(codebook, data)
    if model_args.init_from:
        model, vocab, model_args = continued_model(model_args, codebook)
    else:
        model, vocab = build_model_and_vocab(model_args, codebook, training_args.seed, task_args.text_tasks,
                                             max_positions=max(1024, (task_args.history_token_budget or 0) + 64,
                                                               task_args.max_seq_length or 0))
    record = training_record(model_args, task_args, training_args)  # before the step floor changes max_steps
    row_length = task_args.row_length(vocab)

    with training_args.main_process_first(desc="building task datasets"):
        segments = build_segments(data, vocab, task_args, "train", tie_groups=training_args.stream_tie_shuffle)
        train_ds = pack_segments(segments, row_length, task_args.example_seed)
        eval_ds = None
        if training_args.eval_examples > 0:
            eval_args = replace(task_args, tasks=["sequential"], sequential_targets="last",
                                max_examples_per_task=training_args.eval_examples)
            eval_ds = pack_segments(build_segments(data, vocab, eval_args, "valid"), row_length)

    plan = plan_training_steps(training_args, len(train_ds), training_args.min_steps, training_args.world_size)
    if training_args.dataloader_pin_memory and not torch.cuda.is_available():
        training_args.dataloader_pin_memory = False  # pinned memory needs an accelerator (torch warns on CPU)
    use_peft = model_args.use_peft and not model_args.from_scratch
    if use_peft and not hasattr(model, "peft_config"):  # (a continued adapter is one already)
        model = apply_lora(model, model_args, vocab)
    config = recommender_config(model_args, task_args, training_args, data, record, len(codebook))
    averaged = WeightAverage(training_args.weight_average_decay) if training_args.weight_average_decay else None
    selection = validation_recall(data, vocab, config, training_args, plan["steps"], averaged)
    budget = (TrainingTimeBudget(training_args.max_train_minutes, plan, selection,
                                 rescale_validation=training_args.valid_every is None)
              if training_args.max_train_minutes > 0 else None)
    trainer = IdLossTrainer(
        model=model, args=training_args, train_dataset=train_ds, eval_dataset=eval_ds,
        data_collator=data_collator or PackedCollator(vocab.tokenizer.pad_token_id, vocab.memory_token_ids, vocab.end_id,
                                                      training_args.item_memory_dropout, training_args.seed,
                                                      training_args.stream_item_dropout, vocab.user_id,
                                                      training_args.stream_tie_shuffle),
        processing_class=vocab.tokenizer,
        # the average first (selection scores it), the budget last (it times the validation that just ran)
        callbacks=[*(callbacks or []), *(c for c in (averaged, selection, budget) if c)],
        id_decoder=IdDecoder.build(vocab, trie_softmax=training_args.trie_softmax),
        id_softmax=training_args.id_softmax,
    )
    if budget is not None:
        budget.progress = next((c for c in trainer.callback_handler.callbacks if isinstance(c, ProgressCallback)), None)
    result = trainer.train(resume_from_checkpoint=resolve_resume(training_args))
    trainer.save_state()
    metrics = dict(result.metrics)
    if eval_ds is not None:
        metrics.update(trainer.evaluate())
    stats = training_data_stats(segments, train_ds, vocab, data.item_popularity, row_length)
    metrics["train_examples_by_task"] = stats["segments_by_task"]
    results = {"metrics": _jsonable(metrics), "example_stats": _jsonable(stats), "training_plan": plan,
               **({"validation": selection.summary()} if selection else {})}
    categories = list(data.items["categories"]) if "categories" in data.items.column_names else None
    recommender = SidRecommender(trainer.model, vocab, recommendation_generation_config(vocab), config, categories, results)
    if training_args.transition_prior:
        recommender.transition_prior, recommender.results["transition_prior"] = transition_prior_for(
            recommender, data, training_args)
        recommender.config.decoding.transition_prior_weight = recommender.transition_prior.weight
    out = Path(training_args.output_dir)
    if trainer.is_world_process_zero():
        recommender.save_pretrained(out)
        remove_checkpoints(out)
        if training_args.push_to_hub:
            repo = training_args.hub_model_id or out.name
            logger.info("pushed: %s", recommender.push_to_hub(repo, private=training_args.hub_private_repo,
                                                              token=training_args.hub_token))
    if use_peft and model_args.pretrained_layers:
        # A layer-cut adapter is used on the whole base (ID path: first layers, adapter on; words path: all layers,
        # adapter off): load it as a user will.
        trainer.accelerator.wait_for_everyone()
        return SidRecommender.from_pretrained(out)
    return recommender


def training_record(model_args: ModelArguments, task_args: TaskArguments, training_args: TrainingArguments) -> dict:
    """How a model was trained, as saved beside it (``training`` in ``sid4llm_config.json``): free-form, for the model
    card and for reproduction; loading never reads it."""
    return _jsonable({"model": asdict(model_args), "tasks": asdict(task_args),
                      "training": recorded_settings(training_args)})


def recommender_config(model_args: ModelArguments, task_args: TaskArguments, training_args: TrainingArguments,
                       data: PreparedData, record: dict, trained_items: int) -> SidRecommenderConfig:
    """What the saved recommender needs at inference, from the run's settings (and the training record)."""
    prompt_keys = {f.name for f in fields(PromptConfig)}
    return SidRecommenderConfig(
        base_model=model_args.model_name_or_path, peft=model_args.use_peft and not model_args.from_scratch,
        from_scratch=model_args.from_scratch, pretrained_layers=model_args.pretrained_layers,
        item_memory_tokens=model_args.item_memory_tokens, trie_softmax=getattr(training_args, "trie_softmax", False),
        prompt=PromptConfig(**{k: v for k, v in asdict(task_args).items() if k in prompt_keys}),
        profile=data.profile, training=record, data_dir=str(data.path), dataset=data.stats.get("source"),
        dataset_stats={k: data.stats.get(k) for k in ("n_users", "n_items", "n_interactions", "density")},
        trained_items=trained_items)


def validation_recall(data: PreparedData, vocab: IdVocabulary, config: SidRecommenderConfig,
                      training_args: SidTrainingConfig, steps: int,
                      averaged: WeightAverage | None = None) -> ValidationRecall | None:
    """The model-selection callback (None when ``valid_users`` is 0): it decodes with the model being trained,
    which for a layer cut is the cut model itself (no first-layers view)."""
    if training_args.valid_users <= 0:
        return None
    histories, targets = valid_users(data, training_args.valid_users, training_args.seed)
    as_trained = replace(config, pretrained_layers=None)
    generation = recommendation_generation_config(vocab)
    return ValidationRecall(lambda model: SidRecommender(model, vocab, generation, as_trained), histories, targets,
                            every=training_args.valid_every or max(1, steps // 10),
                            patience=training_args.valid_patience, averaged=averaged)


def valid_users(data: PreparedData, count: int, seed: int) -> tuple[list[list[int]], list[int]]:
    """Histories and targets of a seeded sample of ``count`` users of the valid split."""
    valid = data.sequences["valid"]
    users = sample_users(len(valid), count, seed)
    return [list(valid[u]["history"]) for u in users], [int(valid[u]["target"]) for u in users]


def transition_prior_for(recommender: SidRecommender, data: PreparedData,
                         training_args: SidTrainingConfig) -> tuple[ItemTransitionPrior, dict]:
    """The train histories' item transitions, their re-ranking weight chosen on seeded valid users with the kept
    model as the recommender (in eval mode) decodes."""
    train = data.train_histories()
    prior = ItemTransitionPrior.count(train, len(recommender.codebook))
    cooccurrence = [w for w in training_args.transition_prior_cooccurrence if w > 0]
    if cooccurrence and len(recommender.codebook) > COOCCURRENCE_MAX_ITEMS:
        logger.warning("transition prior: %d items is more than the co-occurrence term is sized for (%d): "
                       "transitions only", len(recommender.codebook), COOCCURRENCE_MAX_ITEMS)
        cooccurrence = []
    if cooccurrence:
        prior.add_cooccurrence(train, l2=training_args.cooccurrence_l2, keep=training_args.cooccurrence_keep)
    histories, targets = valid_users(data, training_args.transition_prior_users, training_args.seed)
    recommender.model.eval()
    summary = fit_transition_prior_weight(recommender, prior, histories, targets, training_args.transition_prior_weights,
                                          cooccurrence_weights=cooccurrence,
                                          candidates=training_args.transition_prior_candidates)
    return prior, summary


def load_finished_run(model_args: ModelArguments, data_args: SidDataArguments, task_args: TaskArguments,
                      training_args: TrainingArguments) -> SidRecommender | None:
    """The recommender saved in ``training_args.output_dir`` if it was fine-tuned with these settings — model,
    tasks, training settings, dataset and the very codebook (by fingerprint) — else None: a longer run re-run
    with the same command reuses its finished steps, and one with other settings (or new IDs) trains again, as
    :func:`sid4llm.ids.load_finished_run` does for IDs."""
    from ..artifacts import read_json
    from ..vocabulary import VOCAB_FILE, codebook_fingerprint

    out = Path(training_args.output_dir)
    if not (out / CONFIG_FILE).is_file() or not (out / VOCAB_FILE).is_file():
        return None
    saved = json.loads((out / CONFIG_FILE).read_text())
    same = (saved.get("format_version") == FORMAT_VERSION
            and saved.get("training") == training_record(model_args, task_args, training_args)
            and Path(saved.get("data_dir", "")).resolve() == Path(data_args.data_dir).resolve()
            and read_json(out / VOCAB_FILE).get("codebook_fingerprint") == codebook_fingerprint(load_codebook(data_args.codebook)))
    if not same:
        logger.info("%s holds a recommender trained with other settings: training again", out)
        return None
    return SidRecommender.from_pretrained(out)


def remove_checkpoints(output_dir: Path) -> None:
    """A finished run keeps its artefact only: ``checkpoint-*`` folders (optimizer state, for resuming a killed
    run) are deleted once the final model is saved."""
    import shutil

    for checkpoint in output_dir.glob("checkpoint-*"):
        if checkpoint.is_dir():
            shutil.rmtree(checkpoint)


def training_data_stats(segments, packed, vocab: IdVocabulary, popularity: np.ndarray, max_seq_length: int) -> dict:
    """What one epoch holds: segments and item targets per task, packed rows and how full they are, and
    what an item costs in an ID stream."""
    tasks, counts = np.unique(segments["task"], return_counts=True)
    targets_by_task: dict[str, int] = {}
    for task, targets in zip(segments["task"], segments["targets"]):
        targets_by_task[task] = targets_by_task.get(task, 0) + len(targets)
    tokens = sum(len(x) for x in packed["input_ids"])
    sequential = [t for t, k in zip(segments["history_tokens"], segments["task"]) if k == "sequential"]
    return {
        "segments_by_task": {str(t): int(c) for t, c in zip(tasks, counts)},
        "item_targets_by_task": targets_by_task,
        "packed_rows": len(packed), "tokens": tokens,
        "row_fill": tokens / (len(packed) * max_seq_length) if len(packed) else 0.0,
        "mean_history_tokens": float(np.mean(sequential)) if sequential else None,
        **stream_tokens_per_item(vocab, popularity),
    }


def _jsonable(value):
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
