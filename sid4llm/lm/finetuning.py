"""Fine-tuning a causal LM to write semantic IDs: what ``sid4llm finetune`` runs.

The HF ``Trainer`` does the loop, so ``accelerate launch`` (CPU, one or many GPUs, DeepSpeed, FSDP),
gradient accumulation, checkpoints and resuming all work as users know them. LoRA goes through PEFT with
the new ID-token rows trainable (``trainable_token_indices``; a tied ``lm_head`` follows the embeddings).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from transformers import ProgressCallback, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from ..data import PreparedData
from ..decoding.columns import IdDecoder, id_head_rows
from ..decoding.transition_prior import ItemTransitionPrior
from ..ids import SemanticIdCodebook
from ..vocabulary import IdVocabulary
from .embedding_init import init_id_embeddings
from .model_selection import (
    TrainingTimeBudget,
    ValidationRecall,
    WeightAverage,
    fit_transition_prior_weight,
    plan_training_steps,
    sampled_users,
)
from .models import (
    ModelArguments,
    full_layer_adapter_targets,
    id_only_tokenizer,
    load_causal_lm,
    load_tokenizer,
    peft_without_its_deprecation,
    scratch_model,
)
from .recommender import SidRecommender, recommendation_generation_config
from .recommender_config import CONFIG_FILE, FORMAT_VERSION, SidRecommenderConfig
from .tasks import (
    IGNORE_INDEX,
    PackedCollator,
    TaskArguments,
    build_segments,
    pack_segments,
    stream_tokens_per_item,
)

logger = logging.getLogger(__name__)


@dataclass
class SidDataArguments:
    data_dir: str = field(metadata={"help": "Prepared dataset (sid4llm prepare-data)."})
    codebook: str = field(metadata={"help": "A saved SemanticIdCodebook (or the output_dir of sid4llm train-ids)."})
    eval_examples: int = field(default=256, metadata={"help": "Validation examples (next-item on the valid split) for eval loss."})
    min_steps: int = field(default=0, metadata={
        "help": "Train at least this many steps whatever the dataset's size (epochs of a small dataset are few "
                "updates); applies when max_steps is unset. 0: no floor."})
    valid_users: int = field(default=0, metadata={
        "help": "Every valid_every steps, recall@10 on this many seeded users of the valid split; the best model "
                "is kept. 0: off."})
    valid_every: int | None = field(default=None, metadata={
        "help": "Steps between validation-recall evaluations (default: a tenth of the run)."})
    valid_patience: int | None = field(default=None, metadata={
        "help": "Stop after this many validation evaluations without a gain (0 or None: train to the end)."})
    weight_average_decay: float = field(default=0.0, metadata={
        "help": "Keep an exponential moving average of the weights with this decay per step (e.g. 0.99: about the "
                "last 100 steps); validation scores it and the saved model is it. 0: off, the last weights."})
    max_train_minutes: float = field(default=0.0, metadata={
        "help": "Fit training (validation included) into this many minutes on this machine: the run times its "
                "first steps and takes fewer steps than planned when they would not fit, the learning-rate schedule "
                "re-fitted to them; it stops at the limit whatever. 0: no limit, the planned steps."})
    transition_prior: bool = field(default=False, metadata={
        "help": "After training, count item transitions in the train histories and choose on valid users how much "
                "they re-rank the model's beam (sid4llm.decoding.transition_prior); saved with the model, weight 0 "
                "when they do not help."})
    transition_prior_weights: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.5, 0.8, 1.0], metadata={
        "help": "The re-ranking weights tried (0, the model alone, always is)."})
    transition_prior_users: int = field(default=2000, metadata={
        "help": "Seeded valid users the weight is chosen on (all when fewer)."})


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


def apply_lora(model, model_args: ModelArguments, vocab: IdVocabulary):
    """The PEFT adapter: LoRA on ``lora_target_modules`` with the new ID-token rows trainable
    (``trainable_token_indices``), or (``peft_layers=full``) the kept layers and all token embeddings trained fully
    (``modules_to_save``)."""
    from peft import LoraConfig, get_peft_model

    if model_args.peft_layers == "full":
        if not model_args.pretrained_layers:
            raise ValueError("peft_layers=full trains the kept layers of a cut: set --pretrained_layers")
        to_save, targets, rank = full_layer_adapter_targets(model, model_args.pretrained_layers)
        config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=targets,
                            modules_to_save=to_save, task_type="CAUSAL_LM",  # the embeddings, new rows included
                            ensure_weight_tying=True)  # a tied head follows the trained embeddings
        with peft_without_its_deprecation():
            return get_peft_model(model, config)
    targets = model_args.lora_target_modules
    config = LoraConfig(
        r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
        target_modules="all-linear" if list(targets) == ["all-linear"] else list(targets),
        task_type="CAUSAL_LM", trainable_token_indices=vocab.new_token_ids,
    )
    with peft_without_its_deprecation():
        return get_peft_model(model, config)


class IdLossTrainer(Trainer):
    """``Trainer`` whose next-token loss scores an ID-token target over the ID tokens only.

    Decoding only ever chooses among ID tokens (the trie masks the rest), so the loss uses the same softmax:
    the hidden state of every position whose target is an ID token (codes, disambiguation, end marker) is
    multiplied by the ID-token rows of the LM head only; text targets (answers in words, chat markers) use the
    full head, and only at their own positions; ``label_smoothing_factor`` smooths each over its own softmax.
    The model's forward is called as usual (so DDP/FSDP/DeepSpeed wrapping is untouched) with
    ``logits_to_keep=1``: on SmolLM2's 49k-token vocabulary the full-vocabulary logits of every position would
    be most of the activation memory. Rows are packed (``position_ids`` restart
    at each segment, no attention mask): transformers then masks attention block-diagonally."""

    def __init__(self, *args, id_decoder, id_softmax: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.id_decoder, self.id_softmax = id_decoder, id_softmax

    def _set_signature_columns_if_needed(self) -> None:
        """The model's inputs, and ``tie_groups``: the collator reads them to shuffle tied items, then drops them."""
        super()._set_signature_columns_if_needed()
        if "tie_groups" not in self._signature_columns:
            self._signature_columns.append("tie_groups")

    def get_eval_dataloader(self, eval_dataset=None):
        """Evaluation reads the examples as they are: the collator's training augmentation (item and memory-token
        dropout, tie shuffling) is off."""
        augmenting = self.data_collator
        self.data_collator = augmenting.without_augmentation() if hasattr(augmenting, "without_augmentation") else augmenting
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = augmenting

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Checkpoints of a PEFT model hold the adapter: its trained ID rows live in the adapter (trainable tokens
        or ``modules_to_save``) and the resized base matrix is rebuilt on load. Left to ``"auto"``, peft would also
        write the whole resized embedding matrix into every checkpoint (and warn that it does)."""
        model = self.accelerator.unwrap_model(self.model)
        if not hasattr(model, "peft_config"):
            return super()._save(output_dir, state_dict)
        save = model.save_pretrained
        model.save_pretrained = functools.partial(save, save_embedding_layers=False)
        try:
            super()._save(output_dir, state_dict)
        finally:
            del model.save_pretrained

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs, use_cache=False, output_hidden_states=True, logits_to_keep=1)
        targets = labels[:, 1:]
        scored = targets != IGNORE_INDEX
        hidden, targets = outputs.hidden_states[-1][:, :-1][scored], targets[scored]
        decoder = self.id_decoder
        if decoder.column_token_ids.device != hidden.device:
            self.id_decoder = decoder = decoder.to(hidden.device)
        columns = decoder.token_to_column(targets)
        is_id = (columns >= 0) & self.id_softmax
        unwrapped = self.accelerator.unwrap_model(model)
        id_logits = hidden[is_id] @ id_head_rows(unwrapped, decoder.column_token_ids).T
        smoothing = self.args.label_smoothing_factor
        allowed = None
        if decoder.trie_softmax:  # each ID token over the continuations of the ID written so far
            nodes = decoder.prefix_nodes(inputs["input_ids"])[:, :-1][scored][is_id]
            allowed = decoder.continuations(nodes)
        total = id_cross_entropy(id_logits.float(), columns[is_id], allowed, smoothing)
        if not bool(is_id.all()):
            text_logits = unwrapped.get_output_embeddings()(hidden[~is_id])
            total = total + torch.nn.functional.cross_entropy(text_logits.float(), targets[~is_id], reduction="sum",
                                                              label_smoothing=smoothing)
        if num_items_in_batch is not None:  # normalised over the whole accumulated (and gathered) batch
            loss = total / num_items_in_batch
            if self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes
            self.loss_is_scaled_for_ga = True
        else:
            loss = total / scored.sum().clamp(min=1)
            self.loss_is_scaled_for_ga = False
        return (loss, outputs) if return_outputs else loss


def id_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, allowed: torch.Tensor | None = None,
                     smoothing: float = 0.0) -> torch.Tensor:
    """Summed cross-entropy of ID-token targets; with ``allowed`` ([N, C] bool, each target's own column allowed),
    each softmax (and the label smoothing) runs over the allowed columns only."""
    if allowed is None:
        return torch.nn.functional.cross_entropy(logits, targets, reduction="sum", label_smoothing=smoothing)
    allowed = allowed.scatter(1, targets[:, None], True)
    log_probs = logits.masked_fill(~allowed, float("-inf")).log_softmax(-1)
    loss = -log_probs.gather(1, targets[:, None]).squeeze(1)
    if smoothing:
        uniform = -log_probs.masked_fill(~allowed, 0.0).sum(-1) / allowed.sum(-1)
        loss = (1 - smoothing) * loss + smoothing * uniform
    return loss.sum()


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
    set_seed(training_args.seed)
    requested = training_settings(training_args, data_args)  # before the step floor changes max_steps
    data = PreparedData.load(data_args.data_dir)
    codebook = load_codebook(data_args.codebook)
    check_same_catalogue(codebook, data)
    model, vocab = build_model_and_vocab(model_args, codebook, training_args.seed, task_args.text_tasks,
                                         max_positions=max(1024, (task_args.history_token_budget or 0) + 64,
                                                           task_args.max_seq_length or 0))
    row_length = task_args.row_length(vocab)

    with training_args.main_process_first(desc="building task datasets"):
        segments = build_segments(data, vocab, task_args, "train")
        train_ds = pack_segments(segments, row_length, task_args.example_seed)
        eval_ds = None
        if data_args.eval_examples > 0:
            eval_args = replace(task_args, tasks=["sequential"], sequential_targets="last",
                                max_examples_per_task=data_args.eval_examples)
            eval_ds = pack_segments(build_segments(data, vocab, eval_args, "valid"), row_length)

    plan = plan_training_steps(training_args, len(train_ds), data_args.min_steps, training_args.world_size)
    if training_args.dataloader_pin_memory and not torch.cuda.is_available():
        training_args.dataloader_pin_memory = False  # pinned memory needs an accelerator (torch warns on CPU)
    use_peft = model_args.use_peft and not model_args.from_scratch
    if use_peft:
        model = apply_lora(model, model_args, vocab)
    config = SidRecommenderConfig(
        base_model=model_args.model_name_or_path, model_args=model_args, task_args=task_args, peft=use_peft,
        from_scratch=model_args.from_scratch, training_settings=requested,
        data_dir=str(data_args.data_dir), dataset=data.stats.get("source"),
        dataset_stats={k: data.stats.get(k) for k in ("n_users", "n_items", "n_interactions", "density")},
        trained_items=len(codebook))
    averaged = WeightAverage(data_args.weight_average_decay) if data_args.weight_average_decay else None
    selection = validation_recall(data, vocab, config, data_args, plan["steps"], training_args.seed, averaged)
    budget = (TrainingTimeBudget(data_args.max_train_minutes, plan, selection,
                                 rescale_validation=data_args.valid_every is None)
              if data_args.max_train_minutes > 0 else None)
    trainer = IdLossTrainer(
        model=model, args=training_args, train_dataset=train_ds, eval_dataset=eval_ds,
        data_collator=data_collator or PackedCollator(vocab.tokenizer.pad_token_id, vocab.memory_token_ids, vocab.end_id,
                                                      model_args.item_memory_dropout, training_args.seed,
                                                      task_args.stream_item_dropout, vocab.user_id,
                                                      task_args.stream_tie_shuffle),
        processing_class=vocab.tokenizer,
        # the average first (selection scores it), the budget last (it times the validation that just ran)
        callbacks=[*(callbacks or []), *(c for c in (averaged, selection, budget) if c)],
        id_decoder=IdDecoder.build(vocab, trie_softmax=model_args.trie_softmax),
        id_softmax=model_args.id_softmax,
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
    if data_args.transition_prior:
        recommender.transition_prior, recommender.results["transition_prior"] = transition_prior_for(
            recommender, data, data_args, training_args.seed)
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


# The TrainingArguments that change what a run learns (not where it logs or how often it saves).
TRAINING_SETTINGS = ("max_steps", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
                     "learning_rate", "lr_scheduler_type", "warmup_steps", "warmup_ratio", "weight_decay", "max_grad_norm",
                     "label_smoothing_factor", "seed")


# The SidDataArguments that change what a run learns or which of its states is kept.
DATA_SETTINGS = ("eval_examples", "min_steps", "valid_users", "valid_every", "valid_patience", "weight_average_decay",
                 "max_train_minutes", "transition_prior", "transition_prior_weights", "transition_prior_users")


def training_settings(training_args: TrainingArguments, data_args: SidDataArguments) -> dict:
    return _jsonable({**{k: getattr(training_args, k, None) for k in TRAINING_SETTINGS},
                      **{k: getattr(data_args, k) for k in DATA_SETTINGS}})


def validation_recall(data: PreparedData, vocab: IdVocabulary, config: SidRecommenderConfig,
                      data_args: SidDataArguments, steps: int, seed: int,
                      averaged: WeightAverage | None = None) -> ValidationRecall | None:
    """The model-selection callback of ``data_args`` (None when ``valid_users`` is 0): it decodes with the model
    being trained, which for a layer cut is the cut model itself (no first-layers view)."""
    if data_args.valid_users <= 0:
        return None
    valid = data.sequences["valid"]
    users = sampled_users(len(valid), data_args.valid_users, seed)
    histories, targets = [list(valid[u]["history"]) for u in users], [int(valid[u]["target"]) for u in users]
    as_trained = replace(config, model_args=replace(config.model_args, pretrained_layers=None))
    generation = recommendation_generation_config(vocab)
    return ValidationRecall(lambda model: SidRecommender(model, vocab, generation, as_trained), histories, targets,
                            every=data_args.valid_every or max(1, steps // 10), patience=data_args.valid_patience,
                            averaged=averaged)


def transition_prior_for(recommender: SidRecommender, data: PreparedData, data_args: SidDataArguments,
                         seed: int) -> tuple[ItemTransitionPrior, dict]:
    """The train histories' item transitions, their re-ranking weight chosen on seeded valid users with the kept
    model as the recommender (in eval mode) decodes."""
    train = data.sequences["train"]
    prior = ItemTransitionPrior.count([list(h) + [t] for h, t in zip(train["history"], train["target"])],
                                      len(recommender.codebook))
    valid = data.sequences["valid"]
    users = sampled_users(len(valid), data_args.transition_prior_users, seed)
    recommender.model.eval()
    summary = fit_transition_prior_weight(recommender, prior, [list(valid[u]["history"]) for u in users],
                                          [int(valid[u]["target"]) for u in users], data_args.transition_prior_weights)
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
    same = (saved.get("format_version") == FORMAT_VERSION and saved.get("model_args") == _jsonable(asdict(model_args))
            and saved.get("task_args") == _jsonable(asdict(task_args))
            and saved.get("training_settings") == training_settings(training_args, data_args)
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
