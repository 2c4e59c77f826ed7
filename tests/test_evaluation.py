"""Recommendation metrics on hand-computed examples, the evaluate module, and the evaluation recipe."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sid4llm.evaluation import head_items, load_metric, most_popular_rankings, ranking_metrics

REPO = Path(__file__).resolve().parents[1]


def test_recall_ndcg_and_coverage_by_hand():
    ranked = [[3, 1, 4], [5, 9, 2], [7, 0, 6]]
    targets = [1, 8, 7]
    m = ranking_metrics(ranked, targets, n_items=10, ks=[1, 3])
    assert m["recall@1"] == pytest.approx(1 / 3)  # user 3 hits at rank 1
    assert m["recall@3"] == pytest.approx(2 / 3)  # user 1 at rank 2 too
    assert m["ndcg@3"] == pytest.approx((1 / math.log2(3) + 1.0) / 3)
    assert m["coverage@1"] == pytest.approx(3 / 10) and m["coverage@3"] == pytest.approx(9 / 10)


def test_head_and_tail_recall_split_users_by_target_popularity():
    popularity = np.array([100, 50, 1, 1, 1, 1, 1, 1, 1, 1])
    assert head_items(popularity, 0.2).tolist() == [True, True] + [False] * 8
    m = ranking_metrics([[0], [5], [2]], [0, 6, 2], 10, ks=[1], popularity=popularity)
    assert m["head_recall@1"] == 1.0 and m["tail_recall@1"] == 0.5


def test_mean_recommended_id_length():
    m = ranking_metrics([[0, 1], [1, 2]], [0, 0], 3, ks=[1, 2], id_lengths=np.array([1, 3, 5]))
    assert m["mean_recommended_id_length@1"] == 2.0 and m["mean_recommended_id_length@2"] == 3.0  # lengths 1, 3, 3, 5


def test_most_popular_floor_ranks_by_train_counts():
    popularity = np.array([5, 9, 1, 9])
    assert most_popular_rankings(popularity, [[0], [1, 3]], 3, exclude_seen=False) == [[1, 3, 0], [1, 3, 0]]
    assert most_popular_rankings(popularity, [[0], [1, 3]], 3) == [[1, 3, 2], [0, 2]]  # seen items left out


def test_quick_evaluations_sample_users_at_random_with_a_seed():
    from sid4llm.evaluation import sample_users

    sample = sample_users(1000, 50, seed=0)
    assert sample == sample_users(1000, 50, seed=0) and sample != sample_users(1000, 50, seed=1)
    assert len(set(sample)) == 50 and sample == sorted(sample) and sample != list(range(50))
    assert max(sample) > 500  # drawn from all users, not the first ones
    assert sample_users(30, None) == sample_users(30, 100) == list(range(30))


def test_evaluate_module_loads_offline_and_agrees():
    metric = load_metric()
    ranked, targets = [[3, 1, 4], [5, 9, 2]], [1, 7]
    out = metric.compute(predictions=ranked, references=targets, num_items=10, k_values=[1, 3])
    assert out == ranking_metrics(ranked, targets, 10, [1, 3])


@pytest.mark.slow  # a subprocess end to end
def test_evaluate_recipe_under_accelerate(tmp_path, tiny_lm_dir, tiny_prepared):
    from sid4llm.lm.models import ModelArguments
    from sid4llm.lm.tasks import TaskArguments
    from sid4llm.training import SidDataArguments, SidTrainingConfig, run_finetune

    out = tmp_path / "rec"
    run_finetune(ModelArguments(model_name_or_path=tiny_lm_dir, lora_r=4),
                 SidDataArguments(data_dir=tiny_prepared["data_dir"], codebook=tiny_prepared["codebook_dir"]),
                 TaskArguments(history_token_budget=30),
                 SidTrainingConfig(output_dir=str(out), max_steps=2, report_to="none", use_cpu=True, save_steps=100,
                                   disable_tqdm=True, eval_examples=0))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "recipes" / "accelerate_configs" / "cpu.yaml"), str(REPO / "recipes" / "evaluate.py"),
           "--model", str(out), "--data_dir", tiny_prepared["data_dir"], "--split", "test",
           "--output", str(tmp_path / "metrics.json"), "--k", "1", "5", "--invalid_rate_users", "8"]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    model = metrics["model"]
    assert model["n_users"] == 30 and model["invalid_rate_constrained"] == 0.0
    assert 0.0 <= model["invalid_rate_unconstrained"] <= 1.0
    assert metrics["exclude_seen"] is True  # the field's protocol by default, both ways in the JSON
    assert {"most_popular", "model_with_seen", "most_popular_with_seen"} <= set(metrics)
    assert 0 < model["coverage@5"] <= 1 and metrics["most_popular_with_seen"]["distinct_items@5"] == 5
    assert metrics["most_popular"]["distinct_items@5"] > 5  # with seen items left out, lists differ per user
    assert "| most_popular |" in result.stdout


def _script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_recall_vs_time_adds_a_new_run_to_an_already_merged_plot(tmp_path):
    script = _script("recall_vs_time")

    def curve(label: str) -> dict:
        return {"label": label, "dataset": "toy", "users": 10, "most_popular_recall@10": 0.1,
                "points": [{"minutes": 1.0, "step": 5, "recall@10": 0.2, "coverage@10": 0.5,
                            "most_popular_recall@10": 0.1}]}

    (tmp_path / "published.json").write_text(json.dumps({"curves": [curve("atomic"), curve("varlen")]}))
    (tmp_path / "new_run.json").write_text(json.dumps(curve("fixed")))
    out = tmp_path / "merged.json"
    script.merge_curves(script.CurveArguments(merge=[str(tmp_path / "published.json"), str(tmp_path / "new_run.json")],
                                              json=str(out)))
    assert [c["label"] for c in json.loads(out.read_text())["curves"]] == ["atomic", "varlen", "fixed"]

    (tmp_path / "metrics.json").write_text(json.dumps({"model": {"recall@10": 0.2}}))
    with pytest.raises(ValueError, match="metrics.json: not a curve"):
        script.merge_curves(script.CurveArguments(merge=[str(tmp_path / "metrics.json")]))


def test_budget_points_make_a_curve_of_whole_runs_that_recall_vs_time_can_merge(tmp_path):
    points, merge = _script("budget_points"), _script("recall_vs_time")

    def run_and_test(name: str, seconds: float, recall: float) -> list[str]:
        (tmp_path / f"{name}_run.json").write_text(json.dumps({"metrics": {"train_runtime": seconds},
                                                               "validation": {"best": {"step": 7}}}))
        model = {"recall@10": recall, "ndcg@10": recall / 2, "coverage@10": 0.5, "n_users": 40}
        (tmp_path / f"{name}_test.json").write_text(json.dumps({"model": model, "most_popular": {"recall@10": 0.05},
                                                                "transition_prior_weight": 0.3}))
        return [str(tmp_path / f"{name}_run.json"), str(tmp_path / f"{name}_test.json")]

    long, short = run_and_test("long", 1800, 0.3), run_and_test("short", 600, 0.2)
    out = tmp_path / "curve.json"
    curve = points.main(["--runs", long[0], short[0], "--tests", long[1], short[1], "--label", "budgets",
                         "--dataset", "toy", "--json", str(out)])
    assert [(p["minutes"], p["recall@10"]) for p in curve["points"]] == [(10.0, 0.2), (30.0, 0.3)]  # by minutes
    assert curve["points"][0]["transition_prior_weight"] == 0.3 and curve["most_popular_recall@10"] == 0.05
    merged = tmp_path / "merged.json"
    merge.merge_curves(merge.CurveArguments(merge=[str(out)], json=str(merged)))
    assert json.loads(merged.read_text())["curves"][0]["label"] == "budgets"

    with pytest.raises(SystemExit):  # one test file per run
        points.main(["--runs", long[0], "--tests", long[1], short[1], "--label", "x", "--dataset", "toy",
                     "--json", str(out)])
    with pytest.raises(SystemExit, match="long_test.json.*missing"):  # the file named, not a KeyError
        points.main(["--runs", long[1], "--tests", long[1], "--label", "x", "--dataset", "toy", "--json", str(out)])


def test_classical_baselines_find_what_follows_what_and_never_list_seen_items(tmp_path, tiny_prepared, capsys):
    script = _script("classical_baselines")
    # item 9 always follows item 4 in train histories: a transition count finds it, whatever its popularity
    _, transitions = script.item_counts([[4, 9, 1], [2, 4, 9], [4, 9], [3, 1, 2]], n_items=10, span=1)
    assert transitions[4].argmax() == 9 and transitions[4, 9] == 1.0
    assert script.rank_by_votes(transitions, [[3, 4]], k=2, recent=1, decay=0.9)[0][0] == 9
    assert 4 not in script.rank_by_votes(transitions, [[4, 9]], k=3, recent=2, decay=0.9)[0]  # seen left out

    out = tmp_path / "classical.json"
    result = script.main(script.BaselineArguments(data_dir=tiny_prepared["data_dir"], json=str(out)))
    test = result["results"]["test"]
    assert set(test) == {"most_popular", "item_cosine", "item_transitions"}
    assert test["most_popular"]["n_users"] == 30 and 0.0 <= test["item_transitions"]["recall@10"] <= 1.0
    assert json.loads(out.read_text())["settings"]["recent"] == 5
    assert "| test | item_transitions |" in capsys.readouterr().out


def test_paired_compare_scores_two_recommenders_on_the_same_users(tmp_path, trained_dir, tiny_prepared, capsys):
    """A recommender against itself: the same recall, a zero difference, and the interval says level."""
    script = _script("paired_compare")
    out = tmp_path / "paired.json"
    result = script.main(script.PairedArguments(model_a=trained_dir, model_b=trained_dir,
                                                data_dir=tiny_prepared["data_dir"], k=5, resamples=50, json=str(out)))
    assert result["users"] == 30 and result["recall@5_a"] == result["recall@5_b"]
    assert result["recall@5"]["difference"] == 0.0 and script.interval_verdict(result["recall@5"]) == "level"
    assert json.loads(out.read_text())["model_a"] == trained_dir
    assert "| recall@5 |" in capsys.readouterr().out


def test_bench_finetune_profiles_the_last_steps_and_times_the_others(tmp_path, tiny_prepared):
    from sid4llm.lm.models import ModelArguments
    from sid4llm.lm.tasks import TaskArguments
    from sid4llm.training import SidDataArguments, SidTrainingConfig

    script = _script("bench_finetune")
    args = (ModelArguments(from_scratch=True, scratch_hidden_size=32, scratch_layers=1),
            SidDataArguments(data_dir=tiny_prepared["data_dir"], codebook=tiny_prepared["codebook_dir"]),
            TaskArguments(tasks=["sequential"], history_token_budget=40),
            SidTrainingConfig(output_dir=str(tmp_path / "out"), max_steps=6, per_device_train_batch_size=4,
                              report_to="none", use_cpu=True, disable_tqdm=True, save_strategy="no"))
    rows = script.main(*args, script.BenchArguments(json=str(tmp_path / "bench.json"), warmup_steps_excluded=1,
                                                    profile_steps=2, profile_top=5))
    assert rows[0]["timed_steps"] == 3  # 6 steps: 1 untimed, 3 timed, the last 2 profiled
    ops = rows[0]["profile_top_ops"]
    assert 0 < len(ops) <= 5 and all(o["calls"] > 0 and 0 < o["share"] <= 1 for o in ops)
    assert [o["self_ms"] for o in ops] == sorted((o["self_ms"] for o in ops), reverse=True)
    assert json.loads((tmp_path / "bench.json").read_text())["rows"][0]["profile_top_ops"] == ops
    with pytest.raises(SystemExit, match="leaves no timed steps"):
        script.main(*args, script.BenchArguments(warmup_steps_excluded=1, profile_steps=5))


def test_refit_prior_writes_a_copy_with_the_co_occurrence_term_and_leaves_the_model_as_it_was(tmp_path, trained_dir,
                                                                                             tiny_prepared):
    """``scripts/refit_prior.py``: a decoding change measured on a trained model without training it again."""
    from sid4llm.lm.recommender import SidRecommender

    before = sorted(p.name for p in Path(trained_dir).iterdir())
    summary = _script("refit_prior").main(["--model", trained_dir, "--data_dir", tiny_prepared["data_dir"],
                                           "--output_dir", str(tmp_path / "refit"), "--transition_prior_users", "8",
                                           "--transition_prior_weights", "0.5", "2.0",
                                           "--transition_prior_cooccurrence", "0.5", "1.0"])
    assert sorted(p.name for p in Path(trained_dir).iterdir()) == before
    refit = SidRecommender.from_pretrained(tmp_path / "refit")
    assert refit.transition_prior.has_cooccurrence and refit.results["transition_prior"] == summary
    assert refit.transition_prior.weight == summary["weight"]
    assert refit.transition_prior.config.cooccurrence_weight == summary["cooccurrence_weight"]
    assert set(summary["valid_recall@10_by_cooccurrence_weight"]) == {"0", "0.5", "1"}
    assert len(refit.recommend([[0, 1]], k=3)[0]) == 3
