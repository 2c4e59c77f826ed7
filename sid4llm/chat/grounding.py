"""Whether the words of an answer say only what the catalogue or the request supports.

A small instruct LM does not know the catalogue's items; asked to present them, it invents release dates, numbers
and names ("released on 8 November", "an outlaw named Droughtskin"). An answer may state a number, a date or a proper
name only where its grounding — the listed items' titles, categories and years, the request, the assistant's prompt —
holds it. :func:`ungrounded_facts` finds what it does not; :func:`unsupported_token_ids` gives the tokens the LM is
kept from writing at all (digits and month names the grounding lacks).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MONTHS = frozenset("january february march april may june july august september october november december".split())
# Spelled numbers that state a quantity ("one" is left out: "one of the best" states none).
NUMBER_WORDS = frozenset("two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
                         "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred "
                         "thousand million billion dozen".split())
# Capitalised words that name nobody: the pronoun, and words an answer opens a clause with.
_PLAIN_CAPITALS = frozenset("i i'd i'm i've i'll".split())
_WORD = re.compile(r"[A-Za-z][\w'’-]*|\d[\d,.]*(?:s|st|nd|rd|th)?\b")
_CLAUSE_START = re.compile(r"(^|[.!?:;\"“(\n]\s*)$")


def _words(text: str) -> set[str]:
    return {w.lower().strip("'’-") for w in _WORD.findall(text)}


def _years(text: str) -> set[int]:
    return {int(y) for y in re.findall(r"\b(1[5-9]\d\d|20\d\d)\b", text)}


def _number_is_grounded(token: str, grounding_words: set[str], years: set[int]) -> bool:
    bare = token.lower().rstrip(".,")
    if bare in grounding_words:
        return True
    decade = re.fullmatch(r"(\d{2}|\d{4})s", bare)  # "90s", "1990s": grounded by a year of that decade
    if decade:
        value = int(decade.group(1))
        return any((y % 100 if value < 100 else y) // 10 * 10 == value for y in years)
    return False


def ungrounded_facts(text: str, grounding: str | Iterable[str]) -> list[str]:
    """The numbers (digits, spelled quantities), month names and proper names (capitalised words inside a clause)
    in ``text`` that ``grounding`` (a text, or several) does not contain, in order of appearance."""
    grounding = grounding if isinstance(grounding, str) else "\n".join(grounding)
    known, years = _words(grounding), _years(grounding)
    found = []
    for match in _WORD.finditer(text):
        word = match.group(0)
        lower = word.lower().strip("'’-")
        if word[0].isdigit():
            grounded = _number_is_grounded(word, known, years)
        elif lower in MONTHS and word[0].isupper():
            grounded = lower in known
        elif lower in NUMBER_WORDS:
            grounded = lower in known
        elif word[0].isupper() and not _CLAUSE_START.search(text[:match.start()]):
            grounded = lower in known or lower in _PLAIN_CAPITALS
        else:
            grounded = True
        if not grounded:
            found.append(word)
    return found


def unsupported_token_ids(fact_tokens: dict[int, str], grounding: str) -> list[int]:
    """Of ``fact_tokens`` (:func:`fact_token_ids`), the tokens whose text the grounding does not hold."""
    known = _words(grounding) | set(re.findall(r"\d", grounding))
    return [t for t, piece in fact_tokens.items() if piece not in known]


def fact_token_ids(tokenizer) -> dict[int, str]:
    """The vocabulary's tokens that state a number or a date on their own — any with a digit, and the capitalised
    month names — each with its text (stripped, lower case). Scanned once per tokenizer."""
    pieces = tokenizer.batch_decode([[t] for t in range(len(tokenizer))])
    return {t: piece.strip().lower() for t, piece in enumerate(pieces)
            if piece.strip() and (any(c.isdigit() for c in piece)
                                  or (piece.strip().lower() in MONTHS and piece.strip()[:1].isupper()))}
