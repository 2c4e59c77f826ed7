"""The HF ``Trainer`` sid4llm trains with: the next-token loss of an ID target scored over the ID tokens (or over
the trie's continuations), the rest of the vocabulary only for words.
"""

from __future__ import annotations

import functools
from contextlib import nullcontext

import torch
from transformers import Trainer

from ..decoding.columns import id_head_rows
from ..lm.tasks import IGNORE_INDEX
from .scored_positions import last_layer_at_scored_positions


class IdLossTrainer(Trainer):
    """``Trainer`` whose next-token loss scores an ID-token target over the ID tokens only.

    Decoding only ever chooses among ID tokens (the trie masks the rest), so the loss uses the same softmax:
    the hidden state of every position whose target is an ID token (codes, disambiguation, end marker) is
    multiplied by the ID-token rows of the LM head only; text targets (answers in words, chat markers) use the
    full head, and only at their own positions; ``label_smoothing_factor`` smooths each over its own softmax.
    The model's forward is called as usual (so DDP/FSDP/DeepSpeed wrapping is untouched) with
    ``logits_to_keep=1``: on SmolLM2's 49k-token vocabulary the full-vocabulary logits of every position would
    be most of the activation memory. Rows are packed (``position_ids`` restart
    at each segment, no attention mask): transformers then masks attention block-diagonally. With
    ``last_layer_at_targets`` the last decoder layer is computed only at the positions the loss reads
    (:mod:`sid4llm.training.scored_positions`; the same loss, less arithmetic)."""

    def __init__(self, *args, id_decoder, id_softmax: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.id_decoder, self.id_softmax = id_decoder, id_softmax

    def get_decay_parameter_names(self, model) -> list[str]:
        """Weight decay as ``Trainer`` sets it, but never on a PEFT model's token embeddings: a row no example reads
        then stays exactly the base model's, so the saved adapter holds only the rows training changed
        (:mod:`sid4llm.lm.compact_adapter`)."""
        names = super().get_decay_parameter_names(model)
        if not hasattr(model, "peft_config"):
            return names
        from transformers.trainer_pt_utils import get_parameter_names

        return sorted(set(names) & set(get_parameter_names(model, [torch.nn.Embedding])))

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
        targets = labels[:, 1:]
        scored = targets != IGNORE_INDEX
        unwrapped = self.accelerator.unwrap_model(model)
        selective = (getattr(self.args, "last_layer_at_targets", False) and "position_ids" in inputs
                     and "attention_mask" not in inputs)
        # The positions whose hidden state the loss reads, and the last one (the logits the forward returns).
        read = torch.nn.functional.pad(scored, (0, 1), value=True)
        with last_layer_at_scored_positions(unwrapped, read) if selective else nullcontext():
            outputs = model(**inputs, use_cache=False, output_hidden_states=True, logits_to_keep=1)
        hidden, targets = outputs.hidden_states[-1][:, :-1][scored], targets[scored]
        decoder = self.id_decoder
        if decoder.column_token_ids.device != hidden.device:
            self.id_decoder = decoder = decoder.to(hidden.device)
        columns = decoder.token_to_column(targets)
        is_id = (columns >= 0) & self.id_softmax
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
