"""Requests in words, written from a catalogue's metadata: every answer meets what the request asks for, the
held-out phrasings and anchors never reach training, and any dataset's categories can be asked for."""

from __future__ import annotations

import re

import numpy as np
import pytest

from sid4llm.data.profile import FRAME_KINDS, CatalogueProfile
from sid4llm.data.titles import item_year, spoken_title
from sid4llm.lm.requests import RequestWriter, co_occurrence_neighbours, is_held_out_anchor

MOVIELENS = CatalogueProfile.read("movielens")

TITLES = [f"Film {n} ({1950 + 7 * n})" for n in range(40)]
GENRES = ["Comedy", "Horror", "Animation", "Children's", "Western", "Drama"]
CATEGORIES = [[GENRES[n % 6], GENRES[(n // 6) % 6]] if n % 4 else [GENRES[n % 6]] for n in range(40)]


@pytest.fixture
def writer() -> RequestWriter:
    rng = np.random.default_rng(0)
    histories = [rng.choice(40, size=12, replace=False).tolist() for _ in range(30)]
    return RequestWriter(TITLES, CATEGORIES, rng.integers(1, 50, size=40), histories, [f"i{n}" for n in range(40)],
                         MOVIELENS, seed=0)


def test_every_answer_meets_the_categories_and_decade_asked_for(writer):
    requests = [r for r in (writer.describe_request() for _ in range(300)) if r is not None]
    assert len(requests) > 200
    for request in requests:
        assert request.answers
        for item in request.answers:
            assert set(request.categories) <= set(CATEGORIES[item])
            if request.decade is not None:
                assert item_year(TITLES[item]) // 10 * 10 == request.decade
    assert any(r.decade is not None for r in requests) and any(len(r.categories) > 1 for r in requests)


def test_everyday_words_stand_for_categories_in_the_catalogues_profile():
    assert "funny" in MOVIELENS.words_for("Comedy").adjectives
    assert "scary" in MOVIELENS.words_for("horror").adjectives
    assert "for my kids" in MOVIELENS.words_for("Childrens").suffixes
    assert "scarier" in MOVIELENS.words_for("Horror").wishes
    assert CatalogueProfile().words_for("Comedy") is None  # neutral words know no category


def test_a_category_without_everyday_words_is_asked_for_by_its_name():
    writer = RequestWriter(["A", "B"], [["Toys & Games"], ["Toys & Games"]], np.array([3, 1]), [[0, 1]], ["a", "b"],
                           CatalogueProfile(item_noun="product"), seed=0)
    texts = {writer.describe(("Toys & Games",), None) for _ in range(30)}
    assert all("toys & games" in t for t in texts)


def test_requests_about_another_catalogue_speak_its_words():
    """A bookshop's requests say book and read, never movie, film or watch, in every frame and kind."""
    rng = np.random.default_rng(1)
    histories = [rng.choice(40, size=12, replace=False).tolist() for _ in range(30)]
    books = CatalogueProfile(item_noun="book", verb="read", verb_past="read")
    writer = RequestWriter([f"Novel {n}" for n in range(40)], CATEGORIES, rng.integers(1, 50, size=40), histories,
                           [f"b{n}" for n in range(40)], books, seed=0)
    texts = [r.text.lower() for split in ("train", "held_out") for r in writer.requests(300, split)]
    assert not [t for t in texts if re.search(r"\b(movies?|films?|watch\w*)\b", t)]
    assert any(re.search(r"\bbooks?\b", t) for t in texts) and any(re.search(r"\bread\b", t) for t in texts)


def test_held_out_phrasings_and_anchors_never_reach_training(writer):
    def pattern(frame: str) -> re.Pattern:
        return re.compile(re.sub(r"\\\{\w+\\\}", ".+", re.escape(frame.lower())) + "$")

    held_out = [pattern(frame) for kind in FRAME_KINDS for frame in MOVIELENS.request_frames(kind, "held_out")]
    trained = [pattern(frame) for kind in FRAME_KINDS for frame in MOVIELENS.request_frames(kind, "train")]
    for request in writer.requests(600, "train"):
        text = request.text.lower()
        assert any(p.match(text) for p in trained) and not any(p.match(text) for p in held_out), request.text
        if request.kind in ("like", "like_wish"):
            assert not is_held_out_anchor(f"i{request.named[0]}")
    evaluation = [writer.like_request("held_out") for _ in range(20)]
    assert all(is_held_out_anchor(f"i{r.named[0]}") for r in evaluation)


def test_like_requests_answer_with_items_taken_near_the_anchor(writer):
    request = writer.like_request("train")
    assert set(request.answers) <= set(writer.neighbours[request.named[0]])
    wished = writer.like_request("train", with_wish=True)
    assert all(wished.categories[0] in CATEGORIES[i] for i in wished.answers)


def test_co_occurrence_counts_items_taken_close_together():
    neighbours = co_occurrence_neighbours([[0, 1, 2], [0, 1], [3, 0]], n_items=4, window=1)
    assert neighbours[0] == [1, 3]  # 1 twice next to 0, 3 once
    assert neighbours[2] == [1]


def test_titles_are_written_as_people_type_them():
    assert spoken_title("Matrix, The (1999)") == "The Matrix"
    assert spoken_title("Matrix, The (1999)", with_year=True) == "The Matrix (1999)"
    assert item_year("Toy Story (1995)") == 1995 and item_year("Untitled") is None
