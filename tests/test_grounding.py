"""The words of a chat answer say only what the catalogue or the request holds: no invented date, number or name,
and no claim in plain words that the listed items' titles and categories do not support."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from transformers import AutoTokenizer

from sid4llm.chat.grounding import fact_token_ids, ungrounded_claims, ungrounded_facts, unsupported_token_ids
from sid4llm.chat.narration import Narrator
from sid4llm.data.profile import CatalogueProfile

LISTING = ("You are a friendly movie recommender.\nsomething funny for my kids\n"
           "1. Toy Story (1995) (Animation, Children's, Comedy)\n2. Babe (1995) (Children's, Comedy, Drama)")


@pytest.mark.parametrize("sentence, invented", [
    ("it was released on 8 November of that year.", ["8", "November"]),
    ("a legendary outlaw named Droughtskin rides again.", ["Droughtskin"]),
    ("Toy Story is a Pixar classic.", ["Pixar"]),
    ("it has two sequels and 3 songs.", ["two", "3"]),
    ("it came out in the 80s.", ["80s"]),
])
def test_numbers_dates_and_names_the_catalogue_lacks_are_found(sentence, invented):
    assert ungrounded_facts(sentence, LISTING) == invented


@pytest.mark.parametrize("sentence", [
    "it is a funny 90s Comedy your kids will love.",  # the decade of a listed year, a listed category
    "it came out in 1995. Kids love Babe too!",  # a listed year; a capital that opens a sentence
    "I think it is one of the best Animation films.",  # "one" states no quantity; "I" names nobody
])
def test_what_the_listing_and_request_hold_may_be_said(sentence):
    assert ungrounded_facts(sentence, LISTING) == []


def test_only_the_digits_the_grounding_holds_may_be_written(tiny_lm_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    facts = fact_token_ids(tokenizer)
    digits = {piece: t for t, piece in facts.items() if piece.isdigit()}
    assert {"1", "5", "9", "0", "8"} <= set(digits)
    banned = set(unsupported_token_ids(facts, LISTING))
    assert {digits["1"], digits["9"], digits["5"]}.isdisjoint(banned)  # 1995 is listed
    assert {digits["0"], digits["8"]} <= banned


class ScriptedLM(torch.nn.Module):
    """A words model that always continues with ``script``, whatever it is asked."""

    def __init__(self, tokenizer, script: str):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer, self.script = tokenizer, script

    def generate(self, input_ids, **kwargs):
        tail = self.tokenizer(self.script, add_special_tokens=False, return_tensors="pt")["input_ids"]
        return torch.cat([input_ids, tail], dim=1)


def narrator_writing(tiny_lm_dir, script: str, profile: CatalogueProfile | None = None) -> Narrator:
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)

    @contextmanager
    def words_model():
        yield ScriptedLM(tokenizer, script)

    return Narrator(words_model, tokenizer, banned_token_ids=[], profile=profile or MOVIES)


MOVIES = CatalogueProfile(item_noun="movie", answer_words=["film"],
                          category_words={"Comedy": {"adjectives": ["funny", "hilarious"]}, "Horror": {"adjectives": ["scary"]}})
ITEMS = [{"title": "Toy Story (1995)", "index": 0}, {"title": "Babe (1995)", "index": 1}]
CATEGORIES = [["Animation", "Children's", "Comedy"], ["Children's", "Comedy", "Drama"]]


def test_an_answer_that_invents_a_date_becomes_the_profiles_grounded_sentence(tiny_lm_dir):
    narrator = narrator_writing(tiny_lm_dir, " it was released on 8 November of that year.")
    answer = narrator.introduce("something funny for my kids", ITEMS, CATEGORIES)
    assert answer == "My first pick is Toy Story (1995), filed under Animation, Children's, Comedy."
    assert ungrounded_facts(answer, LISTING) == []


def test_an_answer_that_checks_out_keeps_the_lms_own_words(tiny_lm_dir):
    narrator = narrator_writing(tiny_lm_dir, " it is a funny Comedy your kids will love.")
    answer = narrator.introduce("something funny for my kids", ITEMS, CATEGORIES)
    assert "Toy Story (1995)" in answer
    assert answer.endswith("it is a funny Comedy your kids will love.")


def test_the_grounded_sentence_speaks_the_catalogues_words():
    books = CatalogueProfile(item_noun="book", grounded_answer="Start with {title}, shelved in {categories}.")
    assert books.grounded_sentence("Dune", ["Science fiction"]) == "Start with Dune, shelved in Science fiction."
    assert books.grounded_sentence("Dune") == "Start with Dune."


def test_the_lists_numbering_grounds_no_number(tiny_lm_dir):
    narrator = narrator_writing(tiny_lm_dir, " it was released on 2 different dates.")
    answer = narrator.introduce("something funny for my kids", ITEMS, CATEGORIES)  # the list reads "1. ..., 2. ..."
    assert answer == "My first pick is Toy Story (1995), filed under Animation, Children's, Comedy."


def test_a_stray_closing_quote_ends_the_one_sentence_kept(tiny_lm_dir):
    narrator = narrator_writing(tiny_lm_dir, ' it is a funny Comedy." I am not sure what your question is.')
    answer = narrator.introduce("something funny for my kids", ITEMS, CATEGORIES)
    assert answer.endswith("it is a funny Comedy.")


@pytest.mark.parametrize("sentence, claims", [
    ("it's about a young man who is turned into stone by his own reflection.", ["young", "man", "turned", "stone", "reflection"]),
    ("it has been praised by critics worldwide.", ["praised", "critics", "worldwide"]),
    ("it is a great choice your kids will enjoy.", []),  # the words of recommending, and the request's
    ("a classic animated Comedy from 1995.", []),  # "animated" shares its stem with the listed "Animation"
])
def test_plain_word_claims_the_listing_does_not_support_are_found(sentence, claims):
    assert ungrounded_claims(sentence, LISTING) == claims


def test_a_listed_categorys_everyday_words_support_a_claim_and_another_categorys_do_not():
    comedy = MOVIES.answer_vocabulary(["Comedy"])
    assert ungrounded_claims("a hilarious film.", "Toy Story (1995)", comedy) == []
    assert ungrounded_claims("a scary film.", "Toy Story (1995)", comedy) == ["scary"]


def test_a_claim_the_catalogue_lacks_is_cut_back_to_the_clause_that_holds(tiny_lm_dir):
    narrator = narrator_writing(tiny_lm_dir, " it is a hilarious Comedy about a young man who turns into stone.")
    answer = narrator.introduce("something funny for my kids", ITEMS, CATEGORIES)
    assert answer.endswith("because it is a hilarious Comedy.")


def test_a_plot_the_catalogue_lacks_becomes_the_profiles_grounded_sentence(tiny_lm_dir):
    narrator = narrator_writing(tiny_lm_dir, " it's about an old man who can talk to animals.")
    answer = narrator.introduce("something funny for my kids", ITEMS, CATEGORIES)
    assert answer == "My first pick is Toy Story (1995), filed under Animation, Children's, Comedy."


def test_a_book_catalogues_own_answer_words_are_supported(tiny_lm_dir):
    books = CatalogueProfile(item_noun="book", answer_words=["page-turner"],
                             category_words={"Science fiction": {"adjectives": ["futuristic"]}})
    dune = [{"title": "Dune", "index": 0}]
    narrator = narrator_writing(tiny_lm_dir, " it is a futuristic page-turner.", profile=books)
    assert narrator.introduce("a novel for the train", dune, [["Science fiction"]]).endswith("a futuristic page-turner.")
    narrator = narrator_writing(tiny_lm_dir, " it is a gripping thriller set on Mars.", profile=books)
    assert narrator.introduce("a novel for the train", dune, [["Science fiction"]]) == \
        "My first pick is Dune, filed under Science fiction."


def test_a_cut_sentence_must_still_say_something(tiny_lm_dir):
    narrator = narrator_writing(tiny_lm_dir, " it is what it is, with a young man who turns into stone.")
    answer = narrator.introduce("something funny for my kids", ITEMS, CATEGORIES)
    assert answer == "My first pick is Toy Story (1995), filed under Animation, Children's, Comedy."
