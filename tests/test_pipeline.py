"""The practitioner's API: titles in, real items out; chat; cold-start items; the Hub bundle round trip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sid4llm import RecommendationPipeline, SidRecommender
from sid4llm.chat.mentions import TitleIndex
from sid4llm.data.titles import normalize_title
from sid4llm.ids import SemanticIdCodebook

REPO = Path(__file__).resolve().parents[1]
CATALOGUE = ["Toy Story (1995)", "Toy Story 2 (1999)", "American President, The (1995)", "Heat (1995)",
             "Star Wars: Episode IV - A New Hope (1977)", "Star Wars: Episode I - The Phantom Menace (1999)",
             "Silence of the Lambs, The (1991)", "Aladdin (1992)", "Aladdin (2019)"]
POPULARITY = [50, 20, 5, 30, 90, 40, 60, 25, 1]


@pytest.fixture
def pipe(trained_dir) -> RecommendationPipeline:
    return RecommendationPipeline.from_pretrained(trained_dir)


# ---------------------------------------------------------------------------------------------- titles
def test_titles_match_as_people_write_them():
    index = TitleIndex(CATALOGUE, POPULARITY)
    assert normalize_title("American President, The (1995)") == normalize_title("the american president")
    assert CATALOGUE[index.lookup("toy story")] == "Toy Story (1995)"
    assert CATALOGUE[index.lookup("The Silence of the Lambs")] == "Silence of the Lambs, The (1991)"
    assert CATALOGUE[index.lookup("Toy Stroy 2")] == "Toy Story 2 (1999)"  # a typo
    assert CATALOGUE[index.lookup("Star Wars")] == "Star Wars: Episode IV - A New Hope (1977)"  # most popular one
    assert CATALOGUE[index.lookup("Aladdin")] == "Aladdin (1992)"  # remake: the more popular wins
    assert index.lookup("Casablanca") is None


def test_items_named_in_a_sentence_are_found_in_order():
    index = TitleIndex(CATALOGUE, POPULARITY)
    found = index.find_mentions('I loved the silence of the lambs, toy story and "Aladdin". Something with Heat?')
    assert [CATALOGUE[i] for i in found] == ["Silence of the Lambs, The (1991)", "Toy Story (1995)",
                                             "Aladdin (1992)", "Heat (1995)"]
    assert index.find_mentions("what should I watch next? something darker, in the heat of summer") == []


# ---------------------------------------------------------------------------------------------- recommending
def test_a_bare_string_is_one_title_and_k_must_be_positive(pipe):
    one = pipe.recommend("movie 3 drama", k=3)
    assert [r["item_id"] for r in one] == [r["item_id"] for r in pipe.recommend(["movie 3 drama"], k=3)]
    assert pipe.codebook.index_of("i3") not in {r["index"] for r in one}  # the title was the history
    for bad in (0, -1):
        with pytest.raises(ValueError, match="k must be a positive"):
            pipe.recommend(["movie 3 drama"], k=bad)


def test_recommend_takes_titles_and_returns_new_real_items(pipe):
    history = ["movie 3 drama", "movie 7 drama"]
    recs = pipe.recommend(history, k=5)
    assert len(recs) == 5
    seen = {pipe.codebook.index_of("i3"), pipe.codebook.index_of("i7")}
    for rec in recs:
        assert rec["index"] not in seen
        assert pipe.codebook.item_ids[rec["index"]] == rec["item_id"] and rec["title"].startswith("movie")
    scores = [r["score"] for r in recs]
    assert scores == sorted(scores, reverse=True)
    batched = pipe.recommend([history, ["movie 1 drama"]], k=3)[0]  # a batch gives the same list
    assert [r["item_id"] for r in batched] == [r["item_id"] for r in recs[:3]]
    assert [r["score"] for r in batched] == pytest.approx(scores[:3], abs=1e-4)


def test_an_unknown_title_is_an_error_that_names_it(pipe):
    with pytest.raises(KeyError, match="Casablanca"):
        pipe.recommend(["Casablanca"], k=3)


def test_chat_keeps_the_conversation_and_never_repeats_or_invents_items(pipe):
    messages = [{"role": "user", "content": 'I liked "movie 3 drama" and "movie 5 drama". What next?'}]
    first = pipe.chat(messages, k=3)
    assert first["role"] == "assistant" and len(first["items"]) == 3
    assert [h["item_id"] for h in first["history"]] == ["i3", "i5"]
    for item in first["items"]:
        assert item["title"] in first["content"] and pipe.codebook.item_ids[item["index"]] == item["item_id"]
    messages += [first, {"role": "user", "content": 'Also "movie 8 drama". Something else?'}]
    second = pipe.chat(messages, k=3)
    assert [h["item_id"] for h in second["history"]] == ["i3", "i5", "i8"]
    assert not {i["index"] for i in second["items"]} & {i["index"] for i in first["items"]}
    assert not {i["item_id"] for i in second["items"]} & {"i3", "i5", "i8"}


def test_a_chat_turn_lists_what_recommend_gives_for_the_same_history(pipe):
    messages = [{"role": "user", "content": 'I liked "movie 3 drama" and "movie 5 drama". What next?'}]
    turn = pipe.chat(messages, k=4)
    assert pipe.chat_style == "titles" and pipe.writes_prose  # trained on the natural-language task
    same = pipe.recommend(["movie 3 drama", "movie 5 drama"], k=4, style="titles")
    assert [i["item_id"] for i in turn["items"]] == [r["item_id"] for r in same]
    assert "<|sid" not in turn["content"]  # ID tokens are shown as titles, never as raw tokens
    messages += [turn, {"role": "user", "content": "Something else?"}]
    shown = [i["item_id"] for i in turn["items"]]
    again = pipe.chat(messages, k=4)
    expected = pipe.recommend(["movie 3 drama", "movie 5 drama"], k=4, style="titles", exclude=shown)
    assert [i["item_id"] for i in again["items"]] == [r["item_id"] for r in expected]


@pytest.mark.slow  # a subprocess end to end
def test_chat_recipe_answers_one_prompt(trained_dir):
    out = subprocess.run([sys.executable, str(REPO / "recipes" / "chat.py"), "--model", trained_dir, "--k", "2",
                          "--prompt", 'I liked "movie 2 drama"'], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "You mentioned: movie 2 drama" in out.stdout and "2. movie" in out.stdout


# ---------------------------------------------------------------------------------------------- cold start
def test_cold_start_items_get_ids_without_changing_old_ones_and_can_be_recommended(pipe, tiny_encoder_dir, isolated_cache):
    before = list(pipe.codebook.sequences)
    added = pipe.add_items(["new1", "new2"], ["toy story animation", "heat crime thriller"], encoder=tiny_encoder_dir)
    assert [a["item_id"] for a in added] == ["new1", "new2"]
    assert pipe.codebook.sequences[: len(before)] == before
    assert len(set(pipe.codebook.sequences)) == len(pipe.codebook)
    everything = pipe.recommend(["movie 1 drama"], k=len(pipe.codebook) - 1)
    assert {"new1", "new2"} <= {r["item_id"] for r in everything}  # the decoding trie followed
    assert pipe.recommender.cold_items == range(len(before), len(before) + 2)
    placed = pipe.recommend(["movie 1 drama"], k=4, cold_share=0.5)  # up to 2 of 4 slots, placed by ID prefix
    plain = pipe.recommend(["movie 1 drama"], k=4)
    assert len(placed) == 4 and sum(r["item_id"].startswith("new") for r in placed) <= 2
    assert [r for r in placed if not r["item_id"].startswith("new")] == [r for r in plain if not r["item_id"].startswith("new")][: 4 - sum(r["item_id"].startswith("new") for r in placed)]
    assert pipe.titles.lookup("heat crime thriller") == pipe.codebook.index_of("new2")


def test_running_out_of_disambiguation_tokens_changes_nothing(pipe):
    size, sequences = len(pipe.codebook), list(pipe.codebook.sequences)
    same = np.ones((40, pipe.codebook.embedding_dim), np.float32)
    with pytest.raises(ValueError, match="disambiguation tokens"):
        pipe.recommender.add_items([f"dup{i}" for i in range(40)], same, ["dup"] * 40)  # 40 identical items
    assert len(pipe.codebook) == size and pipe.codebook.sequences == sequences


# ---------------------------------------------------------------------------------------------- hub
BUNDLE = {"README.md", "adapter_config.json", "adapter_model.safetensors", "catalogue.json", "chat_template.jinja",
          "generation_config.json", "results.json",
          "sid4llm_config.json", "sid_vocabulary.json", "tokenizer.json", "tokenizer_config.json",
          "codebook/README.md", "codebook/codebook_config.json", "codebook/codes.safetensors",
          "codebook/encoder.safetensors", "codebook/items.json", "codebook/metrics.json"}


def test_push_sends_the_whole_bundle_in_one_commit_and_loads_back(pipe, fake_hub):
    url = pipe.push_to_hub("me/movie-recommender", private=True)
    assert url == "https://huggingface.co/me/movie-recommender/commit/1"
    assert fake_hub.repos == [("me/movie-recommender", True)]
    (commit,) = fake_hub.commits
    files = set(commit["files"])
    assert BUNDLE - {"chat_template.jinja"} <= files <= BUNDLE | {"special_tokens_map.json"}, files
    card = commit["files"]["README.md"].decode()
    for fact in ("base_model:", "library_name: sid4llm", "mean ID length", "RecommendationPipeline.from_pretrained"):
        assert fact in card, fact
    json.loads(commit["files"]["sid4llm_config.json"])

    loaded = RecommendationPipeline.from_pretrained("me/movie-recommender")  # through snapshot_download
    assert loaded.codebook.sequences == pipe.codebook.sequences
    ours, theirs = loaded.recommend(["movie 3 drama"], k=4), pipe.recommend(["movie 3 drama"], k=4)
    assert [r["item_id"] for r in ours] == [r["item_id"] for r in theirs]


def test_each_artefact_pushes_on_its_own(pipe, fake_hub):
    pipe.codebook.push_to_hub("me/ids")
    pipe.recommender.vocab.push_to_hub("me/tokenizer")
    by_repo = {c["repo_id"]: set(c["files"]) for c in fake_hub.commits}
    assert {"codes.safetensors", "encoder.safetensors"} <= by_repo["me/ids"]
    assert {"tokenizer.json", "sid_vocabulary.json"} <= by_repo["me/tokenizer"]
    codebook = SemanticIdCodebook.from_pretrained("me/ids")
    assert codebook.sequences == pipe.codebook.sequences


def test_a_hub_id_that_is_not_a_recommender_is_a_clear_error(fake_hub, tmp_path):
    fake_hub.files["me/other"] = {"config.json": b"{}"}
    with pytest.raises(FileNotFoundError, match="not a saved SidRecommender"):
        SidRecommender.from_pretrained("me/other")


@pytest.mark.slow  # a subprocess end to end
def test_add_items_recipe_extends_a_saved_recommender_and_a_codebook(trained_dir, tiny_encoder_dir, tmp_path):
    items = tmp_path / "new.csv"
    items.write_text("item_id,title,categories\nnew1,toy story animation,comedy\nnew2,heat crime thriller,drama\n")
    env = {**os.environ, "SID4LLM_CACHE": str(tmp_path / "cache")}
    for source, out in ((trained_dir, tmp_path / "rec"), (str(Path(trained_dir) / "codebook"), tmp_path / "ids")):
        run = subprocess.run([sys.executable, str(REPO / "recipes" / "add_items.py"), "--model", source, "--items", str(items),
                              "--output_dir", str(out), "--encoder", tiny_encoder_dir], capture_output=True, text=True,
                             env=env, timeout=300)
        assert run.returncode == 0, run.stderr
        assert "added 2 item(s)" in run.stdout
    before = SemanticIdCodebook.from_pretrained(Path(trained_dir) / "codebook")
    rec = RecommendationPipeline.from_pretrained(tmp_path / "rec")
    ids = SemanticIdCodebook.from_pretrained(tmp_path / "ids")
    for codebook in (rec.codebook, ids):
        assert codebook.sequences[: len(before)] == before.sequences and codebook.item_ids[-2:] == ["new1", "new2"]

    bad = tmp_path / "bad.csv"
    bad.write_text("item_id,name\nx,y\n")
    run = subprocess.run([sys.executable, str(REPO / "recipes" / "add_items.py"), "--model", trained_dir, "--items", str(bad),
                          "--output_dir", str(tmp_path / "bad")], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "bad.csv: missing column(s) ['title']" in run.stderr
    assert not (tmp_path / "bad").exists()
