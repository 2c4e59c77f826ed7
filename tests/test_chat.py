"""The chat as a user meets it: requests in words decoded by the LM through the trie, titles found as people
write them (and ordinary words never taken for titles), words from the whole instruct LM around the list, and a
clear answer to every bad input."""

from __future__ import annotations

import json

import pytest
from conftest import CHAT_CATALOGUE

from sid4llm import RecommendationPipeline
from sid4llm.chat.benchmark import category_precision, chat_turns, mention_scores, prompt_recall
from sid4llm.chat.mentions import TitleIndex

TITLES = [title for _, title, _ in CHAT_CATALOGUE]


@pytest.fixture(scope="module")
def pipe(chat_dir) -> RecommendationPipeline:
    return RecommendationPipeline.from_pretrained(chat_dir)


# ---------------------------------------------------------------------------------------------- mentions
@pytest.mark.parametrize("message", ["I want a funny animated movie for my kids", "Recommend a scary horror film",
                                     "A good war movie please", "a crime mystery for tonight", "hi",
                                     "something funny from the 80s", "the heat of summer"])
def test_ordinary_words_never_become_titles(message):
    assert TitleIndex(TITLES).find_mentions(message) == []


@pytest.mark.parametrize("message, titles", [
    ("Something like the matrix but scarier", ["Matrix, The (1999)"]),
    ("something like alien", ["Alien (1979)"]),
    ("terminator 2 was great", ["Terminator 2: Judgment Day (1991)"]),
    ("I loved the terminator", ["Terminator, The (1984)"]),
    ("I liked Heat and toy stroy", ["Heat (1995)", "Toy Story (1995)"]),
    ('"Scary Movie" and Good Will Hunting', ["Scary Movie (2000)", "Good Will Hunting (1997)"]),
])
def test_items_are_found_as_people_name_them(message, titles):
    index = TitleIndex(TITLES)
    assert [TITLES[i] for i in index.find_mentions(message)] == titles


# ---------------------------------------------------------------------------------------------- requests
def test_a_request_in_words_is_decoded_by_the_model_through_the_trie(pipe):
    assert pipe.chat_style == "request"
    reply = pipe.chat([{"role": "user", "content": "I want a funny animated movie for my kids"}], k=3)
    expected = pipe.recommend_request("I want a funny animated movie for my kids", [], k=3)
    assert [i["item_id"] for i in reply["items"]] == [i["item_id"] for i in expected]
    assert reply["history"] == []  # no word of it was read as a title
    other = pipe.recommend_request("a scary western", [], k=len(pipe.codebook))
    assert len({i["index"] for i in other}) == len(pipe.codebook)  # every item reachable, each once


def test_the_words_change_the_list(pipe):
    """The same model and history with other words gives other scores: the words reach the ID path."""
    funny = pipe.recommend_request("something funny", [], k=len(pipe.codebook))
    scary = pipe.recommend_request("something scary", [], k=len(pipe.codebook))
    assert [r["score"] for r in funny] != [r["score"] for r in scary]


def test_what_followed_the_named_items_in_the_train_histories_moves_up_and_a_request_naming_none_is_unchanged(chat_dir):
    from sid4llm.decoding.transition_prior import ItemTransitionPrior

    pipe = RecommendationPipeline.from_pretrained(chat_dir)
    request, n = "something like the matrix", len(pipe.codebook)
    alone = [i["index"] for i in pipe.recommend_request(request, [0], k=n)]
    follower = alone[-1]  # the model's last choice; in the train histories, it always came after the named item
    pipe.recommender.transition_prior = ItemTransitionPrior.count([[0, follower]] * 3, n_items=n, span=1)
    pipe.recommender.config.decoding.transition_prior_weight = 5.0
    assert [i["index"] for i in pipe.recommend_request(request, [0], k=3)][0] == follower
    # the prior's own guesses join an ID stream's beam, never a request's: its words choose the kind of item
    before = pipe.recommend_request(request, [0], k=3, num_beams=3)
    pipe.recommender.transition_prior.config.candidates = n
    assert pipe.recommend_request(request, [0], k=3, num_beams=3) == before
    assert [i["index"] for i in pipe.recommend_request("something funny", [], k=n)] == \
        [i["index"] for i in RecommendationPipeline.from_pretrained(chat_dir).recommend_request("something funny", [], k=n)]


def test_named_items_are_read_as_an_id_stream_and_left_out(pipe):
    reply = pipe.chat([{"role": "user", "content": "Something like the matrix but scarier"}], k=4)
    assert [h["title"] for h in reply["history"]] == ["Matrix, The (1999)"]
    assert "m1" not in {i["item_id"] for i in reply["items"]}
    assert "You mentioned: Matrix, The (1999)." in reply["content"]


def test_a_greeting_gets_words_and_no_list(pipe):
    reply = pipe.chat([{"role": "user", "content": "hi"}])
    assert reply["items"] == [] and reply["content"].startswith("Hello!")


def test_every_answer_has_the_models_words_naming_a_listed_item_and_no_raw_id_text(pipe):
    reply = pipe.chat([{"role": "user", "content": "Recommend a scary horror film"}], k=3)
    assert "<|sid" not in reply["content"]
    words = reply["content"].split("Recommended for you:")[0]
    if words.strip():  # a tiny random LM rarely finishes a sentence; when it does, it opens with the first pick
        first = reply["items"][0]["title"]
        assert words.strip().split(". ")[0].count(first.split(" (")[0].split(", ")[0]) >= 1


def test_multi_turn_keeps_named_items_and_never_repeats(pipe):
    messages = [{"role": "user", "content": "I liked Heat"}]
    messages.append(pipe.chat(messages, k=3))
    messages.append({"role": "user", "content": "something funnier"})
    second = pipe.chat(messages, k=3)
    assert [h["title"] for h in second["history"]] == ["Heat (1995)"]
    assert not {i["index"] for i in second["items"]} & {i["index"] for i in messages[1]["items"]}


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("message", ["", "   \n ", "?!?! ...", "🎬🍿🎥"])
def test_a_message_without_words_gets_a_clear_answer(pipe, message):
    reply = pipe.chat([{"role": "user", "content": message}])
    assert reply["items"] == [] and "Tell me what you'd like to watch" in reply["content"]


def test_a_very_long_message_is_read_from_its_end(pipe):
    reply = pipe.chat([{"role": "user", "content": "blah " * 10_000 + "I liked Heat"}], k=2)
    assert [h["title"] for h in reply["history"]] == ["Heat (1995)"] and len(reply["items"]) == 2
    assert "read its last 2,000 characters" in reply["content"]


def test_items_the_catalogue_lacks_are_named_in_the_reply(pipe):
    reply = pipe.chat([{"role": "user", "content": 'Something like "Dune: Part Two" please'}], k=2,
                      history=["Heat", "Oppenheimer (2023)"])
    assert reply["unknown"] == ["Oppenheimer (2023)", "Dune: Part Two"]
    assert 'I couldn\'t find "Oppenheimer (2023)", "Dune: Part Two" in the catalogue.' in reply["content"]
    assert len(reply["items"]) == 2  # the rest of the request is still answered


def test_a_language_it_was_not_trained_on_still_gets_an_answer(pipe):
    reply = pipe.chat([{"role": "user", "content": "Je voudrais un film drôle pour mes enfants"}], k=2)
    assert len(reply["items"]) == 2


def test_a_conversation_must_end_with_a_user_turn(pipe):
    with pytest.raises(ValueError, match="must end with a user turn"):
        pipe.chat([{"role": "assistant", "content": "hello"}])
    with pytest.raises(ValueError, match="content must be a string"):
        pipe.chat([{"role": "user", "content": 3}])


# ---------------------------------------------------------------------------------------------- benchmark
def test_the_chat_benchmark_measures_what_it_names(pipe, chat_prepared, tmp_path):
    from sid4llm.data import PreparedData

    data = PreparedData.load(chat_prepared["data_dir"])
    precision = category_precision(pipe, data, n_requests=9, k=3)
    assert 0.0 <= precision["model"] <= precision["best"] <= 1.0 and precision["n_requests"] == 9
    labelled = tmp_path / "mentions.jsonl"
    labelled.write_text("\n".join(json.dumps(c) for c in [
        {"message": "something like alien", "mentions": ["Alien (1979)"]},
        {"message": "a funny movie", "mentions": []},
        {"message": "I loved heat and the matrix", "mentions": ["Heat (1995)", "Matrix, The (1999)"]}]))
    scores = mention_scores(pipe, [labelled])
    assert scores["precision"] == 1.0 and scores["recall"] == 1.0 and scores["mentions"] == 3
    labelled.write_text(json.dumps({"message": "the heat of summer and Alien", "mentions": ["Heat (1995)"]}))
    missed = mention_scores(pipe, [labelled])  # "heat" here is a word, and Alien was not asked for
    assert missed["precision"] == 0.0 and missed["recall"] == 0.0 and len(missed["errors"]) == 1
    turns = chat_turns(pipe, ["hi", "a scary film"], k=2)
    assert 0.0 <= turns["answers_with_words"] <= 1.0 and turns["seconds_per_turn"] > 0
    assert turns["answers_with_ungrounded_facts"] == 0.0  # whatever the tiny random LM writes
    assert turns["answers_with_unsupported_claims"] == 0.0
    recall = prompt_recall(pipe, data, n_users=5, k=3)
    assert recall["n_users"] == 5 and 0.0 <= recall["recall_prompt"] <= 1.0
    assert 0.0 <= recall["recall_id_stream_same_items"] <= 1.0


def test_the_chat_artefact_pushes_as_one_commit_and_chats_the_same_after_loading(pipe, fake_hub):
    pipe.push_to_hub("me/chatty-recommender")
    (commit,) = fake_hub.commits
    assert {"adapter_model.safetensors", "adapter_config.json", "catalogue.json", "tokenizer.json",
            "codebook/codes.safetensors"} <= set(commit["files"])
    assert not any(name.startswith("checkpoint-") for name in commit["files"])
    loaded = RecommendationPipeline.from_pretrained("me/chatty-recommender")
    request = "something like the matrix but scarier"
    assert [i["item_id"] for i in loaded.recommend_request(request, [0], k=3)] == \
        [i["item_id"] for i in pipe.recommend_request(request, [0], k=3)]
    assert loaded.recommender.item_categories == pipe.recommender.item_categories
