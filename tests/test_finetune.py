"""ID tokens in a tokenizer, the task datasets and the Accelerate + PEFT fine-tuning recipe (tiny models)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, TrainingArguments

from sid4llm.data import PreparedData
from sid4llm.finetuning import (
    ModelArguments,
    SidDataArguments,
    build_model_and_vocab,
    load_codebook,
    run_finetune,
)
from sid4llm.ids import SemanticIdCodebook
from sid4llm.recommender import SidRecommender
from sid4llm.tasks import IGNORE_INDEX, TaskArguments, budget_history, build_task_examples, tokenize_examples
from sid4llm.tokenization import BEGIN_TOKEN, END_TOKEN, IdVocabulary, init_id_embeddings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def vocab(tiny_lm_dir, tiny_prepared) -> IdVocabulary:
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    return IdVocabulary.extend(tokenizer, SemanticIdCodebook.from_pretrained(tiny_prepared["codebook_dir"]))


def test_id_tokens_are_added_and_round_trip(vocab):
    codebook = vocab.codebook
    assert len(vocab.new_token_ids) == 2 + codebook.vocab_size + codebook.num_disambiguation_tokens
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
    from transformers import AutoModelForCausalLM

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


def test_history_is_cut_to_the_token_budget(vocab):
    history = list(range(12))
    cost = {i: len(vocab.codebook.sequences[i]) + 2 for i in history}
    kept = budget_history(history, vocab, token_budget=12, max_items=100)
    assert kept == history[-len(kept):] and sum(cost[i] for i in kept) <= 12
    assert sum(cost[i] for i in history[-len(kept) - 1:]) > 12  # one more item would not fit
    assert budget_history(history, vocab, None, max_items=3) == [9, 10, 11]


def test_training_examples_never_contain_valid_or_test_targets(vocab, tiny_prepared):
    data = PreparedData.load(tiny_prepared["data_dir"])
    args = TaskArguments(tasks="sequential,natural_language", windows_per_user=100)
    examples = build_task_examples(data, vocab, args, "train")
    train = data.sequences["train"]
    for user, pos in zip(examples["user_idx"], examples["target_position"]):
        assert pos <= len(train[user]["history"])  # the train row's target sits at position len(history)
    held_out = {(u, t) for split in ("valid", "test") for u, t in
                zip(data.sequences[split]["user_idx"], data.sequences[split]["target_timestamp"])}
    train_events = {(u, ts) for u, h, t in zip(train["user_idx"], train["history_timestamps"], train["target_timestamp"])
                    for ts in [*h, t]}
    assert not held_out & train_events


def test_loss_is_on_the_answer_only(vocab, tiny_prepared):
    data = PreparedData.load(tiny_prepared["data_dir"])
    args = TaskArguments(tasks="sequential", windows_per_user=1)
    ds = tokenize_examples(build_task_examples(data, vocab, args, "train"), vocab, args, list(data.items["title"]))
    ex = ds[0]
    answer = [t for t in ex["labels"] if t != IGNORE_INDEX]
    assert vocab.parse_token_ids(answer) == [ex["target"]]
    assert ex["labels"][: len(ex["labels"]) - len(answer)] == [IGNORE_INDEX] * (len(ex["labels"]) - len(answer))
    assert vocab.tokenizer.decode(ex["input_ids"]).count("<|im_start|>assistant") == 1  # chat template used


def _args(tmp_path, tiny_lm_dir, tiny_prepared, **training):
    model_args = ModelArguments(model_name_or_path=tiny_lm_dir, lora_r=4, lora_alpha=8)
    data_args = SidDataArguments(data_dir=tiny_prepared["data_dir"], codebook=tiny_prepared["codebook_dir"], eval_examples=8)
    task_args = TaskArguments(windows_per_user=2, history_token_budget=40)
    values = {"output_dir": str(tmp_path / "out"), "max_steps": 30, "per_device_train_batch_size": 8,
              "learning_rate": 5e-3, "logging_steps": 10, "save_steps": 1000, "report_to": "none",
              "use_cpu": True, "seed": 0, "disable_tqdm": True, **training}
    return model_args, data_args, task_args, TrainingArguments(**values)


def test_finetune_lowers_the_loss_trains_new_rows_only_and_reloads_identically(tmp_path, tiny_lm_dir, tiny_prepared):
    model_args, data_args, task_args, training_args = _args(tmp_path, tiny_lm_dir, tiny_prepared)
    base, vocab = build_model_and_vocab(model_args, load_codebook(tiny_prepared["codebook_dir"]))
    before = base.get_input_embeddings().weight.detach().clone()

    rec = run_finetune(model_args, data_args, task_args, training_args)
    log = [h["loss"] for h in _trainer_log(training_args.output_dir)]
    assert log[-1] < log[0], log

    merged = rec.model.merge_and_unload() if hasattr(rec.model, "merge_and_unload") else rec.model
    after = merged.get_input_embeddings().weight.detach()
    n_old = min(vocab.new_token_ids)
    torch.testing.assert_close(after[:n_old], before[:n_old])  # pretrained rows untouched
    assert not torch.allclose(after[vocab.code_token_ids], before[vocab.code_token_ids])  # ID rows learned


def _trainer_log(output_dir):
    state = json.loads((Path(output_dir) / "trainer_state.json").read_text())
    return [h for h in state["log_history"] if "loss" in h]


def test_saved_recommender_reloads_onto_a_fresh_base_with_identical_logits(tmp_path, tiny_lm_dir, tiny_prepared):
    model_args, data_args, task_args, training_args = _args(tmp_path, tiny_lm_dir, tiny_prepared, max_steps=5)
    rec = run_finetune(model_args, data_args, task_args, training_args)
    out = Path(training_args.output_dir)
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "sid_vocabulary.json",
                 "generation_config.json", "sid4llm_config.json", "README.md", "codebook/codes.safetensors"):
        assert (out / name).exists(), name
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["do_sample"] is False and gen["num_beams"] > 1
    loaded = SidRecommender.from_pretrained(out)
    ids = torch.tensor([rec.vocab.item_token_ids(0) + rec.vocab.item_token_ids(3)])
    rec.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, rec.model(ids).logits)
    assert loaded.codebook.sequences == rec.codebook.sequences


def test_resume_continues_the_step_count(tmp_path, tiny_lm_dir, tiny_prepared):
    model_args, data_args, task_args, training_args = _args(tmp_path, tiny_lm_dir, tiny_prepared, max_steps=4,
                                                            save_steps=2, logging_steps=1)
    run_finetune(model_args, data_args, task_args, training_args)
    out = Path(training_args.output_dir)
    checkpoint_state = out / "checkpoint-4" / "trainer_state.json"
    state = json.loads(checkpoint_state.read_text())
    state["log_history"].append({"marker": "written before the kill"})
    checkpoint_state.write_text(json.dumps(state))
    training_args.max_steps = 6  # the run was "killed" at step 4: the same command with more steps resumes
    run_finetune(model_args, data_args, task_args, training_args)
    resumed = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    assert resumed["global_step"] == 6
    assert {"marker": "written before the kill"} in resumed["log_history"]  # state came from checkpoint-4
    assert [h["step"] for h in resumed["log_history"] if "loss" in h] == [1, 2, 3, 4, 5, 6]


def test_from_scratch_uses_the_same_code_path(tmp_path, tiny_lm_dir, tiny_prepared):
    model_args, data_args, task_args, training_args = _args(tmp_path, tiny_lm_dir, tiny_prepared, max_steps=3)
    model_args.from_scratch, model_args.scratch_hidden_size, model_args.scratch_layers = True, 32, 1
    task_args.tasks, task_args.prompt_format, task_args.system_prompt = "sequential", "plain", ""
    rec = run_finetune(model_args, data_args, task_args, training_args)
    assert rec.config["peft"] is False
    loaded = SidRecommender.from_pretrained(training_args.output_dir)
    assert loaded.model.config.num_hidden_layers == 1


def test_recipe_runs_under_accelerate_launch(tmp_path, tiny_lm_dir, tiny_prepared):
    out = tmp_path / "rec"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "recipes" / "accelerate_configs" / "cpu.yaml"), str(REPO / "recipes" / "finetune.py"),
           "--config", str(REPO / "recipes" / "configs" / "finetune" / "smollm2_lora.yaml"),
           "--model_name_or_path", tiny_lm_dir, "--data_dir", tiny_prepared["data_dir"],
           "--codebook", str(Path(tiny_prepared["codebook_dir"]).parent), "--output_dir", str(out),
           "--max_steps", "3", "--save_steps", "3", "--eval_examples", "4", "--lora_r", "4", "--disable_tqdm", "true"]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "adapter_model.safetensors").is_file() and (out / "checkpoint-3").is_dir()
    assert SidRecommender.from_pretrained(out).config["metrics"]["train_loss"] > 0


@pytest.mark.slow
def test_a_few_lora_steps_on_the_real_smollm2(tmp_path, tiny_prepared):
    model_args, data_args, task_args, training_args = _args(tmp_path, "default", tiny_prepared, max_steps=2,
                                                            per_device_train_batch_size=2)
    model_args.model_name_or_path = "default"
    rec = run_finetune(model_args, data_args, task_args, training_args)
    assert rec.config["metrics"]["train_loss"] > 0
    assert rec.model.get_base_model().config.hidden_size == 576


def test_answer_only_logits_give_the_same_loss_as_full_logits(tiny_lm_dir, vocab, tiny_prepared):
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq

    from sid4llm.finetuning import AnswerLossTrainer

    data = PreparedData.load(tiny_prepared["data_dir"])
    args = TaskArguments(windows_per_user=1)
    ds = tokenize_examples(build_task_examples(data, vocab, args, "train"), vocab, args, list(data.items["title"]))
    vocab.tokenizer.padding_side = "left"
    collator = DataCollatorForSeq2Seq(vocab.tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
    batch = collator([{k: ds[i][k] for k in ("input_ids", "attention_mask", "labels")} for i in range(0, 60, 7)])
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    init_id_embeddings(model, vocab, "mean")
    trainer = AnswerLossTrainer(model=model, args=TrainingArguments(output_dir="unused", report_to="none", use_cpu=True))
    ours = trainer.compute_loss(model, dict(batch))
    reference = model(**batch).loss
    torch.testing.assert_close(ours, reference)
