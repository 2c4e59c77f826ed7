"""The first-layer adapter is saved small — the embedding rows training changed, never the whole matrix (nor twice
for a tied head) — and loads with peft alone and with the pipeline to the very model that was trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from sid4llm.lm.compact_adapter import cache_token_rows, save_compact_adapter
from sid4llm.lm.models import ModelArguments, get_peft_config, peft_without_its_deprecation


@pytest.mark.parametrize("tied", [True, False])
def test_the_saved_rows_give_back_the_trained_model_with_the_adapter_on_and_off(tiny_lm_dir, tmp_path, tied):
    from peft import PeftModel, get_peft_model

    source = tiny_lm_dir
    if not tied:  # a base saved with its own head
        source = tmp_path / "untied"
        AutoModelForCausalLM.from_pretrained(tiny_lm_dir, tie_word_embeddings=False).save_pretrained(source)
    base = AutoModelForCausalLM.from_pretrained(source)
    base.resize_token_embeddings(len(AutoTokenizer.from_pretrained(tiny_lm_dir)) + 5, mean_resizing=False)
    new_rows = list(range(base.config.vocab_size - 5, base.config.vocab_size))
    settings = ModelArguments(model_name_or_path=tiny_lm_dir, pretrained_layers=1, peft_layers="full")
    with peft_without_its_deprecation():
        model = get_peft_model(base, get_peft_config(settings, base, new_rows))
    with torch.no_grad():  # "training": some word rows, every new row and the layer change
        model.get_input_embeddings().weight[[7, 11, *new_rows]] += 0.5
        for name, p in model.named_parameters():
            if p.requires_grad and "embed" not in name:
                p.add_(0.01)
    inputs, words = torch.tensor([[3, 7, 11, 40, *new_rows[:2]]]), torch.tensor([[3, 7, 11, 40]])
    model.eval()
    with torch.no_grad():
        want_on = model(inputs).logits
        with model.disable_adapter():  # the words path: the base, which never reads nor writes the new tokens
            want_off = model(words).logits[..., :new_rows[0]]

    saved = save_compact_adapter(model, tmp_path / "adapter", always_rows=new_rows)
    assert saved == {"rows": 2 + 5, "of": base.config.vocab_size}
    with safe_open(tmp_path / "adapter" / "adapter_model.safetensors", "pt") as f:
        assert all(f.get_slice(k).get_shape()[0] < base.config.vocab_size for k in f.keys())  # no whole matrix

    fresh = AutoModelForCausalLM.from_pretrained(source)
    fresh.resize_token_embeddings(base.config.vocab_size, mean_resizing=False)
    with torch.no_grad():
        fresh.get_input_embeddings().weight[new_rows] = 0.0  # whatever a fresh resize holds, the adapter's rows win
    with peft_without_its_deprecation():
        loaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    assert cache_token_rows(loaded) >= 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs).logits, want_on)
        torch.testing.assert_close(loaded(inputs).logits, want_on)  # the cached matrix, read again
        with loaded.disable_adapter():
            torch.testing.assert_close(loaded(words).logits[..., :new_rows[0]], want_off)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # peft's own, called directly
def test_the_quickstart_kind_of_adapter_holds_only_changed_rows_and_loads_with_peft(chat_dir):
    from peft import AutoPeftModelForCausalLM

    from sid4llm import SidRecommender

    config = json.loads((Path(chat_dir) / "adapter_config.json").read_text())
    (rows,) = config["trainable_token_indices"].values()
    rec = SidRecommender.from_pretrained(chat_dir)
    vocabulary = len(rec.tokenizer)
    assert set(rec.vocab.new_token_ids) <= set(rows) and len(rows) < vocabulary
    assert not any("embed" in m for m in config["modules_to_save"])
    adapter = AutoPeftModelForCausalLM.from_pretrained(chat_dir)
    ids = torch.tensor(rec.vocab.new_token_ids[:4])
    torch.testing.assert_close(adapter.get_input_embeddings()(ids), rec.model.get_input_embeddings()(ids))
