"""Finding catalogue items from the words people use: "toy story", "Silence of the Lambs", "Toy Stroy".

Users name items by title, not by ID, and rarely spell them as the catalogue does ("American President,
The (1995)"). Titles are compared in a normal form (lower case, no year, no leading article, punctuation
as spaces); a name resolves exactly when the normal forms agree, else fuzzily (``difflib`` ratio), else to
the most popular title it begins ("Star Wars" → "Star Wars: Episode IV - A New Hope").
When several items share a normal form (remakes), the most popular one wins.
"""

from __future__ import annotations

import difflib
import numbers
import re
from collections import defaultdict
from collections.abc import Sequence

_YEAR = re.compile(r"\(\s*\d{4}\s*\)")
_NON_WORD = re.compile(r"[^\w]+")
_ARTICLES = ("the", "a", "an")
_STOPWORDS = frozenset("the a an and or of in on to for with i me my you it is was this that like loved liked "
                       "love watched something some what should next maybe more less movie film".split())


def normalize_title(text: str) -> str:
    """Lower case, no year in parentheses, punctuation as spaces, no leading article, no ", The" suffix."""
    text = _YEAR.sub(" ", text.lower())
    words = _NON_WORD.sub(" ", text).split()
    if len(words) > 1 and words[-1] in _ARTICLES:  # "american president the" (catalogue style)
        words = [words[-1], *words[:-1]]
    if len(words) > 1 and words[0] in _ARTICLES:
        words = words[1:]
    return " ".join(words)


class TitleIndex:
    """Title → codebook index, exact or fuzzy, and item mentions in free text."""

    def __init__(self, titles: Sequence[str], popularity: Sequence[int] | None = None,
                 item_ids: Sequence[str] | None = None, fuzzy_cutoff: float = 0.85):
        self.titles = list(titles)
        self.fuzzy_cutoff = fuzzy_cutoff
        pop = list(popularity) if popularity is not None else [0] * len(self.titles)
        self._item_ids = {str(i): n for n, i in enumerate(item_ids or [])}
        self._by_form: dict[str, int] = {}
        for index in sorted(range(len(self.titles)), key=lambda i: (-pop[i], i)):  # most popular first wins
            form = normalize_title(self.titles[index])
            if form:
                self._by_form.setdefault(form, index)
        self._by_word: dict[str, set[str]] = defaultdict(set)
        for form in self._by_form:
            for word in form.split():
                if word not in _STOPWORDS:
                    self._by_word[word].add(form)
        self._max_words = max((len(f.split()) for f in self._by_form), default=1)

    def lookup(self, name: str) -> int | None:
        """The item a user means by ``name`` (an item id, a title, or a near miss), or None."""
        name = name.strip()
        if name in self._item_ids:
            return self._item_ids[name]
        form = normalize_title(name)
        if not form:
            return None
        if form in self._by_form:
            return self._by_form[form]
        best = self._closest(form) or self._prefix(form)
        return self._by_form[best[1]] if best else None

    def resolve(self, names: Sequence[str | int]) -> tuple[list[int], list[str]]:
        """Codebook indices for ``names`` and the names that matched nothing. A string is an item id or a title
        (exact, normal form, fuzzy, or a title's start); an int is an item id as in the data (``1`` and ``"1"``
        alike), never a codebook index."""
        found, missing = [], []
        for name in names:
            if isinstance(name, numbers.Integral) and not isinstance(name, bool):
                index = self._item_ids.get(str(name))
            else:
                index = self.lookup(str(name))
            (missing.append(str(name)) if index is None else found.append(index))
        return found, missing

    def find_mentions(self, text: str) -> list[int]:
        """Items named anywhere in ``text``, in order of mention.

        Quoted names ("..." or '...') are looked up whole (fuzzy allowed). Elsewhere every run of words is
        compared with the catalogue: exact normal forms of any length; fuzzy matches and title beginnings
        ("Star Wars") only for runs of two or more words (a single common word is too easily a title);
        exact before fuzzy, longer before shorter, never overlapping.
        """
        found: list[tuple[int, int]] = []  # (position, item)
        for match in re.finditer(r"\"([^\"]+)\"|“([^”]+)”|'([^']{3,})'", text):
            item = self.lookup(next(g for g in match.groups() if g))
            if item is not None:
                found.append((match.start(), item))
            text = text[: match.start()] + " " * (match.end() - match.start()) + text[match.end():]
        spans = [(m.start(), m.group()) for m in re.finditer(r"[\w']+", text)]
        words = [w.lower() for _, w in spans]
        candidates = []  # (-score, -words, start, end, item): exact before fuzzy, then longer first
        for start in range(len(words)):
            for end in range(start + 1, min(len(words), start + self._max_words + 1) + 1):
                phrase = normalize_title(" ".join(words[start:end]))
                if not phrase or all(w in _STOPWORDS for w in words[start:end]):
                    continue
                if phrase in self._by_form:
                    if " " not in phrase and not any(w.lower() == phrase and w[:1].isupper() for _, w in spans[start:end]):
                        continue  # "heat" in a sentence is a word; "Heat" may be the film
                    candidates.append((-1.0, -(end - start), start, end, self._by_form[phrase]))
                elif end - start >= 2:
                    best = self._closest(phrase) or self._prefix(phrase)
                    if best:
                        candidates.append((-best[0], -(end - start), start, end, self._by_form[best[1]]))
        used = [False] * len(words)
        for _, _, start, end, item in sorted(candidates):
            if not any(used[start:end]):
                used[start:end] = [True] * (end - start)
                found.append((spans[start][0], item))
        ordered, seen = [], set()
        for _, item in sorted(found):
            if item not in seen:
                seen.add(item)
                ordered.append(item)
        return ordered

    def _prefix(self, form: str) -> tuple[float, str] | None:
        """The most popular title that starts with ``form`` ("star wars" → "star wars episode iv ...")."""
        head = form + " "
        for candidate in self._by_form:  # most popular first
            if candidate.startswith(head):
                return (0.5, candidate)
        return None

    def _closest(self, form: str) -> tuple[float, str] | None:
        """The catalogue form most similar to ``form`` among those sharing a content word, if close enough."""
        pool = set().union(*(self._by_word.get(w, set()) for w in form.split() if w not in _STOPWORDS))
        best = None
        for candidate in pool:
            if abs(len(candidate) - len(form)) > max(3, len(form) // 4):
                continue
            score = difflib.SequenceMatcher(None, form, candidate, autojunk=False).ratio()
            if score >= self.fuzzy_cutoff and (best is None or score > best[0]):
                best = (score, candidate)
        return best
