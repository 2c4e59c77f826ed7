"""``RecommendationPipeline``: the object a notebook or a service holds.

    from sid4llm import RecommendationPipeline
    pipe = RecommendationPipeline.from_pretrained("outputs/quickstart/model")    # or a Hub id
    pipe.recommend(["Toy Story", "Aladdin"], k=5)          # titles, item ids or codebook indices
    pipe.chat([{"role": "user", "content": "A funny animated movie for my kids"}])

Every recommended item comes out of trie-constrained decoding, so it always exists in the catalogue.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from .chat.conversation import ChatAssistant
from .chat.mentions import TitleIndex
from .chat.narration import Narrator
from .data.profile import CatalogueProfile
from .lm.recommender import SidRecommender


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
    @cached_property
    def assistant(self) -> ChatAssistant:
        """The chat (:class:`~sid4llm.chat.conversation.ChatAssistant`) over this pipeline's catalogue."""
        return ChatAssistant(self.recommender, self)

    @property
    def chat_style(self) -> str:
        return self.assistant.chat_style

    @property
    def writes_prose(self) -> bool:
        return self.assistant.writes_prose

    @property
    def narrator(self) -> Narrator:
        return self.assistant.narrator

    def chat(self, messages: list[dict], k: int = 5, history: Sequence[str | int] = (), exclude: Sequence[str | int] = (),
             max_new_tokens: int = 40, prose: bool | None = None) -> dict:
        """One assistant turn for a conversation (:meth:`ChatAssistant.reply <sid4llm.chat.conversation.ChatAssistant.reply>`)."""
        return self.assistant.reply(messages, k, history, exclude, max_new_tokens, prose)

    def recommend_request(self, text: str, named: Sequence[int] = (), k: int = 10, exclude: Sequence[int] = (),
                          num_beams: int | None = None) -> list[dict]:
        """The top-``k`` items for a request in words that names ``named`` (codebook indices)."""
        return self.assistant.recommend_request(text, named, k, exclude, num_beams)

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
