"""A recommender's paths through transformers' ``generate``: free text with trie-constrained ID spans, and one ID per
beam (the reference the fast top-K search is checked against, and the unconstrained invalid-ID rate)."""

from __future__ import annotations

import torch


@torch.no_grad()
def generate_text(recommender, messages: list[dict], max_new_tokens: int = 64, num_beams: int = 1,
                  logits_processors: list | None = None) -> dict:
    """Free text with trie-constrained ID spans (mixed mode): the model may write prose, and every ID it
    opens is forced to be a real item. Returns ``{"text", "raw", "items"}`` with IDs shown as titles."""
    from transformers import LogitsProcessorList

    from ..decoding.logits_processor import TrieLogitsProcessor

    if getattr(recommender.tokenizer, "chat_template", None):
        prompt = recommender.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    else:
        prompt = "\n".join(m["content"] for m in messages) + "\n"
    ids = recommender.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(recommender.device)
    config = recommender.decoding_config(num_beams)
    config.num_return_sequences = 1
    config.max_new_tokens = max_new_tokens
    config.eos_token_id = recommender.tokenizer.eos_token_id
    processor = TrieLogitsProcessor(recommender.decoder, ids.shape[1], "mixed")
    out = recommender.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config,
                                     logits_processor=LogitsProcessorList([*(logits_processors or []), processor]))
    new_tokens = out[0, ids.shape[1]:].tolist()
    text, items = recommender.vocab.render(new_tokens)
    return {"text": text.strip(), "raw": recommender.tokenizer.decode(new_tokens), "items": items}

@torch.no_grad()
def generate_ids(recommender, histories, num_beams: int | None = None, constrained: bool = True,
                 style: str = "ids") -> list[list[int | None]]:
    """Beam search through ``model.generate`` (with :class:`TrieLogitsProcessor` when ``constrained``);
    returns, per history, the codebook index of each returned beam (None for an invalid ID).
    ``num_beams`` defaults to the saved generation config's."""
    from transformers import LogitsProcessorList

    from ..decoding.columns import left_pad
    from ..decoding.logits_processor import TrieLogitsProcessor

    prompts = [recommender.history_prompt_ids([recommender._index(i) for i in h], style) for h in histories]
    ids, mask = left_pad(prompts, recommender.tokenizer.pad_token_id, recommender.device)
    width = ids.shape[1]
    config = recommender.decoding_config(num_beams)
    num_beams = config.num_beams
    config.eos_token_id = [recommender.vocab.end_id]  # the answer is one ID, starting right after the prompt
    processors = LogitsProcessorList([TrieLogitsProcessor(recommender.decoder, width, "id")]) if constrained else None
    out = recommender.id_model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                                        logits_processor=processors)
    out = out.reshape(len(prompts), num_beams, -1)
    return [[recommender.vocab.parse_stream_item(row[width:].tolist()) for row in rows] for rows in out]
