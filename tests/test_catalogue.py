"""Any catalogue: a bookshop (ratings exported without time, books with categories) goes through the quickstart's
path — prepare with ``--item_noun book``, IDs, the first-layer adapter on ID streams and requests, the chat, the
server — and no sentence the library writes says movie, film or watch: its words come from the bookshop's profile."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import prepare_with_codebook, save_tiny_llama

from sid4llm import RecommendationPipeline
from sid4llm.data import CatalogueProfile, PreparedData
from sid4llm.lm.models import ModelArguments
from sid4llm.lm.tasks import ExampleBuilder, TaskArguments, request_writer
from sid4llm.training import SidDataArguments, SidTrainingConfig, run_finetune

MOVIE_WORDS = re.compile(r"\b(movies?|films?|watch\w*|cinema)\b", re.IGNORECASE)
BOOKS = [("b1", "The Silent River", "Mystery|Thriller"), ("b2", "Gardens of Salt", "Literary Fiction"),
         ("b3", "A Kitchen in Lyon", "Cookbook"), ("b4", "The Little Fox", "Children|Picture Book"),
         ("b5", "Northern Lights Again", "Fantasy|Young Adult"), ("b6", "Dead Reckoning", "Mystery|Crime"),
         ("b7", "Bread Every Day", "Cookbook"), ("b8", "The Clockwork Heir", "Fantasy"),
         ("b9", "Moon Over Pines", "Romance"), ("b10", "Iron and Ash", "Fantasy|Thriller"),
         ("b11", "Counting Stars", "Children|Picture Book"), ("b12", "The Last Ledger", "Crime|Thriller")]


@pytest.fixture(scope="module")
def bookshop(tmp_path_factory, tiny_encoder_dir) -> dict:
    """A bookshop's ratings with no time column (file order), prepared as books that people read."""
    import random

    rng = random.Random(3)
    events = [(f"reader{u}", rng.choice(BOOKS)[0]) for u in range(40) for _ in range(8)]
    root = tmp_path_factory.mktemp("bookshop")
    timed = [(u, i, 0) for u, i in events]  # the helper writes a timestamp column; prepare reads it as absent
    prepared = prepare_with_codebook(root, timed, pd.DataFrame(BOOKS, columns=["item_id", "title", "categories"]),
                                     tiny_encoder_dir, timestamp_column="none", item_noun="book", item_verb="read",
                                     drop_repeat_consumption=True)
    lm = save_tiny_llama(root / "lm", [f"book {i} novel story read shelf page chapter author library" for i in range(40)])
    out = root / "model"
    run_finetune(ModelArguments(model_name_or_path=lm, pretrained_layers=1, peft_layers="full"),
                 SidDataArguments(data_dir=prepared["data_dir"], codebook=prepared["codebook_dir"]),
                 TaskArguments(tasks=["sequential", "requests"], request_examples=200, history_token_budget=40,
                               max_seq_length=128),
                 SidTrainingConfig(output_dir=str(out), max_steps=4, per_device_train_batch_size=8, learning_rate=5e-3,
                                   save_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
                                   eval_examples=0))
    return {**prepared, "model_dir": str(out)}


def test_the_profile_is_set_when_the_data_is_prepared_and_saved_with_the_model(bookshop):
    data = PreparedData.load(bookshop["data_dir"])
    assert data.profile.item_noun == "book" and data.profile.verb_past == "read"
    assert data.stats["event_order"] == "file"
    saved = json.loads((Path(bookshop["model_dir"]) / "sid4llm_config.json").read_text())
    assert CatalogueProfile.from_dict(saved["profile"]) == data.profile


def test_no_sentence_the_library_writes_for_a_bookshop_names_movies(bookshop):
    data = PreparedData.load(bookshop["data_dir"])
    pipe = RecommendationPipeline.from_pretrained(bookshop["model_dir"])
    rec = pipe.recommender
    sentences: list[str] = []

    # training requests, in every frame, trained and held out
    writer = request_writer(data, TaskArguments(tasks=["requests"]))
    sentences += [r.text for split in ("train", "held_out") for r in writer.requests(300, split)]
    # the natural-language prompt, the assistant's introductions
    builder = ExampleBuilder(rec.vocab, list(data.items["title"]), TaskArguments(), data.profile)
    sentences.append(builder.natural_language_prompt([0, 1, 2]))
    sentences += [pipe.assistant.narrator.system_prompt, pipe.assistant.narrator.greeting_prompt]
    # chat answers: a greeting, thanks, an empty message, one without words, requests, a title, an unknown title
    for message in ("hi", "thanks!", "", "???", "Something for my kids", "I loved The Silent River. What next?",
                    'Do you have "A Book That Is Not There"?', "a fantasy thriller please"):
        reply = pipe.chat([{"role": "user", "content": message}], k=3)
        sentences.append(reply["content"])
    # the model card
    sentences.append((Path(bookshop["model_dir"]) / "README.md").read_text())

    said = [s for s in sentences if MOVIE_WORDS.search(s)]
    assert not said, said[:3]
    assert any(re.search(r"\bbooks?\b", s) for s in sentences)  # the bookshop's own words are used


def test_a_bookshop_is_served_in_its_own_words(bookshop):
    from fastapi.testclient import TestClient

    from sid4llm.serving import ServeArguments, create_app

    pipe = RecommendationPipeline.from_pretrained(bookshop["model_dir"])
    with TestClient(create_app(pipe, ServeArguments(model="bookshop", max_wait_ms=5))) as client:
        hello = client.post("/v1/chat/completions", json={"model": "bookshop",
                                                          "messages": [{"role": "user", "content": "hello"}]})
        books = client.post("/v1/recommend", json={"history": ["The Silent River"], "k": 3})
    assert hello.status_code == 200 and books.status_code == 200
    answer = hello.json()["choices"][0]["message"]["content"]
    assert answer and not MOVIE_WORDS.search(answer)
    assert len(books.json()["items"]) == 3
