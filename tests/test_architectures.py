"""Any Hugging Face causal LM: ten decoder families, each as a tiny random model (tied and untied heads), through
the whole LM path — extend the tokenizer, fine-tune with LoRA and with the first-layer adapter, save, load with peft
and with the pipeline, ``recommend`` equal to brute-force scoring of every item, chat, and one served request."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from sid4llm import RecommendationPipeline, SidRecommender
from sid4llm.decoding.columns import id_head_rows, transformer_of
from sid4llm.lm.models import ModelArguments
from sid4llm.lm.tasks import TaskArguments
from sid4llm.training import SidDataArguments, SidTrainingConfig, run_finetune

SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 512}
# model_type → (config values beside SMALL, tied head): the families practitioners bring, tied and untied.
ARCHITECTURES = {
    "llama": ({}, False),
    "qwen2": ({}, True),
    "qwen3": ({}, False),
    "gemma2": ({}, True),
    "gemma3_text": ({}, True),
    "phi3": ({}, False),
    "mistral": ({}, False),
    "olmo2": ({}, False),
    "gpt2": ({"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 512}, True),
    "gpt_neox": ({"rotary_pct": 1.0}, False),
}


@pytest.fixture(scope="module")
def base_dirs(tmp_path_factory, tiny_lm_dir) -> dict[str, str]:
    """One tiny random model per family, saved with the tiny byte-level tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id}
    dirs = {}
    for model_type, (extra, tied) in ARCHITECTURES.items():
        values = extra if model_type == "gpt2" else {**SMALL, **extra}
        config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), tie_word_embeddings=tied, **values, **ids)
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp(model_type)
        AutoModelForCausalLM.from_config(config).save_pretrained(path)
        tokenizer.save_pretrained(path)
        dirs[model_type] = str(path)
    return dirs


def finetune(base: str, prepared: dict, out, **model_settings) -> str:
    train(base, prepared, out, **model_settings)
    return str(out)


def train(base: str, prepared: dict, out, **model_settings) -> SidRecommender:
    return run_finetune(ModelArguments(model_name_or_path=base, lora_r=4, lora_alpha=8, **model_settings),
                 SidDataArguments(data_dir=prepared["data_dir"], codebook=prepared["codebook_dir"]),
                 TaskArguments(tasks=["sequential", "requests"], request_examples=40, history_token_budget=40,
                               max_seq_length=128),
                 SidTrainingConfig(output_dir=str(out), max_steps=2, per_device_train_batch_size=4, learning_rate=5e-3,
                                   save_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
                                   eval_examples=0))


def brute_force_top(rec: SidRecommender, history: list[int], k: int) -> list[int]:
    """Every unseen item scored by teacher forcing its whole ID, over the ID-token softmax decoding uses."""
    decoder, model = rec.decoder, rec.id_model
    head = id_head_rows(model, decoder.column_token_ids)
    prompt = rec.history_prompt_ids(history)
    scores = []
    with torch.no_grad():
        for item in (i for i in range(len(rec.codebook)) if i not in history):
            tokens = rec.vocab.stream_item_token_ids(item)
            hidden = transformer_of(model)(torch.tensor([prompt + tokens[:-1]])).last_hidden_state[0, len(prompt) - 1:]
            logp = decoder.log_probs(hidden @ head.T, torch.ones(len(tokens), decoder.num_columns, dtype=torch.bool))
            scores.append((float(logp[torch.arange(len(tokens)), decoder.token_to_column(torch.tensor(tokens))].sum()),
                           item))
    return [item for _, item in sorted(scores, reverse=True)[:k]]


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # peft's own, called directly
@pytest.mark.parametrize("model_type", list(ARCHITECTURES))
def test_every_decoder_family_goes_through_the_whole_lm_path(model_type, base_dirs, chat_prepared, tmp_path):
    from fastapi.testclient import TestClient
    from peft import AutoPeftModelForCausalLM

    from sid4llm.serving import ServeArguments, create_app

    out = finetune(base_dirs[model_type], chat_prepared, tmp_path / "lora")
    adapter = AutoPeftModelForCausalLM.from_pretrained(out)  # peft alone: the base resized to the shipped tokenizer
    assert adapter.get_input_embeddings().weight.shape[0] == len(AutoTokenizer.from_pretrained(out))

    pipe = RecommendationPipeline.from_pretrained(out)
    rec = pipe.recommender
    history = [0, 3, 5]
    fast = [r["index"] for r in rec.recommend([history], k=3, num_beams=len(rec.codebook) + 4)[0]]
    assert fast == brute_force_top(rec, history, 3)

    reply = pipe.chat([{"role": "user", "content": "I loved Toy Story. Something funny?"}], k=3)
    assert len(reply["items"]) == 3 and reply["content"]

    with TestClient(create_app(pipe, ServeArguments(model=out, max_wait_ms=5))) as client:
        served = client.post("/v1/recommend", json={"history": ["Toy Story (1995)", "Heat (1995)"], "k": 3})
    assert served.status_code == 200 and len(served.json()["items"]) == 3


@pytest.mark.parametrize("model_type", list(ARCHITECTURES))
def test_every_decoder_family_takes_the_first_layer_adapter(model_type, base_dirs, chat_prepared, tmp_path):
    """The quickstart's CPU recipe: the first decoder layer (wherever the family keeps its blocks and final norm)
    trained fully inside an adapter; the ID path reads that layer, the whole base writes the words."""
    out = finetune(base_dirs[model_type], chat_prepared, tmp_path / "cut", pretrained_layers=1, peft_layers="full")
    rec = SidRecommender.from_pretrained(out)
    assert rec.two_paths and rec.id_model.config.num_hidden_layers == 1
    history = [1, 2]
    fast = [r["index"] for r in rec.recommend([history], k=3, num_beams=len(rec.codebook) + 4)[0]]
    assert fast == brute_force_top(rec, history, 3)


@pytest.mark.parametrize("model_type", [t for t, (_, tied) in ARCHITECTURES.items() if not tied])
def test_an_untied_head_learns_its_id_rows_and_keeps_them(model_type, base_dirs, chat_prepared, tmp_path):
    """An untied head scores ID tokens with rows of its own: they start alike (the mean of the word rows) and must
    train apart, and load back as trained."""
    trained = train(base_dirs[model_type], chat_prepared, tmp_path / "lora")
    columns = trained.decoder.column_token_ids
    rows = id_head_rows(trained.id_model, columns).detach()
    assert float((rows - rows.mean(0)).abs().max()) > 0  # no longer all alike
    loaded = SidRecommender.from_pretrained(tmp_path / "lora")
    torch.testing.assert_close(id_head_rows(loaded.id_model, columns), rows)
