"""Semantic IDs as tokens of a Hugging Face tokenizer: added once, round-tripped, new rows initialised (sid4llm.vocabulary, sid4llm.lm.embedding_init)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from sid4llm.lm.embedding_init import init_id_embeddings
from sid4llm.vocabulary import BEGIN_TOKEN, END_TOKEN, IdVocabulary

REPO = Path(__file__).resolve().parents[1]


def test_id_tokens_are_added_and_round_trip(vocab):
    codebook = vocab.codebook
    assert len(vocab.new_token_ids) == 3 + codebook.vocab_size + codebook.num_disambiguation_tokens
    for item in range(len(codebook)):
        text = vocab.format_item(item)
        assert text.startswith(BEGIN_TOKEN) and text.endswith(END_TOKEN)
        ids = vocab.tokenizer(f"next: {text} thanks", add_special_tokens=False)["input_ids"]
        assert vocab.parse_token_ids(ids) == [item]
        assert text in vocab.tokenizer.decode(ids, skip_special_tokens=True)
    assert vocab.parse(vocab.format_item(0) + vocab.format_item(5)) == [0, 5]


def test_extending_twice_reuses_the_tokens(vocab):
    size = len(vocab.tokenizer)
    again = IdVocabulary.extend(vocab.tokenizer, vocab.codebook)
    assert len(vocab.tokenizer) == size and again.id_token_ids == vocab.id_token_ids


@pytest.mark.parametrize("strategy", ["mean", "titles", "random"])
def test_new_embedding_rows_are_initialised_and_old_rows_kept(tiny_lm_dir, vocab, strategy):

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    old = model.get_input_embeddings().weight.detach().clone()
    init_id_embeddings(model, vocab, strategy)
    new = model.get_input_embeddings().weight.detach()
    assert new.shape[0] == len(vocab.tokenizer)
    torch.testing.assert_close(new[: old.shape[0]], old)
    rows = new[vocab.code_token_ids]
    assert torch.isfinite(rows).all() and rows.std(0).mean() > 0  # distinct, not one copied vector
    if strategy != "random":  # mean/titles stay on the scale of the pretrained rows
        assert rows.norm(dim=1).mean() < 3 * old.norm(dim=1).mean()


def test_each_item_memory_token_starts_at_its_own_items_title(tiny_lm_dir, tiny_prepared):
    """With ``titles``, an item's memory token begins as the mean of its title's word embeddings: the pretrained LM's
    reading of that item, not a vector shared by every item."""
    from transformers import AutoTokenizer

    from sid4llm.ids import SemanticIdCodebook

    codebook = SemanticIdCodebook.from_pretrained(tiny_prepared["codebook_dir"])
    memory_vocab = IdVocabulary.extend(AutoTokenizer.from_pretrained(tiny_lm_dir), codebook, item_memory=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    words = model.get_input_embeddings().weight.detach().clone()
    init_id_embeddings(model, memory_vocab, "titles")
    rows = model.get_input_embeddings().weight.detach()
    for item in (0, len(codebook) - 1):
        title_ids = memory_vocab.tokenizer(codebook.titles[item], add_special_tokens=False)["input_ids"]
        torch.testing.assert_close(rows[memory_vocab.memory_token_ids[item]], words[title_ids].mean(0))
    assert not torch.equal(rows[memory_vocab.memory_token_ids[0]], rows[memory_vocab.memory_token_ids[-1]])
