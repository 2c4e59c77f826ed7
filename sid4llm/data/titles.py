"""How catalogue titles are written and said: "Matrix, The (1999)" is "The Matrix" to a person, from 1999, and
compares as "matrix" (lower case, no year, no leading article, roman numerals as digits). Mention detection in free
text builds on these forms (:mod:`sid4llm.chat.mentions`)."""

from __future__ import annotations

import re

_YEAR = re.compile(r"\(\s*\d{4}\s*\)")
_NON_WORD = re.compile(r"[^\w]+")
_ARTICLES = ("the", "a", "an")
ROMAN_NUMERALS = {"ii": "2", "iii": "3", "iv": "4", "v": "5", "vi": "6", "vii": "7", "viii": "8", "ix": "9", "x": "10"}
_TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")
_TRAILING_ARTICLE = re.compile(r"^(.*), (The|A|An)( \(\d{4}\))?$")


def item_year(title: str) -> int | None:
    """The year a catalogue title ends with ("Toy Story (1995)" → 1995), or None."""
    match = _TITLE_YEAR.search(title or "")
    return int(match.group(1)) if match else None


def spoken_title(title: str, with_year: bool = False) -> str:
    """How a person types a catalogue title: "Matrix, The (1999)" → "The Matrix"."""
    match = _TRAILING_ARTICLE.match(title)
    if match:
        title = f"{match.group(2)} {match.group(1)}{match.group(3) or ''}"
    return title if with_year else _TITLE_YEAR.sub("", title).strip()


def normalize_title(text: str, keep_article: bool = False) -> str:
    """Lower case, no year in parentheses, punctuation as spaces, a ", The" suffix moved to the front, roman
    numerals as digits, and no leading article (unless ``keep_article``)."""
    text = _YEAR.sub(" ", text.lower())
    words = _NON_WORD.sub(" ", text).split()
    if len(words) > 1 and words[-1] in _ARTICLES:  # "american president the" (catalogue style)
        words = [words[-1], *words[:-1]]
    if len(words) > 1 and words[0] in _ARTICLES and not keep_article:
        words = words[1:]
    return " ".join(ROMAN_NUMERALS.get(w, w) for w in words)


_ALIAS = re.compile(r"\(([^()]*[^\d\s()][^()]*)\)")


def title_aliases(title: str) -> list[str]:
    """Other names a title carries: "Seven (Se7en) (1995)" is also "seven" and "se7en"."""
    inner = [m.group(1) for m in _ALIAS.finditer(title)]
    if not inner:
        return []
    forms = [normalize_title(_ALIAS.sub(" ", title)), *(normalize_title(i) for i in inner)]
    return [f for f in forms if f]


def article_form(text: str) -> str | None:
    """The normal form with its leading article kept ("Matrix, The (1999)" → "the matrix"), or None when the
    title has no article: a lowercase "the matrix" names the film, a lowercase "matrix" alone does not."""
    form = normalize_title(text, keep_article=True)
    return form if " " in form and form.split(" ", 1)[0] in _ARTICLES else None
