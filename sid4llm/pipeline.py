"""``RecommendationPipeline``: the object a notebook or a service holds.

    from sid4llm import RecommendationPipeline
    pipe = RecommendationPipeline.from_pretrained("outputs/quickstart/model")    # or a Hub id
    pipe.recommend(["Toy Story", "Aladdin"], k=5)          # titles, item ids or codebook indices
    pipe.chat([{"role": "user", "content": "A funny animated movie for my kids"}])

Every recommended item comes out of trie-constrained decoding, so it always exists in the catalogue.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from .data.profile import CatalogueProfile
from .data.titles import TitleIndex, spoken_title
from .lm.narration import Narrator
from .lm.recommender import SidRecommender

MAX_MESSAGE_CHARS = 2000  # a longer message is read from its end (the request is usually last)
_SMALL_TALK = frozenset("hi hello hey hiya howdy yo sup hallo thanks thank you thx cheers bye goodbye good morning "
                        "afternoon evening night how are doing what's up there ok okay cool great nice".split())


def _clip(text: str) -> tuple[str, str]:
    """The message as the model reads it, and a note when it had to be cut."""
    if len(text) <= MAX_MESSAGE_CHARS:
        return text, ""
    return text[-MAX_MESSAGE_CHARS:], f"(Your message was long: I read its last {MAX_MESSAGE_CHARS:,} characters.)"


def _quoted(text: str) -> list[str]:
    return [next(g for g in m.groups() if g) for m in re.finditer(r"\"([^\"]+)\"|“([^”]+)”", text)]


def _is_small_talk(text: str) -> bool:
    """A greeting or thanks that asks for nothing ("hi", "thanks!")."""
    words = re.findall(r"[\w']+", text.lower())
    return bool(words) and len(words) <= 6 and all(w in _SMALL_TALK for w in words)


class RecommendationPipeline:
    def __init__(self, recommender: SidRecommender, fuzzy_cutoff: float = 0.85):
        self.recommender = recommender
        self.fuzzy_cutoff = fuzzy_cutoff
        self._titles: TitleIndex | None = None

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | Path, device: str | torch.device | None = None,
                        revision: str | None = None, **kwargs) -> RecommendationPipeline:
        return cls(SidRecommender.from_pretrained(path_or_repo_id, device=device, revision=revision), **kwargs)

    @property
    def codebook(self):
        return self.recommender.codebook

    @property
    def profile(self) -> CatalogueProfile:
        """The catalogue's words (what its items are called, how the assistant speaks), saved with the model."""
        return self.recommender.config.profile

    @property
    def titles(self) -> TitleIndex:
        """Built on first use and again whenever items were added."""
        cb = self.codebook
        if self._titles is None or len(self._titles.titles) != len(cb):
            self._titles = TitleIndex(cb.titles or cb.item_ids, cb.popularity, cb.item_ids, self.fuzzy_cutoff,
                                      self.profile)
        return self._titles

    def item(self, index: int, score: float | None = None) -> dict:
        """The record every answer lists an item as: ``{"item_id", "title", "index", "score"}``."""
        cb = self.codebook
        return {"item_id": cb.item_ids[index], "title": cb.titles[index] if cb.titles else cb.item_ids[index],
                "index": index, "score": score}

    def resolve(self, history: Sequence[str | int], by_index: bool = False) -> list[int]:
        """Codebook indices for a history of titles (exact or fuzzy) or item ids (str or int, as in the data); a
        name that matches nothing is an error naming it. ``by_index``: the history already holds codebook
        indices (checked against the catalogue size)."""
        if by_index:
            bad = [i for i in history if not isinstance(i, numbers.Integral) or not 0 <= i < len(self.codebook)]
            if bad:
                raise ValueError(f"codebook indices must be integers in [0, {len(self.codebook)}), got {bad[:5]!r}")
            return [int(i) for i in history]
        found, missing = self.titles.resolve(history)
        if missing:
            raise KeyError(f"no catalogue item matches {missing!r}; try the exact title or the item id")
        return found

    # ------------------------------------------------------------------ recommending
    def recommend(self, history, k: int = 10, exclude: Sequence[str | int] = (), exclude_history: bool = True,
                  style: str = "ids", num_beams: int | None = None, by_index: bool = False,
                  cold_share: float | None = None) -> list[dict]:
        """Top-``k`` items after ``history`` (or, given a list of histories, one list per history): titles or
        item ids (strings or ints, as in the data). A bare string is one title. ``by_index=True`` takes
        codebook indices instead (in ``history`` and ``exclude``).

        Items in the history (and in ``exclude``) are left out, so the list holds ``k`` new items.
        ``style``: ``ids`` (the sequential prompt) or ``titles`` (the natural-language prompt). ``cold_share``:
        up to that share of the list for items added with :meth:`add_items`, placed by shared ID prefix."""
        if isinstance(history, str):  # one title, not a list of letters
            history = [history]
        if not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k must be a positive number of items, got {k!r}")
        batch = len(history) > 0 and isinstance(history[0], list | tuple)
        histories = [self.resolve(h, by_index) for h in (history if batch else [history])]
        banned = set(self.resolve(list(exclude), by_index))
        results = self.recommender.recommend(histories, k=min(k, len(self.codebook)), num_beams=num_beams, style=style,
                                             exclude_seen=exclude_history, exclude=[banned] * len(histories),
                                             cold_share=cold_share)
        out = [[self.item(r["index"], r["score"]) for r in ranked] for ranked in results]
        return out if batch else out[0]

    # ------------------------------------------------------------------ chatting
    @property
    def chat_style(self) -> str:
        """The prompt a chat turn's list comes from: the request (the message's words + the items it names, as an
        ID stream) when the model learned the ``requests`` task, else the natural-language prompt when it learned
        that, else the ID stream of the items named."""
        tasks = self.recommender.config.prompt.tasks
        return "request" if "requests" in tasks else "titles" if "natural_language" in tasks else "ids"

    @property
    def writes_prose(self) -> bool:
        """Whether chat answers carry words from a whole pretrained instruct LM (see
        :attr:`SidRecommender.has_words_path`); a model from scratch answers with the list only."""
        return self.recommender.has_words_path

    @cached_property
    def narrator(self) -> Narrator:
        rec = self.recommender
        return Narrator(rec.words_model, rec.tokenizer, rec.vocab.new_token_ids, mentions=self.titles.find_mentions,
                        profile=self.profile)

    def chat(self, messages: list[dict], k: int = 5, history: Sequence[str | int] = (), exclude: Sequence[str | int] = (),
             max_new_tokens: int = 40, prose: bool | None = None) -> dict:
        """One assistant turn for a conversation (``[{"role", "content"}, ...]``, the last one the user's).

        Items the user names anywhere in the conversation (by title, fuzzily; ``history`` adds more) are read as an
        ID stream after the words of the last message, and the list is the model's trie-constrained decoding of
        that request (:attr:`chat_style`); items recommended in earlier assistant turns (their ``items``), named
        items and ``exclude`` are left out. With ``prose`` (default: :attr:`writes_prose`) the whole instruct LM
        writes a sentence opened with the first recommended item's title (at most ``max_new_tokens`` of its own). A greeting gets words only; an empty message,
        one without words, or names the catalogue lacks get an answer that says so, never an exception.
        Returns ``{"role": "assistant", "content", "items", "history", "unknown"}`` — append it to ``messages`` to
        continue the conversation."""
        if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
            raise ValueError("messages must end with a user turn ({'role': 'user', 'content': ...})")
        text = messages[-1].get("content")
        if not isinstance(text, str):
            raise ValueError(f"the last user turn's content must be a string, got {type(text).__name__}")
        speak = self.writes_prose if prose is None else prose
        text, note = _clip(text)
        named, unknown = self.titles.resolve(list(history))
        shown: list[int] = []
        for message in messages:
            if not isinstance(message, dict):
                continue
            if message.get("role") == "user" and isinstance(message.get("content"), str):
                named += [i for i in self.titles.find_mentions(_clip(message["content"])[0]) if i not in named]
            elif message.get("role") == "assistant":
                shown += [item["index"] for item in message.get("items", []) if isinstance(item, dict) and "index" in item]
        unknown += [name for name in _quoted(text) if self.titles.lookup(name) is None]
        if not text.strip() or not re.search(r"\w", text):
            return self._reply(self.profile.fill(self.profile.ask_hint), [], named, unknown, note)
        if not named and _is_small_talk(text):
            words = self.narrator.greet(text, max_new_tokens) if speak else ""
            return self._reply(words or self.profile.fill(self.profile.greeting), [], named, unknown, note)
        banned = set(shown) | set(self.resolve(list(exclude)) if exclude else ())
        recommended = self.recommend_request(text, named, k=k, exclude=banned)
        words = ""
        if speak:
            cats = self.recommender.item_categories
            words = self.narrator.introduce(text, [dict(item, title=spoken_title(item["title"], with_year=True))
                                                   for item in recommended],
                                            [cats[item["index"]] for item in recommended] if cats else None,
                                            max_new_tokens=max_new_tokens)
        return self._reply(words, recommended, named, unknown, note)

    def recommend_request(self, text: str, named: Sequence[int] = (), k: int = 10, exclude: Sequence[int] = (),
                          num_beams: int | None = None) -> list[dict]:
        """The top-``k`` items for a request in words that names ``named`` (codebook indices), with the prompt
        of :attr:`chat_style`; named and ``exclude``d items are left out."""
        style = self.chat_style
        results = self.recommender.recommend([list(named)], k=min(k, len(self.codebook)), num_beams=num_beams,
                                             style=style, exclude=[set(exclude)],
                                             texts=[text] if style == "request" else None)
        return [self.item(r["index"], r["score"]) for r in results[0]]

    def _reply(self, words: str, items: list[dict], named: list[int], unknown: list[str], note: str) -> dict:
        understood = [self.item(i) for i in named]
        parts = [note] if note else []
        if unknown:
            parts.append("I couldn't find " + ", ".join(f"\"{u}\"" for u in unknown) + " in the catalogue.")
        if understood and items:
            parts.append("You mentioned: " + "; ".join(item["title"] for item in understood) + ".")
        if words:
            parts.append(words)
        if items:
            parts.append("Recommended for you:\n" + "\n".join(f"{n}. {item['title']}" for n, item in enumerate(items, 1)))
        return {"role": "assistant", "content": "\n\n".join(parts), "items": items, "history": understood,
                "unknown": unknown}

    # ------------------------------------------------------------------ cold start
    def add_items(self, item_ids: Sequence[str], titles: Sequence[str], embeddings: np.ndarray | None = None,
                  encoder: str = "default", texts: Sequence[str] | None = None,
                  categories: Sequence[Sequence[str]] | None = None) -> list[dict]:
        """Add new (cold-start) items: embed ``texts`` (default: the titles) with ``encoder`` — the one the
        catalogue was embedded with — or take ``embeddings``; give them IDs with the saved ID encoder, leaving
        every existing ID unchanged. They can be recommended at once; ``categories`` (one list per item) are what
        the chat's words say about them."""
        if embeddings is None:
            from .data.item_embeddings import encode_texts

            embeddings = encode_texts(list(texts if texts is not None else titles), encoder, show_progress=False)
        self.recommender.add_items(item_ids, embeddings, titles, categories)
        return [self.item(self.codebook.index_of(str(i))) for i in item_ids]

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> Path:
        return self.recommender.save_pretrained(save_directory, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs) -> str:
        return self.recommender.push_to_hub(repo_id, **kwargs)
