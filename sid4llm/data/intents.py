"""The words of a request that are not titles: decades, and the catalogue profile's nouns, verbs and everyday
category words ("funny" → Comedy, :class:`~sid4llm.data.profile.CatalogueProfile`).

The request tasks (:mod:`sid4llm.lm.requests`) write training requests with these words, and mention detection
(:mod:`sid4llm.data.titles`) uses them to keep a wish ("a good war movie") from being read as a title.
"""

from __future__ import annotations

from .profile import CatalogueProfile

DECADE_WORDS = {1920: "twenties", 1930: "thirties", 1940: "forties", 1950: "fifties", 1960: "sixties",
                1970: "seventies", 1980: "eighties", 1990: "nineties"}


def intent_words(profile: CatalogueProfile, extra: frozenset[str] = frozenset()) -> frozenset[str]:
    """Every word of the request vocabulary (the profile's words, decades), plus ``extra``."""
    return frozenset(set(extra) | set(DECADE_WORDS.values()) | profile.vocabulary())
