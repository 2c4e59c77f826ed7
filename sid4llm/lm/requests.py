"""Natural-language requests paired with the items that answer them, built from the catalogue's own metadata.

This is how the LM learns to go from words to IDs ("a funny animated movie for my kids" → animated
children's comedies): every request is written from an item's categories, its decade, its title, an anchor
item and a wish ("like The Matrix but scarier"), or a real user's recent items, in many phrasings. A request is
read by the model as ``words <|sid_user|> named items…`` and answered by ID-stream items (codes + end marker),
the same format as a user's history, so one decoding path serves histories and requests alike.

Phrasings are split: the ``train`` frames are used for training, the ``held_out`` frames only for evaluation
(``scripts/bench_chat.py``), and a seeded tenth of the items never anchors a "like <title>" request in
training (:func:`is_held_out_anchor`), so the benchmark measures understanding, not memorised sentences.

Every word comes from the catalogue's profile (:class:`~sid4llm.data.profile.CatalogueProfile`): what an item is
called, the sentence frames, and the everyday words of its categories ("funny" → Comedy on MovieLens); a category
the profile does not describe is asked for by its own name ("something in toys & games").
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..data.profile import DECADE_WORDS, CatalogueProfile, CategoryWords
from ..data.titles import item_year, spoken_title


def is_held_out_anchor(item_id: str) -> bool:
    """A fixed tenth of the items (by a hash of the id, the same on every machine) never anchors a "like
    <title>" request in training, so the benchmark can ask about items the model never heard named."""
    return int(hashlib.sha256(str(item_id).encode()).hexdigest()[:8], 16) % 10 == 0


@dataclass(frozen=True)
class Request:
    """One request: the words, the items it names (read as an ID stream), what it asks for (every constraint
    an answer must meet: categories and a decade), and answers for training."""

    kind: str
    text: str
    named: tuple[int, ...] = ()
    categories: tuple[str, ...] = ()
    decade: int | None = None
    answers: tuple[int, ...] = field(default=(), compare=False)


class RequestWriter:
    """Writes requests about one catalogue: ``categories`` and ``titles`` per item, train popularity, and the
    train histories (for "like <title>" neighbours and real users' next items)."""

    def __init__(self, titles: Sequence[str], categories: Sequence[Sequence[str]], popularity: np.ndarray,
                 histories: Sequence[Sequence[int]], item_ids: Sequence[str], profile: CatalogueProfile | None = None,
                 neighbours: int = 50, seed: int = 0):
        self.titles, self.item_ids = list(titles), [str(i) for i in item_ids]
        self.categories = [tuple(c or ()) for c in categories]
        self.popularity = np.asarray(popularity, dtype=float)
        self.histories = [list(h) for h in histories]
        self.profile = profile or CatalogueProfile()
        self.item_nouns = self.profile.nouns
        self._frames = {(kind, split): self.profile.request_frames(kind, split)
                        for kind in ("describe", "like", "like_wish", "history", "history_wish", "title")
                        for split in ("train", "held_out")}
        self.rng = random.Random(seed)
        n = len(self.titles)
        self.years = [item_year(t) for t in self.titles]
        self.by_category: dict[str, list[int]] = {}
        for i, cats in enumerate(self.categories):
            for c in cats:
                self.by_category.setdefault(c, []).append(i)
        self.weights = np.sqrt(self.popularity + 1.0)  # answers lean popular, but the tail still appears
        self._cumulative = np.cumsum(self.weights).tolist()
        self.neighbours = co_occurrence_neighbours(self.histories, n, neighbours)

    # ------------------------------------------------------------------ words
    def words(self, category: str) -> CategoryWords:
        known = self.profile.words_for(category)
        if known is not None:
            return known
        name = category.lower()
        return CategoryWords((name,), (f"something in {name}", f"a {name} one"), (), (f"more {name}",))

    def describe(self, categories: Sequence[str], decade: int | None) -> str:
        """A noun phrase for categories and a decade: "a funny animated movie for my kids from the 90s"."""
        rng = self.rng
        adjectives, suffixes = [], []
        if len(categories) == 1 and decade is None and rng.random() < 0.4:
            nouns = self.words(categories[0]).nouns
            if nouns:
                return rng.choice(nouns)
        for c in categories:
            w = self.words(c)
            if w.suffixes and (not w.adjectives or rng.random() < 0.6):
                suffixes.append(rng.choice(w.suffixes))
            elif w.adjectives:
                adjectives.append(rng.choice(w.adjectives))
        head = " ".join([*adjectives, rng.choice(self.item_nouns)])
        article = "an" if head[:1].lower() in "aeiou" else "a"
        phrase = " ".join([f"{article} {head}", *suffixes])
        if decade is not None:
            phrase += " " + self.decade_phrase(decade)
        return phrase

    def decade_phrase(self, decade: int) -> str:
        rng = self.rng
        short = f"{decade % 100:02d}s"
        options = [f"from the {short}", f"from the {decade}s"]
        if decade in DECADE_WORDS:
            options.append(f"from the {DECADE_WORDS[decade]}")
        return rng.choice(options)

    def wish(self, category: str) -> str:
        w = self.words(category)
        return self.rng.choice(w.wishes or w.adjectives or (category.lower(),))

    def title_words(self, item: int) -> str:
        rng = self.rng
        text = spoken_title(self.titles[item], with_year=rng.random() < 0.2)
        return text.lower() if rng.random() < 0.3 else text

    def frame(self, kind: str, split: str) -> str:
        return self.rng.choice(self._frames[kind, split])

    # ------------------------------------------------------------------ requests
    def sample_item(self) -> int:
        return self.rng.choices(range(len(self.titles)), cum_weights=self._cumulative)[0]

    def answers_for(self, categories: Sequence[str], decade: int | None, count: int,
                    exclude: Sequence[int] = ()) -> list[int]:
        """Items meeting every constraint, sampled without replacement (leaning popular)."""
        pool = self.matching(categories, decade, exclude)
        if not pool:
            return []
        weights = self.weights[pool]
        chosen = np.random.default_rng(self.rng.randrange(2**32)).choice(
            len(pool), size=min(count, len(pool)), replace=False, p=weights / weights.sum())
        return [pool[i] for i in chosen]

    def matching(self, categories: Sequence[str], decade: int | None, exclude: Sequence[int] = ()) -> list[int]:
        if categories:
            sets = [set(self.by_category.get(c, ())) for c in categories]
            pool = set.intersection(*sets)
        else:
            pool = set(range(len(self.titles)))
        if decade is not None:
            pool = {i for i in pool if self.years[i] is not None and self.years[i] // 10 * 10 == decade}
        return sorted(pool - set(exclude))

    def describe_request(self, split: str = "train", answers: int = 3) -> Request | None:
        """Categories (one to three, from one item so the combination exists) and sometimes a decade."""
        rng = self.rng
        item = self.sample_item()
        cats = list(self.categories[item])
        if not cats:
            return None
        rng.shuffle(cats)
        n = min(len(cats), rng.choices([1, 2, 3], weights=[5, 4, 1])[0])
        chosen = tuple(sorted(cats[:n]))
        year = self.years[item]
        decade = year // 10 * 10 if year is not None and rng.random() < 0.25 else None
        found = self.answers_for(chosen, decade, answers)
        if not found:
            return None
        text = self.frame("describe", split).format(desc=self.describe(chosen, decade))
        return Request("describe", _capitalise(text, rng), (), chosen, decade, tuple(found))

    def anchor(self, split: str) -> int | None:
        """An item to name: never a held-out anchor in training, only held-out ones in evaluation (None when the
        catalogue has none with co-occurring items)."""
        for _ in range(1000):
            item = self.sample_item()
            if is_held_out_anchor(self.item_ids[item]) == (split == "held_out") and self.neighbours[item]:
                return item
        return None

    def like_request(self, split: str = "train", answers: int = 3, with_wish: bool = False) -> Request | None:
        """"Something like <title>" (its co-occurring items), or "... but <wish>" (those in the wished category)."""
        rng = self.rng
        anchor = self.anchor(split)
        if anchor is None:
            return None
        near = [i for i in self.neighbours[anchor] if i != anchor]
        title = self.title_words(anchor)
        if not with_wish:
            found = near[: max(answers * 3, 10)]
            rng.shuffle(found)
            if not found:
                return None
            text = self.frame("like", split).format(title=title)
            return Request("like", _capitalise(text, rng), (anchor,), (), None, tuple(found[:answers]))
        wished = [c for c in self.by_category if c not in self.categories[anchor]]
        if not wished:
            return None
        category = rng.choice(wished)
        found = [i for i in near if category in self.categories[i]][:answers]
        if len(found) < answers:
            found += self.answers_for((category,), None, answers - len(found), exclude=[anchor, *found])
        if not found:
            return None
        text = self.frame("like_wish", split).format(title=title, wish=self.wish(category))
        return Request("like_wish", _capitalise(text, rng), (anchor,), (category,), None, tuple(found))

    def history_request(self, split: str = "train", max_named: int = 5, with_wish: bool = False) -> Request | None:
        """A real user's recent items named by title, answered by the item that user took next (optionally
        with a wish in that item's categories)."""
        rng = self.rng
        user = rng.randrange(len(self.histories))
        history = self.histories[user]
        if len(history) < 2:
            return None
        position = rng.randrange(1, len(history))
        named = history[max(0, position - rng.randint(1, max_named)):position]
        target = history[position]
        titles = _join([self.title_words(i) for i in named])
        if with_wish:
            cats = self.categories[target]
            if not cats:
                return None
            category = rng.choice(cats)
            text = self.frame("history_wish", split).format(titles=titles, wish=self.wish(category))
            return Request("history_wish", _capitalise(text, rng), tuple(named), (category,), None, (target,))
        text = self.frame("history", split).format(titles=titles)
        return Request("history", _capitalise(text, rng), tuple(named), (), None, (target,))

    def title_request(self, split: str = "train") -> Request:
        """A title alone → that item: ties title words to ID tokens."""
        item = self.sample_item()
        text = self.frame("title", split).format(title=self.title_words(item))
        return Request("title", text, (), (), None, (item,))

    def sample(self, split: str = "train", answers: int = 3) -> Request | None:
        kind = self.rng.choices(list(KIND_SHARES), weights=list(KIND_SHARES.values()))[0]
        if kind == "describe":
            return self.describe_request(split, answers)
        if kind in ("like", "like_wish"):
            return self.like_request(split, answers, with_wish=kind == "like_wish")
        if kind in ("history", "history_wish"):
            return self.history_request(split, with_wish=kind == "history_wish")
        return self.title_request(split)

    def requests(self, count: int, split: str = "train", answers: int = 3) -> list[Request]:
        """``count`` requests of every kind the catalogue can answer (a kind it cannot, such as descriptions of
        a catalogue without categories, is skipped)."""
        out: list[Request] = []
        for _ in range(50 * count):
            if len(out) == count:
                break
            request = self.sample(split, answers)
            if request is not None and request.answers:
                out.append(request)
        if len(out) < count:
            raise ValueError(f"only {len(out)} of {count} requests could be written from this catalogue: it needs "
                             "titles, and categories or co-occurring items in the train histories")
        return out


# What share of training requests each kind gets: descriptions dominate (the words → IDs map is the new skill).
KIND_SHARES = {"describe": 0.45, "like": 0.1, "like_wish": 0.15, "history": 0.1, "history_wish": 0.1, "title": 0.1}


def co_occurrence_neighbours(histories: Sequence[Sequence[int]], n_items: int, top: int = 50,
                             window: int = 5) -> list[list[int]]:
    """Per item, the items most often taken within ``window`` steps of it in the train histories, best first."""
    pairs = []
    for history in histories:
        h = np.asarray(history, dtype=np.int64)
        for gap in range(1, window + 1):
            if len(h) > gap:
                pairs.append(h[:-gap] * n_items + h[gap:])
                pairs.append(h[gap:] * n_items + h[:-gap])
    if not pairs:
        return [[] for _ in range(n_items)]
    keys, counts = np.unique(np.concatenate(pairs), return_counts=True)
    first, second = keys // n_items, keys % n_items
    order = np.lexsort((-counts, first))
    first, second = first[order], second[order]
    starts = np.searchsorted(first, np.arange(n_items + 1))
    return [second[starts[i]:starts[i + 1]][:top].tolist() for i in range(n_items)]


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _capitalise(text: str, rng: random.Random) -> str:
    if rng.random() < 0.25:
        return text.lower()
    return text[:1].upper() + text[1:]
