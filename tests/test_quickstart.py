"""The quickstart end to end, on the tiny dataset and models (the real run is `make quickstart`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sid4llm import RecommendationPipeline

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a subprocess end to end
def test_quickstart_runs_every_step_under_accelerate_launch_and_writes_its_report(tmp_path, tiny_lm_dir, tiny_encoder_dir,
                                                                                  tiny_prepared):
    source = Path(tiny_prepared["data_dir"]).parent
    out = tmp_path / "quickstart"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "recipes" / "accelerate_configs" / "cpu.yaml"), str(REPO / "recipes" / "quickstart.py"),
           "--output_dir", str(out), "--dataset", str(source / "events.csv"), "--item_file", str(source / "items.csv"),
           "--encoder", tiny_encoder_dir, "--model_name_or_path", tiny_lm_dir, "--max_steps", "3",
           "--id_steps", "30", "--allow_collapse", "--eval_users", "6", "--chat_k", "2"]
    env = {**os.environ, "TQDM_DISABLE": "1", "SID4LLM_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done in" in result.stdout and "chat_transcript.md" in result.stdout

    results = json.loads((out / "results.json").read_text())
    assert results["evaluation"]["model"]["n_users"] == 6
    assert 0 <= results["evaluation"]["model"]["recall@10"] <= 1
    assert results["evaluation"]["model"]["invalid_rate_constrained"] == 0
    assert results["ids"]["variable_length"] is True and results["finetune"]["steps"] == 3
    assert "| most popular |" in (out / "results.md").read_text()
    assert (out / "length_vs_popularity.png").stat().st_size > 1000

    transcript = (out / "chat_transcript.md").read_text()
    titles = set(RecommendationPipeline.from_pretrained(out / "model").codebook.titles)
    recommended = [line.split(". ", 1)[1].strip() for line in transcript.splitlines() if line[:2] in ("1.", "2.")]
    assert len(recommended) == 10 and set(recommended) <= titles  # five list turns of two real items, by title
    assert "**user:** hi" in transcript and "<|sid" not in transcript  # a greeting, answered without a list
    assert "recall@10" in (out / "model" / "README.md").read_text()  # the card carries the test metrics

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert again.returncode == 0 and "trained model found" in again.stdout  # finished steps are skipped
    assert "| fine-tuning | reused from an earlier run |" in (out / "results.md").read_text()
