"""Training computes the last decoder layer only where the loss reads it: the loss and every gradient are those of the
full forward, on packed rows, for the decoder layers it knows; any other model runs as it is."""

from __future__ import annotations

import json
from contextlib import nullcontext

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from sid4llm.lm.models import ModelArguments
from sid4llm.lm.tasks import TaskArguments
from sid4llm.training import SidDataArguments, SidTrainingConfig, run_finetune, scored_positions
from sid4llm.training.scored_positions import last_layer_at_scored_positions

SMALL = {"vocab_size": 97, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
         "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 128}


def packed_batch(seed: int = 0, rows: int = 3, length: int = 40):
    """Rows of segments of random lengths (position_ids restart at each), about half the positions scored."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, SMALL["vocab_size"], (rows, length), generator=g)
    position_ids = torch.zeros(rows, length, dtype=torch.long)
    for r in range(rows):
        p = 0
        while p < length:
            n = int(torch.randint(3, 17, (1,), generator=g))
            position_ids[r, p:p + n] = torch.arange(min(n, length - p))
            p += n
    scored = torch.rand(rows, length, generator=g) < 0.5
    scored[-1] = False  # a row the loss does not read at all
    return input_ids, position_ids, scored


def loss_and_grads(model, input_ids, position_ids, scored, selective: bool):
    model.zero_grad()
    with last_layer_at_scored_positions(model, scored) if selective else nullcontext(False) as on:
        hidden = model(input_ids=input_ids, position_ids=position_ids, output_hidden_states=True,
                       use_cache=False, logits_to_keep=1).hidden_states[-1]
    loss = (model.get_output_embeddings()(hidden[scored]).log_softmax(-1)[:, 5]).sum()
    loss.backward()
    return on, loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("model_type,layers,extra", [("llama", 1, {}), ("llama", 2, {}), ("mistral", 2, {"sliding_window": 6}),
                                                     ("qwen2", 2, {"attention_bias": True})])
def test_the_selective_last_layer_gives_the_full_forwards_loss_and_gradients(model_type, layers, extra):
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, num_hidden_layers=layers, **SMALL, **extra)
    if model_type == "qwen2":
        config.use_sliding_window = False
    model = AutoModelForCausalLM.from_config(config)
    batch = packed_batch()
    _, full_loss, full_grads = loss_and_grads(model, *batch, selective=False)
    on, loss, grads = loss_and_grads(model, *batch, selective=True)
    assert on
    torch.testing.assert_close(loss, full_loss, rtol=1e-5, atol=1e-5)
    assert grads.keys() == full_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, full_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    # The layer is itself again afterwards.
    assert "forward" not in vars(model.model.layers[-1])


def test_a_model_whose_layers_it_does_not_know_runs_as_it_is():
    torch.manual_seed(0)
    config = AutoConfig.for_model("gpt2", vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=128,
                                  bos_token_id=1, eos_token_id=2)
    model = AutoModelForCausalLM.from_config(config).eval()
    input_ids, _, scored = packed_batch()
    with last_layer_at_scored_positions(model, scored) as on:
        out = model(input_ids=input_ids).logits
    assert not on
    torch.testing.assert_close(out, model(input_ids=input_ids).logits)


def test_the_last_layer_skips_the_unscored_positions_work():
    """What it buys: the MLP of the last layer sees only the scored positions."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", num_hidden_layers=1, **SMALL))
    input_ids, position_ids, scored = packed_batch()
    seen = []
    hook = model.model.layers[-1].mlp.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[:-1].numel()))
    with last_layer_at_scored_positions(model, scored):
        model(input_ids=input_ids, position_ids=position_ids, use_cache=False)
    hook.remove()
    assert seen == [int(scored.sum())]


def test_a_finetune_learns_the_same_with_the_last_layer_at_the_scored_positions_only(tmp_path, tiny_lm_dir, tiny_prepared,
                                                                                    monkeypatch):
    """The quickstart's shape (the first layer of a Llama, trained in an adapter, ID streams and words): the losses
    of every step and the trained weights are those of the full forward."""
    selective_calls = []
    layer_at = scored_positions.layer_at
    monkeypatch.setattr(scored_positions, "layer_at", lambda *a: selective_calls.append(1) or layer_at(*a))
    runs = {}
    for selective in (False, True):
        out = tmp_path / str(selective)
        rec = run_finetune(
            ModelArguments(model_name_or_path=tiny_lm_dir, pretrained_layers=1, use_peft=True, peft_layers="full"),
            SidDataArguments(data_dir=tiny_prepared["data_dir"], codebook=tiny_prepared["codebook_dir"]),
            TaskArguments(tasks=["sequential", "requests"], request_examples=40, history_token_budget=40,
                          max_seq_length=128),
            SidTrainingConfig(output_dir=str(out), max_steps=4, per_device_train_batch_size=4, learning_rate=5e-3,
                              logging_steps=1, save_steps=1000, report_to="none", use_cpu=True, seed=0,
                              disable_tqdm=True, eval_examples=0, last_layer_at_targets=selective))
        losses = [h["loss"] for h in _log(out) if "loss" in h]
        runs[selective] = losses, {n: p.detach().clone() for n, p in rec.model.named_parameters()}
    (full_losses, full_weights), (losses, weights) = runs[False], runs[True]
    assert len(losses) == 4 and len(selective_calls) == 4  # one selective forward per step, only when asked
    assert losses == pytest.approx(full_losses, rel=1e-4)
    for name, weight in weights.items():
        torch.testing.assert_close(weight, full_weights[name], rtol=1e-4, atol=1e-5, msg=name)


def _log(output_dir) -> list[dict]:
    return json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
