"""Whether the words of an answer say only what the catalogue or the request supports.

A small instruct LM does not know the catalogue's items; asked to present them, it invents release dates, numbers
and names ("released on 8 November", "an outlaw named Droughtskin"). An answer may state a number, a date or a proper
name only where its grounding — the listed items' titles, categories and years, the request, the assistant's prompt —
holds it. :func:`ungrounded_facts` finds what it does not; :func:`unsupported_token_ids` gives the tokens the LM is
kept from writing at all (digits and month names the grounding lacks).

Claims in plain words are the other half ("it's about a young man who is turned into stone"): :func:`ungrounded_claims`
finds the content words an answer uses that neither the grounding nor the words of recommending itself
(:data:`RECOMMENDING_WORDS`: "great", "enjoy", "fans"...) hold — a lexical check, so a word that only shares its
first letters with a listed category ("comedic" beside "Comedy") counts as grounded.
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
# Words that carry no claim about an item: pronouns, articles, prepositions, auxiliaries, conjunctions, common adverbs.
FUNCTION_WORDS = frozenset("""
a an the this that these those it its it's itself they them their theirs you your yours yourself we us our i me my mine
he him his she her hers one ones who whom whose which what whatever when where why how there here
is are was were be been being am do does did done doing have has had having will would shall should can could may
might must ought get gets got getting go goes going gone let lets
and or but nor so yet if then than because since as while though although unless until whether also too either
neither both each every all any some no not none only just even still already again ever never always often sometimes
very really quite rather much more most less least many few several such same other another own enough
of in on at to for from by with about into onto over under after before between through during without within
against among around up down out off away back above below near like unlike per via
s t d ll m re ve n't don't doesn't isn't aren't wasn't weren't won't wouldn't can't couldn't shouldn't
yes oh well so ok okay please thanks thank hi hello
""".split())
# The words of recommending, whatever the catalogue: appreciation, fit and advice. They state nothing an item's
# metadata could contradict. A profile adds its own (:attr:`~sid4llm.data.profile.CatalogueProfile.answer_words`).
RECOMMENDING_WORDS = frozenset("""
great good better best fine nice lovely wonderful excellent fantastic amazing awesome brilliant superb terrific
perfect ideal solid strong safe top favourite favorite favourites favorites fun enjoyable delightful special
classic classics popular beloved timeless memorable
choice choices pick picks option options suggestion suggestions recommendation recommendations list start place
enjoy enjoys enjoyed love loves loved like likes liked want wants wanted need needs think believe hope guess know
recommend recommended suggest suggested try tried check give fit fits fitting match matches suit suits suited
appeal appeals worth worthwhile definitely certainly surely sure probably maybe perhaps especially particularly
exactly right absolutely truly simply
fan fans taste tastes mood interest interests looking look find found see seen sort kind kinds type types
something anything everything someone anyone everyone everybody nobody thing things way ways time lot lots bit
next first second last new old whole little big
""".split())
_CONTRACTION = re.compile(r"(?:['’](?:s|re|ll|ve|d|m|t)|n['’]t)$")
_STEM = 5  # letters two words must share to count as one ("comedic" / "Comedy", "animated" / "Animation")

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


def content_words(text: str) -> list[str]:
    """The words of ``text`` that may carry a claim, lower case, contractions cut ("it's" -> "it")."""
    words = []
    for word in re.findall(r"[A-Za-z][A-Za-z'’-]*", text):
        lower = word.lower().strip("'’-")
        bare = _CONTRACTION.sub("", lower)
        if lower not in FUNCTION_WORDS and bare not in FUNCTION_WORDS and len(bare) > 1:
            words.append(bare)
    return words


def _stem(word: str) -> str:
    """A crude stem that is enough to match a word with its listed form: the singular's first letters."""
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        word = word[:-1]
    return word[:_STEM]


def _stems(words: Iterable[str]) -> set[str]:
    return {_stem(w) for w in words}


def ungrounded_claims(text: str, grounding: str | Iterable[str], allowed: Iterable[str] = ()) -> list[str]:
    """The content words of ``text`` (not function words, not :data:`RECOMMENDING_WORDS`, not ``allowed``) that
    ``grounding`` does not hold, in order of appearance: where an answer says more than the catalogue and the request
    support ("about a young man turned into stone")."""
    grounding = grounding if isinstance(grounding, str) else "\n".join(grounding)
    known = _stems(content_words(grounding)) | _stems(w.lower() for w in allowed) | _stems(RECOMMENDING_WORDS)
    return [w for w in content_words(text) if _stem(w) not in known]


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
