"""Finding catalogue items from the words people use: "toy story", "the matrix", "Toy Stroy", "Terminator 2".

Users name items by title, not by ID, and rarely spell them as the catalogue does ("Matrix, The (1999)").
Titles are compared in a normal form (lower case, no year, no leading article, punctuation as spaces, roman
numerals as digits); a name resolves exactly when the normal forms agree, else fuzzily (``difflib`` ratio), else
to the most popular title it begins ("Star Wars" → "Star Wars: Episode IV - A New Hope").
When several items share a normal form (remakes), the most popular one wins.

In free text, ordinary words must never become titles: a run of words that only describes what is wanted
("funny", "a good war movie", "crime", "mystery") is never a title unless quoted or Written In Title Case, and
a one-word title counts only when written with a capital, quoted, after a cue such as "like" or "loved"
("something like alien"), or in a list with one ("the lion king and aladdin").
"""

from __future__ import annotations

import difflib
import numbers
import re
from collections import defaultdict
from collections.abc import Sequence

from ..data.profile import DECADE_WORDS, CatalogueProfile
from ..data.titles import ROMAN_NUMERALS, article_form, normalize_title, title_aliases

_STOPWORDS = frozenset("the a an and or of in on to for with i me my you it is was this that like loved liked "
                       "love something some what should next maybe more less from about at by "
                       "as so we us our your his her they them be are were have has had do does did can could would "
                       "will up out if not no yes all what's i'm it's i've i'd".split())
# Words that precede a title a person names ("something like alien", "I loved heat").
_CUES = frozenset("like loved liked likes love loves enjoyed enjoy enjoys seen saw than adore adored adores".split())
# Words that describe what is wanted rather than name it: never a title on their own (unless quoted).
_GENERIC = frozenset("good great best nice new old classic recent favourite favorite please want need recommend "
                     "suggest tonight night one ones show me kids kid family "
                     "fun something anything else similar but now then just only also really very much "
                     "any some other another again last night yesterday today week weekend evening".split())




def intent_words(profile: CatalogueProfile, extra: frozenset[str] = frozenset()) -> frozenset[str]:
    """Every word of the request vocabulary (the profile's words, decades), plus ``extra``: a run of these alone
    never names an item."""
    return frozenset(set(extra) | set(DECADE_WORDS.values()) | profile.vocabulary())


class TitleIndex:
    """Title → codebook index, exact or fuzzy, and item mentions in free text."""

    def __init__(self, titles: Sequence[str], popularity: Sequence[int] | None = None,
                 item_ids: Sequence[str] | None = None, fuzzy_cutoff: float = 0.85,
                 profile: CatalogueProfile | None = None):
        """``profile``: the catalogue's words (its nouns, verbs, category words), which alone never name an item."""
        self.titles = list(titles)
        profile = profile or CatalogueProfile()
        # the item's nouns and the verb's past are function words here ("the movie", "I watched"), as "the" is
        self._stop = _STOPWORDS | {w.lower() for w in (profile.item_noun, *profile.nouns)} | set(profile.verb_past.lower().split())
        self._cues = _CUES | set(profile.verb_past.lower().split())
        self.fuzzy_cutoff = fuzzy_cutoff
        pop = list(popularity) if popularity is not None else [0] * len(self.titles)
        self._item_ids = {str(i): n for n, i in enumerate(item_ids or [])}
        self._by_form: dict[str, int] = {}
        self._by_article_form: dict[str, int] = {}
        by_popularity = sorted(range(len(self.titles)), key=lambda i: (-pop[i], i))  # most popular first wins
        for index in by_popularity:
            form = normalize_title(self.titles[index])
            if form:
                self._by_form.setdefault(form, index)
            full = article_form(self.titles[index])
            if full:
                self._by_article_form.setdefault(full, index)
        for index in by_popularity:  # aliases rank below every real form
            for alias in title_aliases(self.titles[index]):
                self._by_form.setdefault(alias, index)
        self._intent = intent_words(profile, _GENERIC)
        self._by_word: dict[str, set[str]] = defaultdict(set)
        for form in self._by_form:
            for word in form.split():
                if word not in self._stop:
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
        ("Star Wars") only for runs of two or more content words; never a run that only describes what is
        wanted ("funny", "good war"); a one-word title only when capitalised, after its article ("the
        matrix") or after a cue word ("like alien"); exact before fuzzy, longer before shorter, never
        overlapping.
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
                run = words[start:end]
                content = [w for w in run if w not in self._stop]
                cased = [w for _, w in spans[start:end]]
                title_case = end - start >= 2 and all(w[:1].isupper() or w.lower() in self._stop for w in cased)
                if not content or (all(w in self._intent or w.isdigit() for w in content) and not title_case):
                    continue  # only words of a wish ("a good war movie"): not a title, unless Written Like One
                phrase, with_article = normalize_title(" ".join(run)), " ".join(ROMAN_NUMERALS.get(w, w) for w in run)
                if with_article in self._by_article_form:
                    candidates.append((-1.0, -(end - start), start, end, self._by_article_form[with_article]))
                elif phrase in self._by_form:
                    if " " not in phrase and not (any(w.lower() == phrase and w[:1].isupper() for w in cased)
                                                  or (end - start == 1 and self._named_in_a_list(words, start))):
                        continue  # "heat" in a sentence is a word; "Heat" or "like heat" may be the film
                    candidates.append((-1.0, -(end - start), start, end, self._by_form[phrase]))
                elif len(content) >= 2:
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

    def _named_in_a_list(self, words: list[str], at: int) -> bool:
        """Whether the lowercase word at ``at`` is named as a title: right after a cue ("like alien"), in a list
        after a cue ("I loved the lion king and aladdin"), or joined to another one-word title ("gladiator and
        braveheart")."""
        if at > 0 and words[at - 1] in self._cues:
            return True
        joined = at > 0 and words[at - 1] in ("and", "or")
        if joined and any(w in self._cues for w in words[:at - 1]):
            return True
        neighbours = [at - 2] if joined else []
        if at + 2 < len(words) and words[at + 1] in ("and", "or"):
            neighbours.append(at + 2)
        return any(0 <= n < len(words) and self._single_word_title(words[n]) for n in neighbours)

    def _single_word_title(self, word: str) -> bool:
        return word not in self._intent and word not in self._stop and normalize_title(word) in self._by_form

    def _prefix(self, form: str) -> tuple[float, str] | None:
        """The most popular title that starts with ``form`` ("star wars" → "star wars episode iv ...")."""
        head = form + " "
        for candidate in self._by_form:  # most popular first
            if candidate.startswith(head):
                return (0.5, candidate)
        return None

    def _closest(self, form: str) -> tuple[float, str] | None:
        """The catalogue form most similar to ``form`` among those sharing a content word, if close enough; a
        number in ``form`` must be in the candidate too ("terminator 2" is not "terminator")."""
        pool = set().union(*(self._by_word.get(w, set()) for w in form.split() if w not in self._stop))
        numbers = {w for w in form.split() if w.isdigit()}
        best = None
        for candidate in pool:
            if abs(len(candidate) - len(form)) > max(3, len(form) // 4) or not numbers <= set(candidate.split()):
                continue
            score = difflib.SequenceMatcher(None, form, candidate, autojunk=False).ratio()
            if score >= self.fuzzy_cutoff and (best is None or score > best[0]):
                best = (score, candidate)
        return best
