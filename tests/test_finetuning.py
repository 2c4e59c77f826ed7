"""Fine-tuning (sid4llm.training) with tiny models: the loss, the saved recommender, resuming, layer cuts,
from-scratch models, the shipped configs and the recipe under accelerate launch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, TrainingArguments

from sid4llm import RecommendationPipeline
from sid4llm.data import PreparedData
from sid4llm.lm.embedding_init import init_id_embeddings
from sid4llm.lm.models import ModelArguments
from sid4llm.lm.recommender import SidRecommender
from sid4llm.lm.tasks import IGNORE_INDEX, TaskArguments, build_segments
from sid4llm.training import SidTrainingConfig
from sid4llm.training.finetuning import SidDataArguments, build_model_and_vocab, load_codebook, run_finetune
from sid4llm.training.packing import PackedCollator, pack_segments

REPO = Path(__file__).resolve().parents[1]


def _args(tmp_path, tiny_lm_dir, tiny_prepared, **training):
    model_args = ModelArguments(model_name_or_path=tiny_lm_dir, lora_r=4, lora_alpha=8)
    data_args = SidDataArguments(data_dir=tiny_prepared["data_dir"], codebook=tiny_prepared["codebook_dir"])
    task_args = TaskArguments(tasks=["sequential", "natural_language", "alignment"], history_token_budget=40, max_seq_length=128)
    values = {"output_dir": str(tmp_path / "out"), "max_steps": 30, "per_device_train_batch_size": 8,
              "learning_rate": 5e-3, "logging_steps": 10, "save_steps": 1000, "report_to": "none",
              "use_cpu": True, "seed": 0, "disable_tqdm": True, "eval_examples": 8, **training}
    return model_args, data_args, task_args, SidTrainingConfig(**values)


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


def _trainer_state(output_dir) -> dict:
    return json.loads((Path(output_dir) / "trainer_state.json").read_text())


def _trainer_log(output_dir):
    return [h for h in _trainer_state(output_dir)["log_history"] if "loss" in h]


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
    ids = torch.tensor([rec.vocab.stream_token_ids([0, 3])])
    rec.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, rec.model(ids).logits)
    assert loaded.codebook.sequences == rec.codebook.sequences


class _Killed(RuntimeError):
    pass


def test_resume_continues_the_step_count(tmp_path, tiny_lm_dir, tiny_prepared):
    from transformers import TrainerCallback

    class KillAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise _Killed(f"killed after saving step {state.global_step}")

    model_args, data_args, task_args, training_args = _args(tmp_path, tiny_lm_dir, tiny_prepared, max_steps=6,
                                                            save_steps=4, logging_steps=1)
    with pytest.raises(_Killed):
        run_finetune(model_args, data_args, task_args, training_args, callbacks=[KillAfterSave()])
    out = Path(training_args.output_dir)
    checkpoint_state = out / "checkpoint-4" / "trainer_state.json"
    state = json.loads(checkpoint_state.read_text())
    state["log_history"].append({"marker": "written before the kill"})
    checkpoint_state.write_text(json.dumps(state))
    run_finetune(model_args, data_args, task_args, training_args)  # the same command resumes
    resumed = json.loads((out / "trainer_state.json").read_text())
    assert resumed["global_step"] == 6
    assert {"marker": "written before the kill"} in resumed["log_history"]  # state came from checkpoint-4
    assert [h["step"] for h in resumed["log_history"] if "loss" in h] == [1, 2, 3, 4, 5, 6]
    assert not list(out.glob("checkpoint-*"))  # finished: only the artefact is left


def test_a_pretrained_lm_cut_to_its_first_layers_trains_saves_and_reloads(tmp_path, tiny_lm_dir, tiny_prepared):
    model_args, data_args, task_args, training_args = _args(tmp_path, tiny_lm_dir, tiny_prepared, max_steps=3)
    model_args.pretrained_layers, model_args.use_peft = 1, False
    rec = run_finetune(model_args, data_args, task_args, training_args)
    loaded = SidRecommender.from_pretrained(training_args.output_dir)
    assert loaded.model.config.num_hidden_layers == 1 and len(loaded.model.model.layers) == 1
    assert loaded.id_model is loaded.model and not loaded.has_words_path  # a cut model alone cannot talk
    ids = torch.tensor([rec.vocab.stream_token_ids([0, 3])])
    rec.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, rec.model(ids).logits)
    with pytest.raises(ValueError, match="pretrained_layers must be in"):
        model_args.pretrained_layers = 3
        build_model_and_vocab(model_args, load_codebook(tiny_prepared["codebook_dir"]))


@pytest.mark.parametrize("peft_layers", ["full", "lora"])
def test_a_layer_cut_adapter_has_an_id_path_and_a_words_path_over_one_base(tmp_path, tiny_lm_dir, tiny_prepared, peft_layers):
    """The CPU recipe's artefact: an adapter trained on the first layer of a base; loaded, it sits on the whole
    base, the ID path reads the first layer with the adapter on, the words path the whole base with it off."""
    model_args, data_args, task_args, training_args = _args(tmp_path, tiny_lm_dir, tiny_prepared, max_steps=4,
                                                            save_steps=2)
    model_args.pretrained_layers, model_args.peft_layers = 1, peft_layers
    task_args.tasks = ["sequential", "requests"]
    task_args.request_examples = 40
    trained = run_finetune(model_args, data_args, task_args, training_args)
    out = Path(training_args.output_dir)
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert not list(out.glob("checkpoint-*"))  # optimizer state was only for resuming
    base = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    rec = SidRecommender.from_pretrained(out)
    assert len(rec.model.get_base_model().model.layers) == 2  # the whole base, one copy of its weights
    assert rec.id_model.config.num_hidden_layers == 1 and len(rec.id_model.model.layers) == 1
    assert rec.has_words_path
    ids = torch.tensor([rec.vocab.stream_token_ids([0, 3])])
    words = torch.tensor([[5, 6, 7, 8]])  # ordinary text tokens
    with torch.no_grad():
        torch.testing.assert_close(rec.id_model(ids).logits, trained.id_model(ids).logits)
        with rec.words_model() as lm:
            torch.testing.assert_close(lm(words).logits[..., : base.config.vocab_size], base(words).logits)
        if peft_layers == "full":  # the kept layer was trained as a whole
            layer = rec.id_model.model.layers[0].mlp.down_proj
            trained_weight = layer.modules_to_save["default"].weight
            assert not torch.allclose(trained_weight, base.model.layers[0].mlp.down_proj.weight)


# peft's own read of a property transformers deprecated (sid4llm silences it where it calls peft; here peft is called
# directly, as a user would).
@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
def test_the_adapter_loads_with_peft_alone(tmp_path, tiny_lm_dir, tiny_prepared):
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoTokenizer

    model_args, data_args, task_args, training_args = _args(tmp_path, tiny_lm_dir, tiny_prepared, max_steps=2)
    model_args.pretrained_layers, model_args.peft_layers = 1, "full"
    run_finetune(model_args, data_args, task_args, training_args)
    out = training_args.output_dir
    model = AutoPeftModelForCausalLM.from_pretrained(out)  # resizes the base to the shipped tokenizer
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    base = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    base.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    again = PeftModel.from_pretrained(base, out)
    ids = torch.tensor([[1, 2, len(tokenizer) - 1]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, again(ids).logits)
    with pytest.raises(ValueError, match="set --pretrained_layers"):
        model_args.pretrained_layers = None
        run_finetune(model_args, data_args, task_args, training_args)


def test_from_scratch_uses_the_same_code_path(tmp_path, tiny_lm_dir, tiny_prepared):
    model_args, data_args, task_args, training_args = _args(tmp_path, tiny_lm_dir, tiny_prepared, max_steps=3)
    model_args.from_scratch, model_args.scratch_hidden_size, model_args.scratch_layers = True, 32, 1
    task_args.tasks = ["sequential"]
    rec = run_finetune(model_args, data_args, task_args, training_args)
    assert rec.config.peft is False
    loaded = SidRecommender.from_pretrained(training_args.output_dir)
    assert loaded.model.config.num_hidden_layers == 1
    # ID streams only: the vocabulary is the ID tokens and four specials, not the text tokenizer's
    assert len(loaded.tokenizer) == 4 + len(rec.vocab.new_token_ids)
    assert loaded.model.get_input_embeddings().weight.shape[0] == len(loaded.tokenizer)
    assert len(loaded.recommend([[0, 1, 2]], k=3)[0]) == 3
    # Chat on a model of ID streams only: the list is recommend on the ID stream of the items named, no prose
    pipe = RecommendationPipeline(loaded)
    titles = [loaded.codebook.titles[i] for i in (0, 1)]
    turn = pipe.chat([{"role": "user", "content": f'I liked "{titles[0]}" and "{titles[1]}"'}], k=3)
    assert pipe.chat_style == "ids" and not pipe.writes_prose
    assert [i["index"] for i in turn["items"]] == [r["index"] for r in loaded.recommend([[0, 1]], k=3)[0]]
    heard, listing = turn["content"].split("\n\n")  # no words of its own: what it understood, then the list
    assert heard.startswith("You mentioned: ") and listing.startswith("Recommended for you:\n1. ")


def test_scratch_dropout_regularises_training_only_and_saves_a_plain_llama(tmp_path):
    from sid4llm.lm.models import scratch_model

    plain = scratch_model(40, hidden_size=32, num_layers=2, num_heads=2, seed=3)
    dropped = scratch_model(40, hidden_size=32, num_layers=2, num_heads=2, seed=3, dropout=0.3)
    ids = torch.tensor([[1, 5, 7, 9, 11]])
    dropped.train()
    assert not torch.allclose(dropped(ids).logits, dropped(ids).logits)  # a fresh mask every forward
    dropped.eval()
    with torch.no_grad():  # in inference it is the same Llama
        torch.testing.assert_close(dropped(ids).logits, plain.eval()(ids).logits)
    dropped.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()  # the file is a plain Llama
    assert type(again).__name__ == "LlamaForCausalLM"
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, plain(ids).logits)
    with pytest.raises(ValueError, match="dropout must be in"):
        scratch_model(40, hidden_size=32, num_layers=1, num_heads=2, dropout=1.0)


@pytest.mark.parametrize("config", sorted((REPO / "sid4llm" / "configs" / "finetune").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_finetune_config_parses(config, tmp_path):
    from sid4llm.cli import parse_config_and_args

    model_args, _, task_args, training_args = parse_config_and_args(
        [ModelArguments, SidDataArguments, TaskArguments, SidTrainingConfig],
        ["--config", str(config), "--data_dir", "data", "--codebook", "ids", "--output_dir", str(tmp_path), "--use_cpu",
         "true", "--bf16", "false"])
    assert task_args.task_list() and training_args.learning_rate > 0
    assert model_args.from_scratch or model_args.model_name_or_path == "default"


@pytest.mark.slow  # a subprocess end to end
def test_recipe_runs_under_accelerate_launch(tmp_path, tiny_lm_dir, tiny_prepared):
    out = tmp_path / "rec"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "recipes" / "accelerate_configs" / "cpu.yaml"), str(REPO / "recipes" / "finetune.py"),
           "--config", "finetune/smollm2_lora",
           "--model_name_or_path", tiny_lm_dir, "--data_dir", tiny_prepared["data_dir"],
           "--codebook", str(Path(tiny_prepared["codebook_dir"]).parent), "--output_dir", str(out),
           "--max_steps", "3", "--save_steps", "3", "--eval_examples", "4", "--lora_r", "4", "--disable_tqdm", "true"]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "adapter_model.safetensors").is_file() and not (out / "checkpoint-3").exists()  # finished: deleted
    assert SidRecommender.from_pretrained(out).results["metrics"]["train_loss"] > 0


@pytest.mark.slow
def test_a_few_lora_steps_on_the_real_smollm2(tmp_path, tiny_prepared):
    model_args, data_args, task_args, training_args = _args(tmp_path, "default", tiny_prepared, max_steps=2,
                                                            per_device_train_batch_size=2)
    model_args.model_name_or_path = "default"
    rec = run_finetune(model_args, data_args, task_args, training_args)
    assert rec.results["metrics"]["train_loss"] > 0
    assert rec.model.get_base_model().config.hidden_size == 576


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_scores_id_targets_over_the_id_tokens_and_text_targets_over_the_vocabulary(tiny_lm_dir, vocab, tiny_prepared,
                                                                                        smoothing):
    from transformers import AutoModelForCausalLM

    from sid4llm.decoding.columns import IdDecoder
    from sid4llm.training.trainer import IdLossTrainer

    data = PreparedData.load(tiny_prepared["data_dir"])
    args = TaskArguments(tasks=["sequential", "alignment"], max_examples_per_task=12)
    packed = pack_segments(build_segments(data, vocab, args, "train"), max_seq_length=96)
    batch = PackedCollator(vocab.tokenizer.pad_token_id)([packed[i] for i in range(min(4, len(packed)))])
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    init_id_embeddings(model, vocab, "random")
    decoder = IdDecoder.build(vocab)
    trainer = IdLossTrainer(model=model, args=TrainingArguments(output_dir="unused", report_to="none", use_cpu=True,
                                                                label_smoothing_factor=smoothing), id_decoder=decoder)
    ours = trainer.compute_loss(model, dict(batch))
    # Reference from the full logits: ID targets normalised over the ID columns, text targets over everything.
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    logits, targets = logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1)
    keep = targets != IGNORE_INDEX
    logits, targets = logits[keep], targets[keep]
    columns = decoder.token_to_column(targets)
    is_id = columns >= 0
    assert is_id.any() and (~is_id).any()
    # label_smoothing_factor spreads its share over the same softmax the target is scored in
    total = torch.nn.functional.cross_entropy(logits[is_id][:, decoder.column_token_ids], columns[is_id], reduction="sum",
                                              label_smoothing=smoothing)
    total += torch.nn.functional.cross_entropy(logits[~is_id], targets[~is_id], reduction="sum", label_smoothing=smoothing)
    torch.testing.assert_close(ours.detach(), total / keep.sum())


def test_the_trainer_hands_tie_groups_to_the_collator_and_the_model_never_sees_them(tiny_lm_dir, vocab, tiny_prepared):
    """Trainer drops dataset columns the model's forward does not take; ``tie_groups`` must still reach the
    collator (which shuffles tied items with them), and leave the batch before the model."""
    from transformers import AutoModelForCausalLM

    from sid4llm.decoding.columns import IdDecoder
    from sid4llm.training.trainer import IdLossTrainer

    data = PreparedData.load(tiny_prepared["data_dir"])
    packed = pack_segments(build_segments(data, vocab, TaskArguments(), "train", tie_groups=True), 96)
    collate = PackedCollator(vocab.tokenizer.pad_token_id, end_id=vocab.end_id, tie_shuffle=True)
    seen = []

    def spy(rows):
        seen.append(set(rows[0]))
        return collate(rows)

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    init_id_embeddings(model, vocab, "random")
    trainer = IdLossTrainer(model=model, args=TrainingArguments(output_dir="unused", report_to="none", use_cpu=True),
                            train_dataset=packed, data_collator=spy, id_decoder=IdDecoder.build(vocab))
    batch = next(iter(trainer.get_train_dataloader()))
    assert "tie_groups" in seen[0] and set(batch) == {"input_ids", "labels", "position_ids"}


def _walked_nodes(decoder, row: list[int]) -> list[int]:
    """The trie node after each token of a row, walked one token at a time: the root after a non-ID token or an
    end marker."""
    nodes, node = [], 0
    for token in row:
        column = int(decoder.token_to_column(torch.tensor([token]))[0])
        if column < 0 or column == decoder.num_columns - 1:
            node = 0
        else:
            node = int(decoder.trie.step(torch.tensor([node]), torch.tensor([column]))[0])
        nodes.append(node)
    return nodes


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_trie_softmax_scores_each_id_token_over_the_continuations_of_its_prefix(tiny_lm_dir, vocab, tiny_prepared,
                                                                                smoothing):
    from transformers import AutoModelForCausalLM

    from sid4llm.decoding.columns import IdDecoder
    from sid4llm.training.trainer import IdLossTrainer

    data = PreparedData.load(tiny_prepared["data_dir"])
    packed = pack_segments(build_segments(data, vocab, TaskArguments(max_examples_per_task=12), "train"), max_seq_length=96)
    batch = PackedCollator(vocab.tokenizer.pad_token_id)([packed[i] for i in range(min(4, len(packed)))])
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    init_id_embeddings(model, vocab, "random")
    decoder = IdDecoder.build(vocab, trie_softmax=True)
    nodes = decoder.prefix_nodes(batch["input_ids"])
    assert nodes.tolist() == [_walked_nodes(decoder, row) for row in batch["input_ids"].tolist()]
    trainer = IdLossTrainer(model=model, args=TrainingArguments(output_dir="unused", report_to="none", use_cpu=True,
                                                                label_smoothing_factor=smoothing), id_decoder=decoder)
    ours = trainer.compute_loss(model, dict(batch))
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    total, count, single_choice = 0.0, 0, 0
    for row, labels, row_logits in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), logits):
        walked = _walked_nodes(decoder, row)
        for t in range(len(row) - 1):
            if labels[t + 1] == IGNORE_INDEX:
                continue
            column = int(decoder.token_to_column(torch.tensor([labels[t + 1]]))[0])
            allowed = decoder.trie.allowed_mask(torch.tensor([walked[t]]), decoder.num_columns)[0]
            assert allowed[column]  # every written ID token continues its prefix
            single_choice += int(allowed.sum() == 1)
            logp = torch.log_softmax(row_logits[t, decoder.column_token_ids].masked_fill(~allowed, float("-inf")), -1)
            uniform = -logp[allowed].mean()
            total += (1 - smoothing) * -logp[column] + smoothing * uniform
            count += 1
    assert single_choice > 0  # e.g. the end marker after a whole ID: a target that costs nothing
    torch.testing.assert_close(ours.detach(), total / count)


def test_a_finished_finetune_run_is_reused_only_with_the_same_settings(tmp_path, tiny_lm_dir, tiny_prepared, monkeypatch):
    """What the quickstart and the reproduction rely on, as for IDs: the same settings load the saved recommender;
    another training setting (or other IDs) trains again instead of reusing a stale model."""
    from sid4llm.commands import finetune

    def settings(**changes) -> dict:
        return {"model_name_or_path": tiny_lm_dir, "data_dir": tiny_prepared["data_dir"],
                "codebook": tiny_prepared["codebook_dir"], "output_dir": tmp_path / "rec", "eval_examples": 0,
                "history_token_budget": 40, "max_seq_length": 128, "max_steps": 2, "per_device_train_batch_size": 4,
                "report_to": "none", "use_cpu": True, "disable_tqdm": True, "lora_r": 4, "lora_alpha": 8, **changes}

    first = finetune.trained_or_train(**settings())
    trained = []
    real_main = finetune.main
    monkeypatch.setattr(finetune, "main", lambda *a, **k: trained.append(a) or real_main(*a, **k))
    again = finetune.trained_or_train(**settings())
    assert trained == [] and again.config == first.config  # loaded, not retrained
    finetune.trained_or_train(**settings(learning_rate=1e-3))
    assert len(trained) == 1  # another setting: trained again
    finetune.trained_or_train(**settings(learning_rate=1e-3, tasks=["sequential", "alignment"]))
    assert len(trained) == 2


def test_the_saved_config_holds_settings_and_results_json_what_was_measured(trained_dir):
    saved = json.loads((Path(trained_dir) / "sid4llm_config.json").read_text())
    assert {"base_model", "prompt", "decoding", "profile", "training"} <= set(saved)
    assert {"model", "tasks", "training"} <= set(saved["training"])  # the record of how it was trained
    assert not {"metrics", "evaluation", "example_stats"} & set(saved)
    results = json.loads((Path(trained_dir) / "results.json").read_text())
    assert results["metrics"]["train_loss"] > 0 and "segments_by_task" in results["example_stats"]
    rec = SidRecommender.from_pretrained(trained_dir)
    assert rec.config.prompt.tasks == saved["prompt"]["tasks"] == saved["training"]["tasks"]["tasks"]
    assert rec.results == results


@dataclass
class WithANewKnob(SidTrainingConfig):
    """A training config with a setting a later version might add (module-level: the Trainer pickles its args)."""

    a_new_regulariser: float = field(default=0.3, metadata={"help": "A setting a later version adds."})


def test_a_new_training_setting_leaves_the_saved_inference_config_unchanged(tmp_path, tiny_lm_dir, tiny_prepared):
    """Training settings are a free-form record beside what inference reads: a knob a later version adds to
    SidTrainingConfig is recorded, and the saved model's inference settings (and format) stay as they were."""
    from dataclasses import asdict

    saved = []
    for name, kind in (("plain", SidTrainingConfig), ("knob", WithANewKnob)):
        model_args, data_args, task_args, training_args = _args(tmp_path / name, tiny_lm_dir, tiny_prepared,
                                                                max_steps=2, eval_examples=0)
        values = {k: v for k, v in asdict(training_args).items() if not k.startswith("_")}
        run_finetune(model_args, data_args, task_args, kind(**{**values, "output_dir": str(tmp_path / name / "out")}))
        saved.append(json.loads((tmp_path / name / "out" / "sid4llm_config.json").read_text()))
    plain, knob = saved
    assert knob["training"]["training"]["a_new_regulariser"] == 0.3
    assert "a_new_regulariser" not in plain["training"]["training"]
    assert {k: v for k, v in plain.items() if k != "training"} == {k: v for k, v in knob.items() if k != "training"}


def test_a_small_dataset_gets_the_step_floor_and_the_run_says_so(tmp_path, tiny_lm_dir, tiny_prepared, caplog):
    """Counted in epochs, a few hundred users give a handful of updates; ``min_steps`` raises that to the floor,
    and the plan (steps, epochs, why) is logged and kept in results.json."""
    model_args, data_args, task_args, training_args = _args(tmp_path, tiny_lm_dir, tiny_prepared, max_steps=-1,
                                                            num_train_epochs=1)
    training_args.min_steps, training_args.eval_examples = 40, 0
    with caplog.at_level("WARNING", logger="sid4llm.training.selection"):
        rec = run_finetune(model_args, data_args, task_args, training_args)
    plan = rec.results["training_plan"]
    assert plan["steps"] == 40 and plan["epochs"] > 2 and "below the floor min_steps=40" in plan["reason"]
    assert _trainer_state(training_args.output_dir)["global_step"] == 40
    assert "training 40 steps" in caplog.text


def test_validation_recall_keeps_the_best_state_of_the_run(tmp_path, tiny_lm_dir, tiny_prepared):
    from sid4llm.training.selection import ValidationRecall

    model_args, data_args, task_args, training_args = _args(tmp_path, tiny_lm_dir, tiny_prepared, max_steps=8)
    training_args.valid_users, training_args.valid_every, training_args.eval_examples = 6, 2, 0
    scores = iter([0.1, 0.5, 0.2, 0.3])  # the best at step 4: the saved model must be that state
    states = {}
    real_recall = ValidationRecall.recall

    def scripted(self, model):
        real_recall(self, model)  # decodes as it would (the callback really runs the model)
        states[len(states) * 2 + 2] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return next(scores)

    ValidationRecall.recall = scripted
    try:
        rec = run_finetune(model_args, data_args, task_args, training_args)
    finally:
        ValidationRecall.recall = real_recall
    validation = rec.results["validation"]
    assert [p["step"] for p in validation["curve"]] == [2, 4, 6, 8] and validation["best"]["step"] == 4
    kept = dict(rec.model.named_parameters())
    assert all(torch.equal(kept[n], p) for n, p in states[4].items())


def test_a_weight_average_is_what_validation_scores_and_what_is_saved(tmp_path, tiny_lm_dir, tiny_prepared, monkeypatch):
    """``weight_average_decay`` d: validation scores the bias-corrected moving average of the weights after each
    step (step n's weight ∝ (1 − d)·d^age), and the kept state is such an average, not one step's weights."""
    from transformers import TrainerCallback

    from sid4llm.training.selection import ValidationRecall

    class Recorder(TrainerCallback):
        def __init__(self):
            self.steps = []

        def on_step_end(self, args, state, control, model=None, **kwargs):
            self.steps.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})

    def average(states: list[dict], decay: float) -> dict:
        weights = [(1 - decay) * decay ** (len(states) - 1 - i) for i in range(len(states))]
        return {n: sum(w * s[n] for w, s in zip(weights, states)) / sum(weights) for n in states[0]}

    model_args, data_args, task_args, training_args = _args(tmp_path, tiny_lm_dir, tiny_prepared, max_steps=8)
    training_args.valid_users, training_args.valid_every, training_args.eval_examples = 6, 2, 0
    training_args.weight_average_decay = 0.5
    scores, scored = iter([0.1, 0.5, 0.2, 0.3]), []  # the best at step 4
    monkeypatch.setattr(ValidationRecall, "recall", lambda self, model: scored.append(
        {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}) or next(scores))
    recorder = Recorder()
    rec = run_finetune(model_args, data_args, task_args, training_args, callbacks=[recorder])
    assert len(recorder.steps) == 8 and rec.results["validation"]["best"]["step"] == 4
    expected = average(recorder.steps[:4], 0.5)
    assert any(not torch.equal(expected[n], recorder.steps[3][n]) for n in expected)  # not step 4's own weights
    for n, value in expected.items():
        torch.testing.assert_close(scored[1][n], value)
    kept = dict(rec.model.named_parameters())
    for n, value in expected.items():
        torch.testing.assert_close(kept[n].detach(), value)


class _StepClock:
    """A clock for the time-budget tests: every training step costs ``step_seconds`` (a callback ticks it)."""

    def __init__(self, step_seconds: float = 1.0):
        self.now, self.step_seconds = 0.0, step_seconds

    def __call__(self) -> float:
        return self.now

    def callback(self):
        from transformers import TrainerCallback

        clock = self

        class Tick(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                clock.now += clock.step_seconds

        return Tick()


def test_a_time_budget_shortens_the_run_to_fit_and_refits_the_schedule(tmp_path, tiny_lm_dir, tiny_prepared,
                                                                        monkeypatch, caplog):
    """60 planned steps of 1 s each under a half-minute budget: the run takes 30, says so, and its cosine
    schedule ends at 30 (the learning rate decays to zero there instead of stopping halfway down)."""
    clock = _StepClock(1.0)
    monkeypatch.setattr("sid4llm.training.selection.clock", clock)
    model_args, data_args, task_args, training_args = _args(tmp_path, tiny_lm_dir, tiny_prepared, max_steps=60,
                                                            lr_scheduler_type="cosine", logging_steps=5,
                                                            disable_tqdm=False)  # its bar is re-sized too
    training_args.eval_examples, training_args.max_train_minutes = 0, 0.5
    with caplog.at_level("WARNING", logger="sid4llm.training.selection"):
        rec = run_finetune(model_args, data_args, task_args, training_args, callbacks=[clock.callback()])
    assert _trainer_state(training_args.output_dir)["global_step"] == 30
    budget = rec.results["training_plan"]["time_budget"]
    assert budget["planned_steps"] == 60 and budget["steps"] == 30 and budget["seconds_per_step"] == 1.0
    assert not budget["stopped_by_clock"]
    assert "so 30 steps instead of 60" in caplog.text
    rates = {h["step"]: h["learning_rate"] for h in _trainer_state(training_args.output_dir)["log_history"]
             if "learning_rate" in h}
    assert rates[30] < 0.01 * training_args.learning_rate < rates[25]


def test_a_time_budget_counts_validation_and_stops_at_the_limit(tmp_path, tiny_lm_dir, tiny_prepared, monkeypatch):
    """Validation time is training time: 100 planned 1-s steps with a 5-s validation every 10 steps fit 40
    steps in a minute. A run whose steps then slow down stops on the clock, keeping its best validated state."""
    from sid4llm.training.selection import ValidationRecall

    clock = _StepClock(1.0)
    monkeypatch.setattr("sid4llm.training.selection.clock", clock)

    def five_second_validation(self, model):
        clock.now += 5.0
        return 0.1 * len(self.history)  # better every time: no early stop

    monkeypatch.setattr(ValidationRecall, "recall", five_second_validation)
    model_args, data_args, task_args, training_args = _args(tmp_path, tiny_lm_dir, tiny_prepared, max_steps=100)
    training_args.eval_examples, training_args.valid_users, training_args.max_train_minutes = 0, 6, 1.0
    rec = run_finetune(model_args, data_args, task_args, training_args, callbacks=[clock.callback()])
    budget = rec.results["training_plan"]["time_budget"]
    assert _trainer_state(training_args.output_dir)["global_step"] == budget["steps"] == 40
    assert budget["seconds_per_validation"] == 5.0 and not budget["stopped_by_clock"]
    assert [p["step"] for p in rec.results["validation"]["curve"]] == [10, 20, 30, 40]

    class SlowDown(_StepClock):  # 1 s a step while the run is timed, then 10 s
        def callback(self):
            from transformers import TrainerCallback

            clock = self

            class Tick(TrainerCallback):
                def on_step_end(self, args, state, control, **kwargs):
                    clock.now += 1.0 if state.global_step <= 25 else 10.0

            return Tick()

    slow = SlowDown()
    monkeypatch.setattr("sid4llm.training.selection.clock", slow)
    model_args, data_args, task_args, training_args = _args(tmp_path / "slow", tiny_lm_dir, tiny_prepared, max_steps=100)
    training_args.eval_examples, training_args.max_train_minutes = 0, 1.0
    rec = run_finetune(model_args, data_args, task_args, training_args, callbacks=[slow.callback()])
    budget = rec.results["training_plan"]["time_budget"]
    assert budget["stopped_by_clock"] and budget["steps"] == _trainer_state(training_args.output_dir)["global_step"]
    assert budget["steps"] == 29  # 25 s, then 10 s a step: the minute is spent at step 29


class _PaceChangeClock(_StepClock):
    """Steps cost ``before`` seconds up to step ``at``, then ``after``."""

    def __init__(self, before: float, after: float, at: int):
        super().__init__(before)
        self.before, self.after, self.at = before, after, at

    def callback(self):
        from transformers import TrainerCallback

        clock = self

        class Tick(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                clock.now += clock.before if state.global_step <= clock.at else clock.after

        return Tick()


@pytest.mark.parametrize("before, after, steps", [(1.5, 0.5, 100), (1.0, 2.0, 72)])
def test_a_time_budget_follows_the_pace_of_the_whole_run(tmp_path, tiny_lm_dir, tiny_prepared, monkeypatch,
                                                          before, after, steps):
    """The first steps do not set the pace for good. Slow first steps (1.5 s, then 0.5 s) first plan 80 of 100
    steps in 2 minutes; later fits give the steps back, and the run trains all 100. Steps that slow down (1 s,
    then 2 s) are re-fitted down to 72, so the schedule decays to its end inside the budget instead of being
    cut by the clock."""
    clock = _PaceChangeClock(before, after, at=25)
    monkeypatch.setattr("sid4llm.training.selection.clock", clock)
    model_args, data_args, task_args, training_args = _args(tmp_path, tiny_lm_dir, tiny_prepared, max_steps=100,
                                                            lr_scheduler_type="linear", logging_steps=1)
    training_args.eval_examples, training_args.max_train_minutes = 0, 2.0
    rec = run_finetune(model_args, data_args, task_args, training_args, callbacks=[clock.callback()])
    budget = rec.results["training_plan"]["time_budget"]
    assert _trainer_state(training_args.output_dir)["global_step"] == budget["steps"] == steps
    assert not budget["stopped_by_clock"] and clock.now <= 120
    last = [h["learning_rate"] for h in _trainer_state(training_args.output_dir)["log_history"] if "learning_rate" in h][-1]
    assert last < 0.05 * training_args.learning_rate  # the schedule ran to its end


def _agree_in_process(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from sid4llm.training.selection import agreed

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        Path(out_dir, f"{rank}.json").write_text(json.dumps([agreed(10.0 + rank, op="min"), agreed(10.0 + rank, op="max")]))
    finally:
        dist.destroy_process_group()


def test_processes_of_a_distributed_run_agree_on_the_budget(tmp_path):
    """Each process times itself; the step count (the least that fits anywhere) and the stop (when any process's
    clock is spent) must be the same on all of them, or one would wait forever for the others."""
    import socket

    import torch.multiprocessing as mp

    from sid4llm.training.selection import agreed

    assert agreed(7.0) == 7.0  # one process: its own value
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    mp.spawn(_agree_in_process, args=(2, port, str(tmp_path)), nprocs=2)
    assert [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)] == [[10.0, 11.0], [10.0, 11.0]]


def test_refitting_a_schedule_moves_its_end_and_leaves_a_constant_one_alone():
    from transformers import get_constant_schedule, get_linear_schedule_with_warmup

    from sid4llm.training.selection import refit_schedule

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    linear = get_linear_schedule_with_warmup(optimizer, 0, 100)
    assert refit_schedule(linear, 10)
    for _ in range(5):
        optimizer.step()
        linear.step()
    assert linear.get_last_lr()[0] == pytest.approx(0.5)  # halfway down a 10-step line, not a 100-step one
    assert not refit_schedule(get_constant_schedule(optimizer), 10)


@pytest.mark.parametrize("patience, last_step", [(2, 6), (0, 12)])
def test_validation_patience_stops_a_run_that_stopped_improving(tmp_path, tiny_lm_dir, tiny_prepared, monkeypatch,
                                                                 patience, last_step):
    """With ``valid_patience`` P the run ends after P evaluations without a gain, keeping the best state;
    0 (like None) trains to the end."""
    from sid4llm.training.selection import ValidationRecall

    model_args, data_args, task_args, training_args = _args(tmp_path, tiny_lm_dir, tiny_prepared, max_steps=12)
    training_args.valid_users, training_args.valid_every, training_args.eval_examples = 6, 2, 0
    training_args.valid_patience = patience
    scores = iter([0.5, 0.1, 0.2, 0.1, 0.3, 0.1, 0.1])  # the peak at step 2, then no gain
    monkeypatch.setattr(ValidationRecall, "recall", lambda self, model: next(scores))
    rec = run_finetune(model_args, data_args, task_args, training_args)
    assert _trainer_state(training_args.output_dir)["global_step"] == last_step
    assert rec.results["validation"]["best"]["step"] == 2


def test_item_memory_tokens_are_read_for_history_items_and_never_written(tmp_path, tiny_lm_dir, tiny_prepared):
    """``item_memory_tokens``: each history item is read as its codes + its own memory token (an item table at no
    stream tokens), while every target is still written as codes + end marker; items added later, and a share of
    history items in training (``item_memory_dropout``), are read with the end marker."""
    model_args, data_args, task_args, training_args = _args(tmp_path, tiny_lm_dir, tiny_prepared, max_steps=3)
    model_args.from_scratch, model_args.scratch_hidden_size, model_args.scratch_layers = True, 32, 1
    model_args.item_memory_tokens, training_args.item_memory_dropout = True, 0.5
    task_args.tasks = ["sequential"]
    rec = run_finetune(model_args, data_args, task_args, training_args)
    loaded = SidRecommender.from_pretrained(training_args.output_dir)
    vocab = loaded.vocab
    n_items = len(loaded.codebook)
    assert len(vocab.memory_token_ids) == n_items and vocab.memory_token_ids == rec.vocab.memory_token_ids
    assert len(loaded.tokenizer) == 4 + len(vocab.new_token_ids)  # the memory tokens are in the vocabulary

    # Read: codes + memory token; written (the labels, and what decoding may choose): codes + end marker.
    prompt = loaded.prompt_builder.stream_prompt_ids([0, 1, 2])
    assert prompt[-1] == vocab.memory_token_ids[2] and vocab.end_id not in prompt
    assert len(prompt) == 1 + sum(vocab.id_token_count(i) for i in (0, 1, 2))  # no extra stream tokens
    segments = build_segments(PreparedData.load(tiny_prepared["data_dir"]), vocab, task_args, "train")
    for ids, labels in zip(segments["input_ids"], segments["labels"]):
        read_as_memory = [lab for tok, lab in zip(ids, labels) if tok in set(vocab.memory_token_ids)]
        assert read_as_memory and set(read_as_memory) <= {vocab.end_id, IGNORE_INDEX}
        assert not set(labels) & set(vocab.memory_token_ids)
    assert set(vocab.memory_token_ids).isdisjoint(loaded.decoder.column_token_ids.tolist())
    assert all(0 <= r["index"] < n_items for r in loaded.recommend([[0, 1, 2]], k=3)[0])

    # Memory dropout reads a memory token as the end marker, afresh each batch; labels never change.
    row = {"input_ids": prompt, "labels": [IGNORE_INDEX] * len(prompt), "position_ids": list(range(len(prompt)))}
    every = PackedCollator(0, vocab.memory_token_ids, vocab.end_id, memory_dropout=1.0)([row])
    assert vocab.end_id in every["input_ids"][0].tolist() and not set(every["input_ids"][0].tolist()) & set(vocab.memory_token_ids)
    assert PackedCollator(0, vocab.memory_token_ids, vocab.end_id)([row])["input_ids"][0].tolist() == prompt
    with pytest.raises(ValueError, match="item_memory_dropout must be in"):
        SidTrainingConfig(output_dir="unused", item_memory_dropout=1.5)

    # An item added after training has no memory token: it is read with the end marker.
    text = PreparedData.load(tiny_prepared["data_dir"]).item_embeddings()[:1]
    loaded.add_items(["brand-new"], text)
    new = len(loaded.codebook) - 1
    assert new == n_items and vocab.stream_item_input_ids(new)[-1] == vocab.end_id
    assert loaded.prompt_builder.stream_prompt_ids([0, new])[-1] == vocab.end_id


def test_a_transition_prior_is_counted_weighted_on_valid_users_saved_and_used(tmp_path, tiny_lm_dir, tiny_prepared):
    """``--transition_prior``: after training, the train histories' item transitions are counted, their weight in
    re-ranking the beam is chosen on valid users (the choice and its curve in results.json), and the saved
    recommender loads with them and decodes with them unless told otherwise."""
    from sid4llm.data import PreparedData
    from sid4llm.evaluation import evaluate_recommender

    model_args, data_args, task_args, training_args = _args(tmp_path, tiny_lm_dir, tiny_prepared, max_steps=4)
    training_args.eval_examples, training_args.transition_prior, training_args.transition_prior_weights = 0, True, [0.5, 50.0]
    rec = run_finetune(model_args, data_args, task_args, training_args)
    fitted = rec.results["transition_prior"]
    assert set(fitted["valid_recall@10_by_weight"]) == {"0", "0.5", "50"} and fitted["users"] == 30
    best = max(fitted["valid_recall@10_by_weight"].values())
    assert fitted["valid_recall@10_by_weight"][f"{fitted['weight']:g}"] == best
    loaded = SidRecommender.from_pretrained(training_args.output_dir)
    assert loaded.transition_prior.weight == fitted["weight"] == rec.transition_prior.weight
    assert loaded.results["transition_prior"] == fitted
    assert f"with weight {fitted['weight']:g}" in (Path(training_args.output_dir) / "README.md").read_text()

    data = PreparedData.load(tiny_prepared["data_dir"])
    histories = [list(h) for h in data.sequences["valid"]["history"]]
    model_alone = [[r["index"] for r in lists] for lists in loaded.recommend(histories, k=3, prior_weight=0.0)]
    counted = [[r["index"] for r in lists] for lists in loaded.recommend(histories, k=3, prior_weight=50.0)]
    assert model_alone != counted  # a heavy weight lets the count decide among the beam's items
    loaded.config.decoding.transition_prior_weight = 50.0
    assert [[r["index"] for r in lists] for lists in loaded.recommend(histories, k=3)] == counted  # the saved weight
    result = evaluate_recommender(loaded, data, "valid", ks=[10], invalid_rate_users=0, show_progress=False,
                                  prior_weight=0.0)
    assert result["transition_prior_weight"] == 0.0


def test_the_gpu_config_runs_on_a_tiny_model_on_cpu_with_every_lever(tmp_path, tiny_lm_dir, chat_prepared):
    """finetune/lora_gpu — any causal LM by name, LoRA at full depth — carries what the CPU recipes learned: requests
    in words, the trie softmax, validation with the best state kept, the weight average, the transition prior and a
    time budget. Here on a tiny model, --bf16 false on a CPU."""
    from sid4llm.commands import finetune

    rec = finetune.trained_or_train(
        "finetune/lora_gpu", model_name_or_path=tiny_lm_dir, data_dir=chat_prepared["data_dir"],
        codebook=chat_prepared["codebook_dir"], output_dir=tmp_path / "gpu", bf16=False, use_cpu=True,
        num_train_epochs=1, min_steps=4, per_device_train_batch_size=8, request_examples=60, valid_users=10,
        transition_prior_users=10, history_token_budget=40, max_train_minutes=5, dataloader_num_workers=0,
        disable_tqdm=True, save_strategy="no")
    assert rec.config.trie_softmax and rec.decoder.trie_softmax and rec.config.peft
    assert rec.config.prompt.tasks == ["sequential", "requests"] and rec.has_words_path
    assert rec.results["validation"]["best"] and rec.results["training_plan"]["time_budget"]
    assert rec.transition_prior is not None and "transition_prior" in rec.results
    assert rec.config.training["training"]["weight_average_decay"] == 0.99
    reply = RecommendationPipeline(rec).chat([{"role": "user", "content": "Something funny?"}], k=3)
    assert len(reply["items"]) == 3
