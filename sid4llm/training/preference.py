"""The preference stage: after ``finetune``, a recommender learns from its own ranked lists with trl's
``DPOTrainer`` (``sid4llm align``).

trl does the loss (``loss_type``: sigmoid DPO, IPO, ...), the reference log-probabilities (computed once, before
training, with ``precompute_ref_log_probs``), the metrics (rewards, margins, accuracies) and the loop. sid4llm gives
it the pairs (:mod:`.preference_pairs`) and one change: an answer's log-probability is scored as the supervised loss
scores it — each ID token over the ID tokens only, or over the trie's continuations for a model trained with
``trie_softmax`` — so the stage moves the same distribution decoding reads. Validation on valid users keeps the
best state (the starting model included: a stage that does not help saves the model it started from), the time
budget applies, and the transition prior's weight is chosen again for the new model.
"""

from __future__ import annotations

import logging
import types
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from trl import DPOConfig, DPOTrainer
from trl.trainer.utils import FusedCausalLMOutput

from ..artifacts import SettingsError
from ..data import PreparedData
from ..decoding.columns import IdDecoder, id_head_rows, transformer_of
from ..lm.recommender import SidRecommender
from ..lm.recommender_config import recommendation_generation_config
from ..lm.tasks import IGNORE_INDEX
from ..lm.trainable import load_trainable_recommender
from .config import accelerator_available, recorded_settings
from .preference_pairs import preference_pairs, request_preference_pairs, train_cut_points
from .selection import TrainingTimeBudget, ValidationRecall, fit_transition_prior_weight, plan_training_steps

logger = logging.getLogger(__name__)


@dataclass
class PreferenceArguments:
    """Which recommender the stage starts from and the pairs it learns from."""

    model: str = field(metadata={"help": "A saved recommender (the output_dir of sid4llm finetune), folder or Hub id."})
    data_dir: str | None = field(default=None, metadata={
        "help": "The prepared dataset it was trained on (default: the one its sid4llm_config.json names)."})
    train_users: int | None = field(default=4000, metadata={
        "help": "Seeded train users whose histories give examples (None or 0: every user)."})
    examples_per_user: int = field(default=1, metadata={
        "help": "Examples per user: their last train event, then earlier ones drawn at random."})
    negatives: int = field(default=4, metadata={
        "help": "Rejected items per example: the model's own highest-ranked wrong items, one pair each."})
    candidates: int = field(default=20, metadata={"help": "Width of the beam the rejected items come from."})
    requests: int = field(default=0, metadata={
        "help": "Also this many requests in words (a model trained with the requests task): the model's best item "
                "that meets the request's categories chosen, its best ones that do not rejected. 0: none."})


@dataclass
class SidPreferenceConfig(DPOConfig):
    """trl's ``DPOConfig`` (every flag: ``beta``, ``loss_type``, ``learning_rate``, ...) with sid4llm's model
    selection and time budget, and defaults for a short stage on a CPU."""

    bf16: bool | None = field(default=False, metadata={"help": "bf16 mixed precision (needs a GPU)."})
    gradient_checkpointing: bool | None = field(default=None, metadata={
        "help": "Deprecated name of activation_checkpointing (trl turns it on; off here: sid4llm's models fit without)."})
    precompute_ref_log_probs: bool = field(default=True, metadata={
        "help": "Score the pairs with the starting model once, before training (no reference model kept)."})
    beta: float = field(default=0.1, metadata={"help": "DPO's beta: how far the model may move from the start."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the pairs."})
    max_length: int | None = field(default=None, metadata={
        "help": "Cut prompt + answer to this many tokens (None: the prompt is already cut to the history budget)."})
    report_to: str | list[str] = field(default="none", metadata={"help": "Where trl/Trainer report metrics."})
    valid_users: int = field(default=500, metadata={
        "help": "recall@10 on this many seeded valid users before training and every valid_every steps; the best "
                "state is kept (the starting one when none beats it). 0: off, the last state."})
    valid_every: int | None = field(default=None, metadata={"help": "Steps between validations (default: a tenth of the run)."})
    valid_patience: int | None = field(default=None, metadata={
        "help": "Stop after this many validations without a gain (None: train to the end)."})
    max_train_minutes: float = field(default=0.0, metadata={
        "help": "Fit the stage (validation included) into this many minutes; 0: no limit."})
    transition_prior_weights: list[float] | None = field(default=None, metadata={
        "help": "Re-ranking weights tried for the starting model's transition prior, if it has one (its own weight "
                "always is). None: those it was fitted with."})
    transition_prior_users: int = field(default=2000, metadata={"help": "Valid users the prior's weight is chosen on."})

    def __post_init__(self):
        half = "bf16" if self.bf16 else "fp16" if self.fp16 else None
        if half and not accelerator_available():
            raise SettingsError(f"--{half} true needs a GPU (or another accelerator), and this machine has none: pass "
                                f"--{half} false to train in fp32 on the CPU")
        super().__post_init__()
        if self.ld_alpha is not None:
            raise SettingsError("ld_alpha is not supported by the preference stage: an item's ID is a few tokens")


def id_label_log_probs(model, decoder: IdDecoder, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                       labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-token log-probabilities of ID-token labels ([B, T-1], 0 where the label is ignored) as the supervised
    loss scores them (:func:`~sid4llm.training.trainer.id_cross_entropy`), with the entropy, mean logit and
    top-1 hit of each scored position (what trl's metrics read)."""
    hidden = transformer_of(model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    scored = targets != IGNORE_INDEX
    columns = decoder.token_to_column(targets[scored])
    if bool((columns < 0).any()):
        raise ValueError("an answer holds a token that is not an ID token: the preference stage scores item IDs only")
    logits = (hidden[:, :-1][scored] @ id_head_rows(model, decoder.column_token_ids).T).float()
    if decoder.trie_softmax:
        allowed = decoder.continuations(decoder.prefix_nodes(input_ids)[:, :-1][scored])
        allowed = allowed.scatter(1, columns[:, None], True)
        logits = logits.masked_fill(~allowed, float("-inf"))
    log_probs = logits.log_softmax(-1)
    token = log_probs.gather(1, columns[:, None]).squeeze(1)
    probs = log_probs.exp()
    entropy = -(probs * log_probs.nan_to_num(neginf=0.0)).sum(-1)
    finite = torch.isfinite(logits)
    mean_logit = logits.nan_to_num(neginf=0.0).sum(-1) / finite.sum(-1)
    top1 = logits.argmax(-1) == columns

    def spread(values: torch.Tensor) -> torch.Tensor:
        return values.new_zeros(scored.shape).masked_scatter(scored, values)

    return spread(token), spread(entropy.detach()), spread(mean_logit.detach()), spread(top1)


def score_ids_in_fused_head(model, decoder_of) -> None:
    """Make ``model(..., labels=..., fused_lm_head=True)`` — the call trl's DPO loss makes — return
    :func:`id_label_log_probs` instead of full-vocabulary log-probabilities; every other call is the model's own
    forward. ``decoder_of(device)`` gives the trie on the device of the hidden states."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    previous = target.forward

    def forward(self, *args, fused_lm_head: bool = False, labels=None, **kwargs):
        if not fused_lm_head:
            return previous(*args, labels=labels, **kwargs)
        input_ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        log_probs, entropy, mean_logits, is_top1 = id_label_log_probs(
            self, decoder_of(input_ids.device), input_ids, kwargs.get("attention_mask"), labels)
        mask = labels[:, 1:] != IGNORE_INDEX
        return FusedCausalLMOutput(loss=-log_probs.sum() / mask.sum().clamp(min=1), log_probs=log_probs,
                                   entropy=entropy, mean_logits=mean_logits, is_top1=is_top1, label_mask=mask)

    target.forward = types.MethodType(forward, target)


class IdPreferenceTrainer(DPOTrainer):
    """``DPOTrainer`` on pre-tokenized item pairs, each answer scored over the ID tokens as in supervised training."""

    def __init__(self, *args, id_decoder: IdDecoder, **kwargs):
        self.id_decoder = id_decoder  # read by compute_ref_log_probs, which runs inside DPOTrainer.__init__
        super().__init__(*args, **kwargs)
        score_ids_in_fused_head(self.accelerator.unwrap_model(self.model), self.decoder_on)
        if self.ref_model is not None:
            score_ids_in_fused_head(self.accelerator.unwrap_model(self.ref_model), self.decoder_on)

    def decoder_on(self, device) -> IdDecoder:
        if self.id_decoder.column_token_ids.device != device:
            self.id_decoder = self.id_decoder.to(device)
        return self.id_decoder

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """The pairs are token ids already (an ID is not text to tokenize again): used as they are."""
        if {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(dataset.column_names):
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def compute_ref_log_probs(self, model, inputs):
        """The reference's summed log-probability of each answer, scored as the policy's is."""
        labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, IGNORE_INDEX)
        unwrapped = self.accelerator.unwrap_model(model)
        with torch.no_grad():
            per_token = id_label_log_probs(unwrapped, self.decoder_on(inputs["input_ids"].device), inputs["input_ids"],
                                           inputs["attention_mask"], labels)[0]
        return per_token.sum(1).chunk(2, dim=0)


def _with_request_pairs(source: SidRecommender, data: PreparedData, pref_args: PreferenceArguments, pairs,
                        seed: int):
    """``pairs`` with the request pairs added (shuffled in by the trainer's sampler) and what they held."""
    from datasets import concatenate_datasets

    from ..lm.tasks import TaskArguments, request_writer

    writer = request_writer(data, TaskArguments(example_seed=seed))
    extra, stats = request_preference_pairs(source, writer, pref_args.requests, pref_args.negatives,
                                            pref_args.candidates, seed)
    logger.warning("%d request pairs from %d requests (top 10 meeting the request: %.1f%%)", stats["pairs"],
                   stats["requests"], 100 * stats["top10_meeting_the_request"])
    return concatenate_datasets([pairs, extra.cast(pairs.features)]), stats


class StartingPointValidation(ValidationRecall):
    """Validation that also scores the starting model, so the kept state is the start when training never beats
    it."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._evaluate(state, model)


def prior_weight_candidates(source: SidRecommender, training_args: SidPreferenceConfig) -> list[float]:
    """The transition-prior weights tried after the stage: the given ones, else those the starting model's were
    chosen from, and always the weight it has (so the kept start scores as it did)."""
    fitted = source.config.training.get("training", {}).get("transition_prior_weights")
    weights = training_args.transition_prior_weights or fitted or [0.1, 0.2, 0.3, 0.5, 0.8, 1.0]
    own = source.transition_prior_weight()
    return sorted({*map(float, weights), *([float(own)] if own else [])})


def run_align(pref_args: PreferenceArguments, training_args: SidPreferenceConfig) -> SidRecommender:
    """Load the recommender, build pairs from its own lists on train users, train with trl's DPO under
    validation and the time budget, choose the prior's weight again, and save the same artefact as finetune."""
    from transformers import set_seed

    from ..allocator import keep_freed_memory
    from .finetuning import _jsonable, remove_checkpoints, valid_users

    keep_freed_memory()
    set_seed(training_args.seed)
    source = load_trainable_recommender(pref_args.model)
    if pref_args.requests and "requests" not in source.config.prompt.tasks:
        raise SettingsError(f"--requests {pref_args.requests}: {pref_args.model} was not trained with the requests "
                            "task, so it cannot read requests in words (train it with --tasks sequential requests)")
    data = PreparedData.load(pref_args.data_dir or source.config.data_dir)
    if len(data.items) != source.config.trained_items and source.config.trained_items:
        raise ValueError(f"{data.path}: {len(data.items)} items, but {pref_args.model} was trained on "
                         f"{source.config.trained_items}: pass the dataset it was trained on (--data_dir)")
    histories = data.train_histories()
    cuts = train_cut_points(histories, pref_args.train_users or None, pref_args.examples_per_user, training_args.seed)
    source.model.eval()
    pairs, pair_stats = preference_pairs(source, histories, cuts, pref_args.negatives, pref_args.candidates,
                                         show_progress=True)
    logger.warning("%d preference pairs from %d examples (answer in the model's %d-item list: %.1f%%)",
                   pair_stats["pairs"], pair_stats["examples"], pref_args.candidates, 100 * pair_stats["answer_in_list"])
    if pref_args.requests:
        pairs, pair_stats["requests"] = _with_request_pairs(source, data, pref_args, pairs, training_args.seed)
    model, vocab, as_trained = source.model, source.vocab, replace(source.config, pretrained_layers=None)
    model.train()
    plan = plan_training_steps(training_args, len(pairs), 0, training_args.world_size)
    selection = None
    if training_args.valid_users > 0:
        vh, vt = valid_users(data, training_args.valid_users, training_args.seed)
        generation = recommendation_generation_config(vocab)
        selection = StartingPointValidation(lambda m: SidRecommender(m, vocab, generation, as_trained), vh, vt,
                                            every=training_args.valid_every or max(1, plan["steps"] // 10),
                                            patience=training_args.valid_patience)
    budget = (TrainingTimeBudget(training_args.max_train_minutes, plan, selection,
                                 rescale_validation=training_args.valid_every is None)
              if training_args.max_train_minutes > 0 else None)
    trainer = IdPreferenceTrainer(model=model, args=training_args, train_dataset=pairs,
                                  processing_class=vocab.tokenizer,
                                  callbacks=[c for c in (selection, budget) if c],
                                  id_decoder=IdDecoder.build(vocab, trie_softmax=source.config.trie_softmax))
    result = trainer.train()
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "peft_config") and "ref" in model.peft_config:
        model.delete_adapter("ref")  # trl's frozen copy of the starting adapter: not part of the artefact
    summary = {"pairs": pair_stats, "train": {k: v for k, v in result.metrics.items()},
               "log": [e for e in trainer.state.log_history if "loss" in e][-20:], "training_plan": plan,
               **({"validation": selection.summary()} if selection else {})}
    config = replace(source.config, training={**source.config.training,
                                              "preference": _jsonable(recorded_settings(training_args))})
    results = {**source.results, "preference": _jsonable(summary)}
    results.pop("evaluation", None)  # measured on the starting model
    recommender = SidRecommender(model, vocab, source.generation_config, config, source.item_categories, results,
                                 source.transition_prior)
    if recommender.transition_prior is not None:
        vh, vt = valid_users(data, training_args.transition_prior_users, training_args.seed)
        model.eval()
        recommender.results["transition_prior"] = fit_transition_prior_weight(
            SidRecommender(model, vocab, source.generation_config, as_trained, transition_prior=source.transition_prior),
            recommender.transition_prior, vh, vt, prior_weight_candidates(source, training_args),
            cooccurrence_weights=[recommender.transition_prior.config.cooccurrence_weight],
            candidates=source.transition_prior.config.candidates)
        recommender.config.decoding.transition_prior_weight = recommender.transition_prior.weight
    out = Path(training_args.output_dir)
    if trainer.is_world_process_zero():
        recommender.save_pretrained(out)
        remove_checkpoints(out)
        if training_args.push_to_hub:
            logger.info("pushed: %s", recommender.push_to_hub(training_args.hub_model_id or out.name,
                                                              private=training_args.hub_private_repo,
                                                              token=training_args.hub_token))
    if config.layer_cut_adapter:  # used on the whole base (ID path: first layers; words: all of them, adapter off)
        trainer.accelerator.wait_for_everyone()
        return SidRecommender.from_pretrained(out)
    return recommender


