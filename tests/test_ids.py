"""Semantic IDs: the dVAE's loss and length distribution, the baselines, the codebook artefact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sid4llm.ids import (
    DiscreteVAE,
    DVAEConfig,
    IdInputError,
    IdTrainingArguments,
    ReinforceConfig,
    ReinforceSenderReceiver,
    RQKMeansConfig,
    SemanticIdCodebook,
    disambiguate,
    train_semantic_ids,
)
from sid4llm.ids.modules import length_log_probs

REPO = Path(__file__).resolve().parents[1]


def unit_vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def zipf_popularity(n: int) -> np.ndarray:
    return np.maximum(1, 3000 / (np.arange(n) + 1) ** 1.3).astype(np.int64)


def tiny_dvae(**overrides) -> DVAEConfig:
    values = {"vocab_size": 16, "max_length": 4, "hidden_dim": 32, "heads": 2, **overrides}
    return DVAEConfig(**values)


def test_length_distribution_sums_to_one():
    stop_logits = torch.randn(7, 4) * 3
    q = length_log_probs(stop_logits).exp()
    assert q.shape == (7, 5)
    torch.testing.assert_close(q.sum(1), torch.ones(7))
    # q(len=1) is exactly the first stop probability
    torch.testing.assert_close(q[:, 0], torch.sigmoid(stop_logits[:, 0]))


def test_loss_terms_are_finite_and_non_negative():
    torch.manual_seed(0)
    model = DiscreteVAE(tiny_dvae(), input_dim=8)
    x = torch.from_numpy(unit_vectors(32, 8))
    out = model.training_loss(x, progress=5.0)  # schedules finished: β > 0, τ at its end value
    assert all(torch.isfinite(v).all() for v in out.values())
    assert out["recon"] >= 0 and out["token_kl"] >= 0
    assert 1.0 <= out["mean_length"] <= 4.0
    assert out["beta"] == pytest.approx(2e-3) and out["tau"] == pytest.approx(0.6)


@pytest.mark.parametrize("model_cls,config", [
    (DiscreteVAE, tiny_dvae()),
    (DiscreteVAE, tiny_dvae(variable_length=False)),
    (ReinforceSenderReceiver, ReinforceConfig(vocab_size=16, max_length=4, hidden_dim=32, heads=2)),
])
def test_gradients_reach_every_parameter(model_cls, config):
    torch.manual_seed(0)
    model = model_cls(config, input_dim=8)
    x = torch.from_numpy(unit_vectors(64, 8))
    model.training_loss(x, progress=0.5)  # one step to move the REINFORCE baseline off zero
    model.zero_grad()
    model.training_loss(x, progress=0.5)["loss"].backward()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []


def test_inference_is_deterministic():
    torch.manual_seed(0)
    model = DiscreteVAE(tiny_dvae(), input_dim=8).eval()
    x = torch.from_numpy(unit_vectors(50, 8))
    codes_a, len_a = model.encode(x)
    codes_b, len_b = model.encode(x)
    assert torch.equal(codes_a, codes_b) and torch.equal(len_a, len_b)
    assert ((len_a >= 1) & (len_a <= 4)).all()


def test_popular_items_get_shorter_codes_on_a_skewed_catalogue():
    x, pop = unit_vectors(120, 16), zipf_popularity(120)
    config = tiny_dvae(length_cost=6.0, beta=0.005, anneal_fraction=0.05)
    codebook = train_semantic_ids(x, pop, config, IdTrainingArguments(max_steps=300, batch_size=256, log_every=100))
    lengths = codebook.code_lengths
    head, tail = lengths[:12].mean(), lengths[60:].mean()  # the 10 % most popular vs the rarer half
    assert head + 0.5 < tail, (head, tail)
    assert codebook.metrics["spearman_length_popularity"] < 0
    assert codebook.metrics["median_popularity_by_length"][1] > codebook.metrics["median_popularity_by_length"][4]


def test_fixed_length_dvae_gives_every_item_max_length():
    codebook = train_semantic_ids(unit_vectors(40, 8), zipf_popularity(40), tiny_dvae(variable_length=False),
                                  IdTrainingArguments(max_steps=5, batch_size=32))
    assert set(codebook.code_lengths.tolist()) == {4}
    assert codebook.metrics["spearman_length_popularity"] is None


def test_rqkmeans_reconstruction_improves_with_each_level():
    x = unit_vectors(300, 8)
    codebook = train_semantic_ids(x, np.ones(300, dtype=np.int64), RQKMeansConfig(vocab_size=8, max_length=3),
                                  IdTrainingArguments())
    errors = codebook.metrics["recon_mse_at_length"]
    assert errors[0] > errors[1] > errors[2]
    assert codebook.metrics["codebook_usage"][0] == 1.0
    again = train_semantic_ids(x, np.ones(300, dtype=np.int64), RQKMeansConfig(vocab_size=8, max_length=3),
                               IdTrainingArguments())
    assert again.sequences == codebook.sequences


def test_collisions_get_disambiguation_tokens_by_popularity():
    codes = [(1, 2), (1, 2), (3,), (1, 2)]
    assert disambiguate(codes, [5, 9, 1, 9]).tolist() == [2, 0, 0, 1]  # ties: lower index first
    codebook = SemanticIdCodebook.from_codes(["a", "b", "c", "d"], np.array([[1, 2], [1, 2], [3, 0], [1, 2]]),
                                             np.array([2, 2, 1, 2]), [5, 9, 1, 9], DVAEConfig(vocab_size=4))
    assert codebook.sequences == [(1, 2, 5), (1, 2), (3,), (1, 2, 4)]  # V=4: disambiguation k -> 4 + k - 1
    assert len(set(codebook.sequences)) == 4
    assert codebook.item_for((1, 2, 4)) == "d" and codebook.item_for((9,)) is None


def test_every_id_is_unique_after_training():
    codebook = train_semantic_ids(unit_vectors(200, 8), zipf_popularity(200), tiny_dvae(vocab_size=4, max_length=2),
                                  IdTrainingArguments(max_steps=10, batch_size=64))
    assert codebook.metrics["collision_rate_before_dedup"] > 0  # 200 items, 4 + 16 codes: collisions are certain
    assert len(set(codebook.sequences)) == 200 and codebook.metrics["unique_ids"] == 1.0


def test_save_and_load_round_trip_gives_identical_ids(tmp_path):
    x, pop = unit_vectors(60, 8), zipf_popularity(60)
    codebook = train_semantic_ids(x, pop, tiny_dvae(), IdTrainingArguments(max_steps=20, batch_size=64),
                                  item_ids=[f"item{i}" for i in range(60)], titles=[f"Title {i}" for i in range(60)])
    codebook.save_pretrained(tmp_path / "cb")
    assert not list((tmp_path / "cb").glob("*.bin")) and not list((tmp_path / "cb").glob("*.pkl"))
    loaded = SemanticIdCodebook.from_pretrained(tmp_path / "cb")
    assert loaded.sequences == codebook.sequences and loaded.item_ids == codebook.item_ids
    assert loaded.titles == codebook.titles and loaded.config == codebook.config
    codes, lengths = loaded.encode(x)
    fresh = SemanticIdCodebook.from_codes(loaded.item_ids, codes, lengths, pop, loaded.config)
    assert fresh.sequences == codebook.sequences  # the saved encoder reproduces every ID


def test_atomic_ids_give_every_item_a_token_of_its_own(tmp_path):
    from sid4llm.ids import AtomicConfig

    x, pop = unit_vectors(30, 8), zipf_popularity(30)
    codebook = train_semantic_ids(x, pop, AtomicConfig(), IdTrainingArguments())
    assert codebook.sequences == [(i,) for i in range(30)] and codebook.vocab_size == 30
    assert codebook.num_disambiguation_tokens == 0 and codebook.metrics["recon_mse_uniform"] is None
    codebook.save_pretrained(tmp_path / "atomic")
    loaded = SemanticIdCodebook.from_pretrained(tmp_path / "atomic")
    assert loaded.sequences == codebook.sequences and loaded.config.method == "atomic"
    with pytest.raises(IdInputError, match="cannot encode new items"):
        loaded.add_items(["new"], x[:1])


def test_new_items_are_appended_without_changing_existing_ids():
    x, pop = unit_vectors(50, 8), zipf_popularity(50)
    codebook = train_semantic_ids(x[:40], pop[:40], tiny_dvae(), IdTrainingArguments(max_steps=10, batch_size=32))
    before = list(codebook.sequences)
    new_ids = codebook.add_items([f"new{i}" for i in range(10)], x[40:])
    assert codebook.sequences[:40] == before
    assert codebook.sequences[40:] == new_ids and len(set(codebook.sequences)) == 50
    assert codebook.item_for(new_ids[3]) == "new3"


def test_push_to_hub_sends_the_saved_folder_as_one_commit(fake_hub):
    codebook = train_semantic_ids(unit_vectors(20, 8), zipf_popularity(20), tiny_dvae(),
                                  IdTrainingArguments(max_steps=3, batch_size=16))
    assert codebook.push_to_hub("me/ids", private=True).endswith("/commit/1")
    assert fake_hub.repos == [("me/ids", True)]
    (commit,) = fake_hub.commits
    assert sorted(commit["files"]) == ["README.md", "codebook_config.json", "codes.safetensors", "encoder.safetensors",
                                       "items.json", "metrics.json"]
    assert "library_name: sid4llm" in commit["files"]["README.md"].decode()


@pytest.mark.parametrize("embeddings,message", [
    (np.full((3, 4), np.nan, dtype=np.float32), "NaN"),
    (np.zeros((0, 4), dtype=np.float32), "empty catalogue"),
    (np.ones(4, dtype=np.float32), "2-D"),
])
def test_bad_embeddings_are_clear_errors(embeddings, message):
    with pytest.raises(IdInputError, match=message):
        train_semantic_ids(embeddings, np.ones(len(np.atleast_2d(embeddings)), dtype=np.int64), tiny_dvae(),
                           IdTrainingArguments(max_steps=1))


def test_bad_configs_and_mismatches_are_clear_errors():
    with pytest.raises(IdInputError, match="vocab_size must be >= 2"):
        DVAEConfig(vocab_size=1)
    with pytest.raises(IdInputError, match="3 popularity counts for 5 embeddings"):
        train_semantic_ids(unit_vectors(5, 4), np.ones(3, dtype=np.int64), tiny_dvae(), IdTrainingArguments(max_steps=1))
    codebook = train_semantic_ids(unit_vectors(20, 8), zipf_popularity(20), tiny_dvae(), IdTrainingArguments(max_steps=2))
    with pytest.raises(IdInputError, match="dimension mismatch: the model expects 8, got 5"):
        codebook.encode(unit_vectors(3, 5))


@pytest.mark.slow  # a subprocess end to end
def test_train_ids_recipe_end_to_end(tmp_path, tiny_encoder_dir, isolated_cache):
    import pandas as pd
    from conftest import make_events

    from sid4llm.data import PrepareDataArguments, prepare_dataset

    pd.DataFrame(make_events(n_users=30, n_items=12), columns=["user_id", "item_id", "timestamp"]).to_csv(
        tmp_path / "events.csv", index=False)
    pd.DataFrame({"item_id": [f"i{i}" for i in range(12)], "title": [f"movie {i} drama" for i in range(12)]}).to_csv(
        tmp_path / "items.csv", index=False)
    data_dir = prepare_dataset(PrepareDataArguments(output_dir=str(tmp_path / "data"), dataset=str(tmp_path / "events.csv"),
                                                    item_file=str(tmp_path / "items.csv"), encoder=tiny_encoder_dir))
    out = tmp_path / "ids"
    cmd = [sys.executable, str(REPO / "recipes" / "train_ids.py"), "--config",
           "ids/varlen_dvae", "--data_dir", str(data_dir),
           "--output_dir", str(out), "--max_steps", "4", "--batch_size", "32", "--vocab_size", "8",
           "--collaborative_weight", "0"]  # text only: the co-occurrence of 30 tiny users can keep 4 steps apart
    env = {**__import__("os").environ, "TQDM_DISABLE": "1"}
    # 4 steps on 12 items collapse: an error that says what to change, and no codebook to fine-tune on
    failed = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert failed.returncode == 1
    assert "error: the codebook collapsed: codebook usage" in failed.stderr and "--allow_collapse" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert "codes per item" in failed.stdout and "COLLAPSED" in failed.stdout  # the summary still printed
    assert not (out / "codebook").exists() and (out / "collapse_report.json").is_file()

    subprocess.run(cmd + ["--allow_collapse"], check=True, capture_output=True, text=True, env=env)
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("recon_mse_uniform", "recon_mse_unigram", "recon_mse_at_length", "mean_length_uniform",
                "mean_length_unigram", "length_histogram", "spearman_length_popularity", "codebook_usage",
                "codebook_perplexity", "collision_rate_before_dedup", "unique_ids", "train_seconds", "collapse"):
        assert key in metrics, key
    assert metrics["vocab_size"] == 8 and metrics["unique_ids"] == 1.0  # the flag overrode the YAML
    assert metrics["collapse"]  # saved on request, still marked
    assert (out / "length_vs_popularity.png").stat().st_size > 1000
    codebook = SemanticIdCodebook.from_pretrained(out / "codebook")
    assert len(codebook) == 12 and codebook.titles[0] == "movie 0 drama"


def test_training_steps_do_not_shrink_with_the_dataset():
    args = IdTrainingArguments(epochs=2, batch_size=1024, min_steps=2000)
    assert args.total_steps(90_000) == 2000  # 2 epochs would be 176 steps
    assert args.total_steps(2_000_000) == 3908  # large datasets: epochs decide
    assert IdTrainingArguments(max_steps=7, min_steps=2000).total_steps(10**6) == 7


def test_collapse_is_named_for_low_usage_and_one_code_ids():
    from sid4llm.ids import collapse_problems

    healthy = {"method": "dvae", "variable_length": True, "vocab_size": 256, "codebook_usage_overall": 0.98,
               "mean_length_uniform": 2.9, "num_disambiguation_tokens": 3, "n_items": 3500, "max_length": 4}
    assert collapse_problems(healthy, 0.5, 1.5) == []
    one_code = {**healthy, "codebook_usage_overall": 0.125, "mean_length_uniform": 1.0, "num_disambiguation_tokens": 441}
    problems = collapse_problems(one_code, 0.5, 1.5)
    assert "codebook usage 0.125: only 32 of 256 codes in use (expected at least 0.5 × 256)" in problems[0]
    assert "mean length 1.00 codes per item < 1.5 (441 disambiguation tokens needed)" in problems[1]
    assert collapse_problems({**one_code, "variable_length": False}, 0.5, 1.5) == problems[:1]
    # 12 items can use at most 48 of 256 codes: 30 in use is healthy there
    assert collapse_problems({**healthy, "n_items": 12, "codebook_usage_overall": 30 / 256}, 0.5, 1.5) == []


def shipped_varlen_config(**overrides) -> tuple[IdTrainingArguments, DVAEConfig]:
    from sid4llm.cli import load_arguments

    return load_arguments((IdTrainingArguments, DVAEConfig), "ids/varlen_dvae", **overrides)


@pytest.mark.slow
def test_shipped_varlen_config_is_healthy_on_movielens_100k(tmp_path, isolated_cache):
    """The bundled MovieLens-100k (97k train events, the size of the dataset a user met the 1-code collapse on):
    two epochs alone (the old rule, 192 steps) collapse, and that is an error; the shipped 2,000-step floor gives
    a healthy codebook with popular items shorter (at batch 128 to keep the suite fast; docs/ids.md has the run
    at the shipped batch). Random synthetic vectors did not show either effect: text embeddings' shared
    structure is what collapses, and what lets popular items share short codes."""
    from sid4llm.data import PrepareDataArguments, PreparedData, prepare_dataset
    from sid4llm.ids import CodebookCollapseError, save_training_outputs

    data = PreparedData.load(prepare_dataset(PrepareDataArguments(output_dir=str(tmp_path / "ml100k"), dataset="ml-100k")))
    x, pop = data.item_embeddings(), data.item_popularity
    histories = data.train_histories()  # the shipped IDs read item co-occurrence beside the text
    args, config = shipped_varlen_config(min_steps=0)  # the old rule: epochs alone
    collapsed = train_semantic_ids(x, pop, config, args, histories=histories)
    assert collapsed.metrics["train_steps"] == 192 and collapsed.metrics["collapse"]
    with pytest.raises(CodebookCollapseError, match="the codebook collapsed"):
        save_training_outputs(collapsed, tmp_path / "ids")
    assert not (tmp_path / "ids" / "codebook").exists()

    args, config = shipped_varlen_config(batch_size=128)
    codebook = train_semantic_ids(x, pop, config, args, histories=histories)
    m = codebook.metrics
    assert m["train_steps"] == args.min_steps == 2000 and m["collapse"] == []
    assert m["codebook_usage_overall"] >= 0.9
    assert m["mean_length_uniform"] >= 2.0  # no 1-code collapse
    order = np.argsort(-pop)  # popular items get shorter codes
    lengths = codebook.code_lengths
    head, tail = lengths[order[: len(pop) // 10]].mean(), lengths[order[len(pop) // 2:]].mean()
    assert head + 0.3 < tail, (head, tail)
    assert m["spearman_length_popularity"] < -0.2


def test_a_finished_id_run_is_reused_only_with_the_same_settings(tmp_path, tiny_prepared, monkeypatch):
    """What the quickstart and the reproduction rely on to resume: the same flags load the saved codebook;
    another method setting or step count trains again instead of reusing stale IDs."""
    from sid4llm.commands import train_ids

    def settings(**changes) -> dict:
        return {"method": "rqkmeans", "data_dir": tiny_prepared["data_dir"], "output_dir": tmp_path / "ids",
                "vocab_size": 4, "max_length": 2, "allow_collapse": True, "plot": False, **changes}

    first = train_ids.trained_or_train(**settings())
    trained = []
    real_main = train_ids.main
    monkeypatch.setattr(train_ids, "main", lambda *a, **k: trained.append(a) or real_main(*a, **k))
    again = train_ids.trained_or_train(**settings())
    assert trained == [] and again.sequences == first.sequences  # loaded, not retrained
    train_ids.trained_or_train(**settings(max_length=3))
    assert len(trained) == 1  # another setting: trained again
    mixed = train_ids.trained_or_train(**settings(max_length=3, collaborative_weight=0.5, collaborative_dim=2))
    assert len(trained) == 2 and mixed.collaborative is not None  # another input: trained again
    train_ids.trained_or_train(**settings(max_length=3, collaborative_weight=0.5, collaborative_dim=2))
    assert len(trained) == 2


def two_taste_histories(n_users: int = 60, seed: int = 0) -> list[list[int]]:
    """Items 0-9 and 10-19 are two tastes: each user's history stays inside one of them."""
    rng = np.random.default_rng(seed)
    return [list(rng.choice(10, size=8) + 10 * (u % 2)) for u in range(n_users)]


def test_cooccurrence_embeddings_place_items_consumed_together_close():
    from sid4llm.ids import cooccurrence_embeddings

    emb = cooccurrence_embeddings(two_taste_histories(), n_items=21, dim=4)
    similarity = emb @ emb.T
    within = similarity[:10, :10][~np.eye(10, dtype=bool)].mean()
    across = similarity[:10, 10:20].mean()
    assert within > across + 0.5, (within, across)
    assert np.allclose(np.linalg.norm(emb[:20], axis=1), 1.0, atol=1e-5)
    assert not emb[20].any()  # never consumed: no co-occurrence
    with pytest.raises(IdInputError, match="history 0: item index out of range"):
        cooccurrence_embeddings([[0, 99]], n_items=21)


def test_collaborative_ids_save_and_take_text_only_embeddings_for_new_items(tmp_path):
    """IDs trained on text + co-occurrence: the codebook keeps the text → co-occurrence map, so a loaded copy
    encodes a new item from its text alone, exactly as the trained one does."""
    x, histories = unit_vectors(21, 8), two_taste_histories()
    pop = np.bincount(np.concatenate(histories), minlength=21)
    args = IdTrainingArguments(max_steps=20, batch_size=64, collaborative_weight=0.8, collaborative_dim=4)
    with pytest.raises(IdInputError, match="needs the train histories"):
        train_semantic_ids(x, pop, tiny_dvae(), args)
    codebook = train_semantic_ids(x, pop, tiny_dvae(), args, histories=histories)
    assert codebook.embedding_dim == 8 and codebook.model.input_dim == 12  # text dim in, mixed dim inside
    assert codebook.metrics["collaborative"] == {"weight": 0.8, "dim": 4, "window": 10}
    codebook.save_pretrained(tmp_path / "cb")
    loaded = SemanticIdCodebook.from_pretrained(tmp_path / "cb")
    new = unit_vectors(3, 8, seed=5)
    assert torch.equal(loaded.encode(new)[0], codebook.encode(new)[0])
    assert len(loaded.add_items(["n0", "n1", "n2"], new)) == 3
    with pytest.raises(IdInputError, match="expects 8, got 12"):
        loaded.encode(unit_vectors(2, 12))
    assert "co-occurrence" in (tmp_path / "cb" / "README.md").read_text()


def test_collaborative_weight_must_leave_room_for_text():
    with pytest.raises(IdInputError, match="collaborative_weight must be in"):
        IdTrainingArguments(collaborative_weight=1.0)


def test_a_catalogue_too_large_for_dense_cooccurrence_embeds_its_most_consumed_items(monkeypatch):
    """Past MAX_ITEMS the co-occurrence embedding covers the most consumed items; the tail gets its part
    predicted from text, as cold items do, instead of the run failing."""
    from sid4llm.ids import collaborative

    monkeypatch.setattr(collaborative, "MAX_ITEMS", 12)
    histories = [h + [20] for h in two_taste_histories()]  # item 20 is the most consumed
    counts = np.bincount(np.concatenate(histories), minlength=21)
    head = set(np.argsort(-counts, kind="stable")[:12].tolist())
    text = unit_vectors(21, 8)
    mixer, mixed = collaborative.CollaborativeInput.fit(text, histories, collaborative.CollaborativeSettings(dim=4))
    from_text_alone = mixer.mix(text)
    tail = [i for i in range(21) if i not in head]
    assert 20 in head and np.allclose(mixed[tail], from_text_alone[tail], atol=1e-6)
    assert not np.allclose(mixed[sorted(head)], from_text_alone[sorted(head)], atol=1e-3)
    assert np.allclose(np.linalg.norm(mixed, axis=1), 1.0, atol=1e-5)
    with pytest.raises(IdInputError, match="21 items: the co-occurrence embedding is built densely"):
        collaborative.cooccurrence_embeddings(histories, n_items=21)
