"""How people ask for what a catalogue holds: everyday words for its categories and decades.

"funny" asks for Comedy, "scary" for Horror, "for my kids" for Children's. The request tasks
(:mod:`sid4llm.lm.requests`) write training requests with these words, and mention detection
(:mod:`sid4llm.data.titles`) uses them to keep a wish ("a good war movie") from being read as a title.
Categories are compared by :func:`category_key`; one this table does not know is asked for by its own name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


def category_key(name: str) -> str:
    """"Children's" → "childrens", "Sci-Fi" → "scifi": the form category names are compared in."""
    return re.sub(r"[^a-z0-9]+", "", name.lower())


@dataclass(frozen=True)
class CategoryWords:
    """How people ask for a category: before the item noun ("a *funny* movie"), on its own ("a *comedy*"),
    after it ("a movie *for my kids*") and as a wish relative to another item ("like X but *funnier*")."""

    adjectives: tuple[str, ...] = ()
    nouns: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    wishes: tuple[str, ...] = ()


CATEGORY_WORDS: dict[str, CategoryWords] = {
    "action": CategoryWords(("action", "action-packed", "explosive", "high-octane"),
                            ("an action movie", "an action flick", "something with lots of action"), (),
                            ("with more action", "more action-packed")),
    "adventure": CategoryWords(("adventure", "adventurous", "epic"), ("an adventure", "an adventure story"), (),
                               ("more adventurous", "with more adventure")),
    "animation": CategoryWords(("animated", "cartoon", "animation"), ("a cartoon", "an animated film"), (),
                               ("animated", "as a cartoon")),
    "childrens": CategoryWords(("family", "kid-friendly", "children's"), ("a family film", "a kids movie"),
                               ("for my kids", "for the kids", "for children", "for the whole family"),
                               ("for kids", "more family-friendly", "that my kids can watch")),
    "comedy": CategoryWords(("funny", "hilarious", "comedy", "lighthearted", "silly"),
                            ("a comedy", "something to make me laugh", "a good laugh"), (),
                            ("funnier", "more lighthearted", "with more laughs")),
    "crime": CategoryWords(("crime", "gangster", "heist", "mafia"), ("a crime story", "a gangster film"), (),
                           ("with more crime", "with gangsters")),
    "documentary": CategoryWords(("documentary",), ("a documentary", "a doc"), (), ("as a documentary",)),
    "drama": CategoryWords(("dramatic", "drama", "emotional", "serious"), ("a drama", "something moving"), (),
                           ("more dramatic", "more serious", "more emotional")),
    "fantasy": CategoryWords(("fantasy", "magical"), ("a fantasy", "something with magic"), (),
                             ("more magical", "with more fantasy")),
    "filmnoir": CategoryWords(("noir", "film noir"), ("a film noir", "a noir classic"), (), ("more noir",)),
    "horror": CategoryWords(("scary", "horror", "creepy", "terrifying", "frightening"),
                            ("a horror film", "something scary", "a scary one"), (),
                            ("scarier", "creepier", "more frightening")),
    "musical": CategoryWords(("musical",), ("a musical", "something with songs"), (), ("with more music", "with songs")),
    "mystery": CategoryWords(("mystery", "mysterious", "whodunit"), ("a mystery", "a whodunit", "a detective story"), (),
                             ("more mysterious", "with more mystery")),
    "romance": CategoryWords(("romantic", "romance", "love"), ("a romance", "a love story"), (),
                             ("more romantic", "with more romance")),
    "scifi": CategoryWords(("sci-fi", "science fiction", "futuristic", "space"),
                           ("a sci-fi film", "science fiction", "something set in space"), (),
                           ("more futuristic", "with more sci-fi")),
    "thriller": CategoryWords(("thriller", "suspenseful", "tense", "gripping"), ("a thriller", "something suspenseful"), (),
                              ("darker", "more suspenseful", "more tense")),
    "war": CategoryWords(("war", "wartime", "military"), ("a war movie", "something about soldiers"), (),
                         ("with more war", "set in a war")),
    "western": CategoryWords(("western", "cowboy", "wild west"), ("a western", "a cowboy movie"), (),
                             ("set in the wild west", "with cowboys")),
}

DECADE_WORDS = {1920: "twenties", 1930: "thirties", 1940: "forties", 1950: "fifties", 1960: "sixties",
                1970: "seventies", 1980: "eighties", 1990: "nineties"}


def intent_words(extra: frozenset[str] = frozenset()) -> frozenset[str]:
    """Every word of the request vocabulary (categories, wishes, decades), plus ``extra``."""
    words = set(extra) | set(DECADE_WORDS.values())
    for entry in CATEGORY_WORDS.values():
        for phrase in (*entry.adjectives, *entry.nouns, *entry.suffixes, *entry.wishes):
            words.update(re.sub(r"[^\w]+", " ", phrase.lower()).split())
    return frozenset(words)
