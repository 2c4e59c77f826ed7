"""The paper-reproduction protocol end to end on the tiny dataset (the real run is documented in docs/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a subprocess end to end
def test_protocol_runs_every_method_seed_and_budget_and_reports_each_claim(tmp_path, tiny_lm_dir, tiny_prepared):
    out = tmp_path / "paper"
    cmd = [sys.executable, str(REPO / "recipes" / "reproduce_paper.py"), "--data_dir", tiny_prepared["data_dir"],
           "--output_dir", str(out), "--seeds", "0", "1", "--length_costs", "3", "6", "--main_length_cost", "6",
           "--later_seed_methods", "varlen", "fixed", "rqkmeans", "reinforce", "--rec_sets", "varlen", "fixed", "rqkmeans", "reinforce", "--id_steps", "3", "--id_vocab_size", "4",
           "--rec_epochs", "1", "--budget", "20", "--budgets", "10", "20", "--eval_users", "5", "--num_beams", "4",
           "--bootstrap_resamples", "50", "--cold_start_fraction", "0.25",
           "--llm_steps", "1", "--llm_eval_users", "3", "--model_name_or_path", tiny_lm_dir]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    assert sorted(results["ids"]) == sorted(f"{m}_s{s}" for m in ("varlen_c3", "varlen_c6", "fixed", "rqkmeans", "reinforce")
                                            for s in (0, 1))
    assert {(r["name"], r["seed"]) for r in results["recommenders"]} == {
        (m, s) for m in ("varlen_c6", "varlen_c3", "fixed", "rqkmeans", "reinforce") for s in (0, 1)}
    assert {(r["name"], r["budget"]) for r in results["budget_sweep"]} == {
        (m, b) for m in ("varlen_c6", "fixed") for b in (10, 20)}
    assert [r["name"] for r in results["llm"]] == ["varlen_c6", "fixed"]
    for r in results["recommenders"] + results["llm"]:
        assert r["invalid_rate_constrained"] == 0 and r["history_tokens_used"] <= r["budget"]
    fixed = next(r for r in results["recommenders"] if r["name"] == "fixed")
    assert fixed["mean_recommended_id_length@10"] >= 4  # fixed IDs: every code, plus a disambiguation token at times

    paired = {(p["b"], p["budget"]): p for p in results["claim2_paired"]}
    assert set(paired) == {("fixed", 10), ("fixed", 20), ("rqkmeans", 20)}
    for p in paired.values():  # the same 5 users for both methods; an interval around the observed difference
        assert p["users"] == 5 and p["recall@10"]["low"] <= p["recall@10"]["difference"] <= p["recall@10"]["high"]
        assert p["verdict_recall"] in ("ahead", "behind", "level")
    assert all(r["epochs"] == 1.0 for r in results["recommenders"])
    assert [r["name"] for r in results["cold_start"]["recommenders"]] == ["varlen", "fixed", "rqkmeans"]

    report = (out / "results.md").read_text()
    for heading in ("## Claim 1", "## Claim 2", "## Claim 3", "## Beyond the paper", "0.0466",
                    "Claim 2 verdict (varlen − fixed, paired 95 % intervals)", "cold-start items", "0 (by construction)"):
        assert heading in report, heading
    for plot in ("recall_vs_budget.png", "training_curves.png", "length_vs_popularity.png"):
        assert (out / plot).stat().st_size > 1000, plot

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert again.returncode == 0 and json.loads((out / "results.json").read_text())["recommenders"] == results["recommenders"]


def test_a_finished_reproduction_is_reused_only_under_the_same_protocol(tmp_path, monkeypatch):
    from dataclasses import asdict

    from sid4llm.research.reproduce_paper import ReproduceArguments, same_protocol

    monkeypatch.chdir(tmp_path)
    saved = asdict(ReproduceArguments(data_dir=str(tmp_path / "data"), output_dir="out", seeds=[0],
                                      rec_config="recipes/configs/finetune/from_scratch.yaml"))  # the old path
    more_seeds = asdict(ReproduceArguments(data_dir="data", output_dir=str(tmp_path / "out"), seeds=[0, 1],
                                           rec_seeds=[0, 1], rec_config="finetune/from_scratch"))
    assert same_protocol(saved, more_seeds)  # seeds added, paths spelled differently: the runs are reused
    assert not same_protocol(saved, {**more_seeds, "rec_steps": 401})
    assert not same_protocol(saved, {**more_seeds, "rec_config": "finetune/quickstart"})


def test_runs_made_before_a_setting_existed_are_reused_when_it_keeps_its_default(tmp_path, monkeypatch):
    import json
    from dataclasses import asdict

    from sid4llm.research import reproduce_paper

    args = reproduce_paper.ReproduceArguments(data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "out"))
    saved = asdict(args)
    del saved["fixed_max_length"]  # a protocol.json written before the flag existed
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "protocol.json").write_text(json.dumps(saved))
    monkeypatch.setattr(reproduce_paper.PreparedData, "load", lambda path: (_ for _ in ()).throw(RuntimeError("reached")))
    with pytest.raises(RuntimeError, match="reached"):  # past the protocol check, to loading the data
        reproduce_paper.main(args)
    with pytest.raises(SystemExit, match="other settings"):
        reproduce_paper.main(reproduce_paper.ReproduceArguments(**{**asdict(args), "fixed_max_length": 5}))


def test_every_id_method_reads_the_same_input_so_the_comparison_is_fair():
    """The shipped varlen config mixes in co-occurrence; the paper's comparison gives every method one input."""
    from sid4llm.research import reproduce_paper

    for weight in (0.0, 0.8):
        args = reproduce_paper.ReproduceArguments(data_dir="d", output_dir="o", collaborative_weight=weight,
                                                  length_costs=[2.0, 4.0])
        runs = reproduce_paper.id_runs(args)
        assert [name for name, _, _ in runs] == ["varlen_c2", "varlen_c4", "fixed", "rqkmeans", "reinforce"]
        assert {overrides["collaborative_weight"] for _, _, overrides in runs} == {weight}
