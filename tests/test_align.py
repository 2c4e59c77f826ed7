"""The preference stage (``sid4llm align``): pairs from the model's own lists, trl's DPO with each answer scored as
the supervised loss scores it, and the same artefact as finetune at the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sid4llm.lm.models import ModelArguments
from sid4llm.lm.recommender import SidRecommender
from sid4llm.lm.tasks import IGNORE_INDEX, TaskArguments
from sid4llm.pipeline import RecommendationPipeline
from sid4llm.training import SidDataArguments, SidTrainingConfig, run_finetune
from sid4llm.training.preference import (
    IdPreferenceTrainer,
    PreferenceArguments,
    SidPreferenceConfig,
    id_label_log_probs,
    run_align,
)
from sid4llm.training.preference_pairs import preference_pairs, train_cut_points
from sid4llm.training.trainer import id_cross_entropy


@pytest.fixture(scope="module")
def scratch_dir(tmp_path_factory, tiny_lm_dir, tiny_prepared) -> str:
    """A from-scratch recommender (trie softmax, transition prior) trained a few steps on the tiny dataset."""
    out = tmp_path_factory.mktemp("scratch") / "model"
    run_finetune(ModelArguments(model_name_or_path=tiny_lm_dir, from_scratch=True, scratch_hidden_size=32, scratch_layers=1),
                 SidDataArguments(data_dir=tiny_prepared["data_dir"], codebook=tiny_prepared["codebook_dir"]),
                 TaskArguments(tasks=["sequential"], history_token_budget=40, max_seq_length=128),
                 SidTrainingConfig(output_dir=str(out), max_steps=20, per_device_train_batch_size=8, learning_rate=5e-3,
                                   report_to="none", use_cpu=True, seed=0, disable_tqdm=True, eval_examples=0,
                                   trie_softmax=True, transition_prior=True, transition_prior_users=10))
    return str(out)


def _config(out, **values) -> SidPreferenceConfig:
    settings = {"output_dir": str(out), "per_device_train_batch_size": 4, "learning_rate": 5e-3, "logging_steps": 1,
                "save_strategy": "no", "use_cpu": True, "seed": 0, "disable_tqdm": True, "valid_users": 8,
                "transition_prior_users": 8, **values}
    return SidPreferenceConfig(**settings)


def test_pairs_are_the_next_item_against_the_models_own_top_wrong_items(scratch_dir, tiny_prepared):
    from sid4llm.data import PreparedData

    rec = SidRecommender.from_pretrained(scratch_dir)
    histories = PreparedData.load(tiny_prepared["data_dir"]).train_histories()
    cuts = train_cut_points(histories, users=10, examples_per_user=2, seed=0)
    assert len(cuts) == 20 and all(1 <= p < len(histories[u]) for u, p in cuts)
    pairs, stats = preference_pairs(rec, histories, cuts, negatives=2, candidates=5)
    assert stats["examples"] == 20 and len(pairs) == stats["pairs"] > 0
    valid_ids = {tuple(rec.vocab.stream_item_token_ids(i)) for i in range(len(rec.codebook))}
    for row in pairs:
        user, position = cuts[row["example"]]
        prefix, answer = histories[user][:position], histories[user][position]
        assert row["prompt_ids"] == rec.history_prompt_ids(prefix)  # the prompt as the model reads it
        assert row["chosen_ids"] == rec.vocab.stream_item_token_ids(answer)
        assert tuple(row["rejected_ids"]) in valid_ids  # every answer is a real item's ID (valid under the trie)
        rejected = rec.vocab.parse_stream_item(row["rejected_ids"])
        assert rejected not in histories[user][position:]  # neither the answer nor anything the user met later
        top = [r["index"] for r in rec.recommend([prefix], k=5, num_beams=5, prior_weight=0.0)[0]]
        assert rejected in top  # from the model's own list
    with pytest.raises(ValueError, match="negatives < candidates"):
        preference_pairs(rec, histories, cuts, negatives=5, candidates=5)


def test_an_answer_is_scored_as_the_supervised_loss_scores_it(scratch_dir):
    rec = SidRecommender.from_pretrained(scratch_dir)
    decoder = rec.decoder
    assert decoder.trie_softmax
    prompt, answer = rec.history_prompt_ids([0, 1, 2]), rec.vocab.stream_item_token_ids(3)
    ids = torch.tensor([prompt + answer])
    labels = torch.tensor([[IGNORE_INDEX] * len(prompt) + answer])
    with torch.no_grad():
        per_token = id_label_log_probs(rec.model, decoder, ids, torch.ones_like(ids), labels)[0]
        hidden = rec.model.model(input_ids=ids).last_hidden_state[0, len(prompt) - 1 : -1]
        logits = hidden @ rec.model.get_output_embeddings().weight[decoder.column_token_ids].T
        nodes = decoder.prefix_nodes(ids)[0, len(prompt) - 1 : -1]
        columns = decoder.token_to_column(torch.tensor(answer))
        supervised = id_cross_entropy(logits, columns, decoder.continuations(nodes))
    assert per_token[0, : len(prompt) - 1].abs().sum() == 0  # the prompt is not scored
    torch.testing.assert_close(-per_token.sum(), supervised)
    # and it is an item's log-probability: over every item, the trie-softmax scores sum to one
    item_logps = []
    for item in range(len(rec.codebook)):
        tokens = rec.vocab.stream_item_token_ids(item)
        row = torch.tensor([prompt + tokens])
        lab = torch.tensor([[IGNORE_INDEX] * len(prompt) + tokens])
        with torch.no_grad():
            item_logps.append(id_label_log_probs(rec.model, decoder, row, torch.ones_like(row), lab)[0].sum())
    assert torch.stack(item_logps).exp().sum().item() == pytest.approx(1.0, abs=1e-4)


def test_dpo_moves_the_model_towards_the_chosen_item_on_a_toy_problem(scratch_dir, tmp_path):
    """One prompt, item 3 always preferred to item 5: the loss falls and item 3 overtakes item 5."""
    from datasets import Dataset

    from sid4llm.lm.trainable import load_trainable_recommender

    rec = load_trainable_recommender(scratch_dir)
    prompt = rec.history_prompt_ids([0, 1, 2])
    chosen, rejected = rec.vocab.stream_item_token_ids(3), rec.vocab.stream_item_token_ids(5)

    def logp(item_tokens) -> float:
        ids = torch.tensor([prompt + item_tokens])
        labels = torch.tensor([[IGNORE_INDEX] * len(prompt) + item_tokens])
        with torch.no_grad():
            return id_label_log_probs(rec.model, rec.decoder, ids, torch.ones_like(ids), labels)[0].sum().item()

    margin_before = logp(chosen) - logp(rejected)
    pairs = Dataset.from_dict({"prompt_ids": [prompt] * 16, "chosen_ids": [chosen] * 16, "rejected_ids": [rejected] * 16})
    trainer = IdPreferenceTrainer(model=rec.model, args=_config(tmp_path, max_steps=12, valid_users=0, beta=0.5),
                                  train_dataset=pairs, processing_class=rec.tokenizer, id_decoder=rec.decoder)
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert losses[-1] < losses[0], losses
    rec.model.eval()
    assert logp(chosen) - logp(rejected) > margin_before + 1.0
    assert trainer.state.log_history[-2]["rewards/accuracies"] == 1.0  # trl's own metrics, read from our scores


def test_align_saves_the_same_artefact_and_keeps_the_start_when_it_does_not_help(scratch_dir, tiny_prepared, tmp_path):
    out = tmp_path / "aligned"
    rec = run_align(PreferenceArguments(model=scratch_dir, train_users=20, negatives=2, candidates=5),
                    _config(out, max_steps=4, learning_rate=1e-2))
    stage = rec.results["preference"]
    assert stage["pairs"]["pairs"] > 0 and stage["validation"]["curve"][0]["step"] == 0  # the start is scored
    best = stage["validation"]["best"]
    loaded = SidRecommender.from_pretrained(out)
    assert loaded.config.training["preference"]["beta"] == 0.1
    assert loaded.transition_prior is not None and "transition_prior" in loaded.results
    pipe = RecommendationPipeline.from_pretrained(out)
    assert len(pipe.recommend([pipe.codebook.item_ids[0]], k=3)) == 3
    assert "## Preference stage" in (out / "README.md").read_text()
    start = SidRecommender.from_pretrained(scratch_dir).model.state_dict()
    kept = loaded.model.state_dict()
    same = all(torch.equal(start[k], kept[k]) for k in start)
    assert same == (best["step"] == 0)  # the start is what is saved exactly when no step beat it


def test_align_trains_a_lora_adapter_and_saves_an_adapter(trained_dir, tiny_prepared, tmp_path):
    from peft import PeftModel

    out = tmp_path / "aligned_lora"
    rec = run_align(PreferenceArguments(model=trained_dir, data_dir=tiny_prepared["data_dir"], train_users=12,
                                        negatives=2, candidates=4),
                    _config(out, max_steps=3, valid_users=0))
    assert isinstance(rec.model, PeftModel) and list(rec.model.peft_config) == ["default"]  # trl's "ref" copy dropped
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    saved = json.loads((out / "adapter_config.json").read_text())
    assert saved["peft_type"] == "LORA"
    start, kept = SidRecommender.from_pretrained(trained_dir), SidRecommender.from_pretrained(out)
    lora = [k for k in kept.model.state_dict() if "lora_" in k]
    assert lora and any(not torch.equal(start.model.state_dict()[k], kept.model.state_dict()[k]) for k in lora)
    assert len(kept.recommend([[0, 1]], k=3)[0]) == 3


def test_the_shipped_align_config_parses(tmp_path):
    from sid4llm.cli import parse_config_and_args

    config = Path(__file__).parents[1] / "sid4llm" / "configs" / "align" / "dpo.yaml"
    pref_args, training_args = parse_config_and_args(
        [PreferenceArguments, SidPreferenceConfig],
        ["--config", str(config), "--model", "m", "--output_dir", str(tmp_path), "--use_cpu", "true"])
    assert pref_args.negatives < pref_args.candidates and training_args.precompute_ref_log_probs
    assert training_args.bf16 is False and training_args.loss_type == ["sigmoid", "sft"]


def test_finetune_init_from_continues_a_saved_model_the_control_of_the_stage(scratch_dir, tiny_lm_dir, tiny_prepared,
                                                                              tmp_path):
    """More supervised training from a saved model: the same minutes the preference stage is compared against."""
    args = dict(output_dir=str(tmp_path / "more"), max_steps=2, per_device_train_batch_size=8, learning_rate=0.0,
                report_to="none", use_cpu=True, seed=1, disable_tqdm=True, eval_examples=0, trie_softmax=True)
    # no --from_scratch given: the kind of model is the saved one's
    rec = run_finetune(ModelArguments(model_name_or_path=tiny_lm_dir, init_from=scratch_dir),
                       SidDataArguments(data_dir=tiny_prepared["data_dir"], codebook=tiny_prepared["codebook_dir"]),
                       TaskArguments(tasks=["sequential"], history_token_budget=40, max_seq_length=128),
                       SidTrainingConfig(**args))
    assert rec.config.from_scratch and not rec.config.peft
    start = SidRecommender.from_pretrained(scratch_dir).model.state_dict()
    assert all(torch.equal(start[k], v) for k, v in rec.model.state_dict().items())  # learning rate 0: the very start
    other = tmp_path / "other_ids"
    other.mkdir()
    codebook = SidRecommender.from_pretrained(scratch_dir).codebook
    codebook.codes[0], codebook.codes[1] = codebook.codes[1], codebook.codes[0]  # two items swap IDs
    codebook.disambiguation[[0, 1]] = codebook.disambiguation[[1, 0]]
    codebook.save_pretrained(other)
    with pytest.raises(ValueError, match="trained on other IDs"):
        run_finetune(ModelArguments(init_from=scratch_dir),
                     SidDataArguments(data_dir=tiny_prepared["data_dir"], codebook=str(other)),
                     TaskArguments(tasks=["sequential"], history_token_budget=40, max_seq_length=128),
                     SidTrainingConfig(**{**args, "output_dir": str(tmp_path / "again")}))


def test_requests_in_words_prefer_items_that_meet_what_was_asked(chat_dir, chat_prepared, scratch_dir, tmp_path):
    """The quickstart's kind of artefact (a layer-cut adapter trained on requests): request pairs choose an item in
    the asked categories over the model's own items outside them, and the aligned artefact still chats."""
    from sid4llm.artifacts import SettingsError
    from sid4llm.data import PreparedData
    from sid4llm.lm.tasks import request_writer
    from sid4llm.training.preference_pairs import request_preference_pairs

    rec = SidRecommender.from_pretrained(chat_dir)
    writer = request_writer(PreparedData.load(chat_prepared["data_dir"]), TaskArguments())
    pairs, stats = request_preference_pairs(rec, writer, count=6, negatives=2, candidates=6, seed=0)
    assert stats["requests"] == 6 and len(pairs) > 0
    writer.rng.seed(0)  # the same requests again, to check each row against the writer's own constraints
    asked = [r for r in writer.requests(18, "train") if r.categories or r.decade is not None][:6]
    by_prompt = {tuple(rec.history_prompt_ids(list(r.named), "request", r.text)): r for r in asked}
    for row in pairs:
        request = by_prompt[tuple(row["prompt_ids"])]
        good = set(writer.matching(request.categories, request.decade))
        assert rec.vocab.parse_stream_item(row["chosen_ids"]) in good
        assert rec.vocab.parse_stream_item(row["rejected_ids"]) not in good

    out = tmp_path / "aligned"
    aligned = run_align(PreferenceArguments(model=chat_dir, train_users=10, negatives=2, candidates=4, requests=6),
                        _config(out, max_steps=2, valid_users=0))
    assert aligned.results["preference"]["pairs"]["requests"]["pairs"] > 0
    assert aligned.two_paths  # ID path: the first layer, adapter on; words: the whole base
    pipe = RecommendationPipeline.from_pretrained(out)
    assert len(pipe.chat([{"role": "user", "content": "something like a comedy"}], k=3)["items"]) == 3
    with pytest.raises(SettingsError, match="requests task"):
        run_align(PreferenceArguments(model=scratch_dir, requests=2), _config(tmp_path / "x", max_steps=1, valid_users=0))


@pytest.mark.slow  # a subprocess end to end
def test_the_align_recipe_runs_under_accelerate_launch(scratch_dir, tmp_path):
    import os
    import subprocess
    import sys

    repo = Path(__file__).parents[1]
    out = tmp_path / "aligned"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(repo / "recipes" / "accelerate_configs" / "cpu.yaml"), str(repo / "recipes" / "align.py"),
           "--config", "align/dpo", "--model", scratch_dir, "--output_dir", str(out), "--train_users", "10",
           "--max_steps", "2", "--valid_users", "4", "--transition_prior_users", "4", "--disable_tqdm", "true"]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert SidRecommender.from_pretrained(out).results["preference"]["pairs"]["pairs"] > 0
