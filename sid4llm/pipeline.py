"""``RecommendationPipeline``: the object a notebook or a service holds.

    from sid4llm import RecommendationPipeline
    pipe = RecommendationPipeline.from_pretrained("outputs/quickstart/model")    # or a Hub id
    pipe.recommend(["Toy Story", "Aladdin"], k=5)          # titles, item ids or codebook indices
    pipe.chat([{"role": "user", "content": "I loved Toy Story and Heat. Something darker?"}])

Every recommended item comes out of trie-constrained decoding, so it always exists in the catalogue.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .data.titles import TitleIndex
from .lm.models import pretrained_layers
from .lm.recommender import SidRecommender

CHAT_SYSTEM_PROMPT = ("You are a friendly recommender. In one or two sentences, suggest what to watch next, "
                      "naming items by their IDs.")


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
    def titles(self) -> TitleIndex:
        """Built on first use and again whenever items were added."""
        cb = self.codebook
        if self._titles is None or len(self._titles.titles) != len(cb):
            self._titles = TitleIndex(cb.titles or cb.item_ids, cb.popularity, cb.item_ids, self.fuzzy_cutoff)
        return self._titles

    def _item(self, index: int, score: float | None = None) -> dict:
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
                  style: str = "ids", num_beams: int | None = None, by_index: bool = False) -> list[dict]:
        """Top-``k`` items after ``history`` (or, given a list of histories, one list per history): titles or
        item ids (strings or ints, as in the data). A bare string is one title. ``by_index=True`` takes
        codebook indices instead (in ``history`` and ``exclude``).

        Items in the history (and in ``exclude``) are left out, so the list holds ``k`` new items.
        ``style``: ``ids`` (the sequential prompt) or ``titles`` (the natural-language prompt)."""
        if isinstance(history, str):  # one title, not a list of letters
            history = [history]
        if not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k must be a positive number of items, got {k!r}")
        batch = len(history) > 0 and isinstance(history[0], list | tuple)
        histories = [self.resolve(h, by_index) for h in (history if batch else [history])]
        banned = set(self.resolve(list(exclude), by_index))
        results = self.recommender.recommend(histories, k=min(k, len(self.codebook)), num_beams=num_beams, style=style,
                                             exclude_seen=exclude_history, exclude=[banned] * len(histories))
        out = [[self._item(r["index"], r["score"]) for r in ranked] for ranked in results]
        return out if batch else out[0]

    # ------------------------------------------------------------------ chatting
    @property
    def chat_style(self) -> str:
        """The prompt a chat turn's list comes from: the natural-language one when the model was trained on it,
        else the ID stream of the items named (what a model trained on ID streams only reads best)."""
        return "titles" if "natural_language" in self.recommender.prompt_builder.args.task_list() else "ids"

    @property
    def writes_prose(self) -> bool:
        """Whether the model can add words of its own to a chat answer: a whole pretrained LM trained on a text
        task. A model from scratch or cut to its first layers would write noise, so its answers are the list."""
        cfg = self.recommender.config
        return not cfg.get("from_scratch") and not pretrained_layers(cfg) and self.recommender.prompt_builder.args.text_tasks

    def chat(self, messages: list[dict], k: int = 5, history: Sequence[str | int] = (),
             max_new_tokens: int = 48, prose: bool | None = None) -> dict:
        """One assistant turn for a conversation (``[{"role", "content"}, ...]``, the last one the user's).

        Items the user names anywhere in the conversation (by title, fuzzily) form the history; items the
        assistant already recommended (the ``items`` of earlier assistant turns) are not repeated. The list is
        exactly :meth:`recommend` for that history with the prompt of :attr:`chat_style` (the natural-language
        one when the model learned it), so chat and recommend never disagree. With ``prose`` (default:
        :attr:`writes_prose`) the model also writes a short answer, in which every ID it opens is forced to be a
        real item and is shown by its title. Returns ``{"role": "assistant", "content", "items",
        "history"}`` — append it to ``messages`` to continue the conversation."""
        if not messages or messages[-1].get("role") != "user":
            raise ValueError("messages must end with a user turn")
        named = list(self.resolve(list(history)))
        shown: list[int] = []
        for message in messages:
            if message.get("role") == "user":
                named += [i for i in self.titles.find_mentions(message.get("content", "")) if i not in named]
            elif message.get("role") == "assistant":
                shown += [item["index"] for item in message.get("items", []) if isinstance(item, dict)]
        recommended = self.recommend(named, k=k, exclude=shown, style=self.chat_style, by_index=True)
        text = ""
        if self.writes_prose if prose is None else prose:
            text, from_text = self._answer(messages, named, max_new_tokens)
            words = text
            for i in from_text:
                words = words.replace(self._item(i)["title"], "")
            if not words.strip(" \n.,;:!-"):
                text = ""  # the model only named items: the list says it better
        understood = [self._item(i) for i in named]
        listing = "\n".join(f"{n}. {item['title']}" for n, item in enumerate(recommended, 1))
        heard = ("You mentioned: " + "; ".join(item["title"] for item in understood) + ".\n") if understood else ""
        said = f"{text}\n\n" if text else ""
        content = f"{heard}{said}Recommended for you:\n{listing}"
        return {"role": "assistant", "content": content, "items": recommended, "history": understood}

    def _answer(self, messages: list[dict], named: list[int], max_new_tokens: int) -> tuple[str, list[int]]:
        """The model's own words for this turn, with the history restated as the trained prompt does."""
        builder = self.recommender.prompt_builder
        context = builder.natural_language_prompt(named) if named else "What should I watch? Answer with an item ID."
        turns = [{"role": "system", "content": CHAT_SYSTEM_PROMPT}]
        turns += [{"role": m["role"], "content": m["content"]} for m in messages[:-1] if m.get("role") in ("user", "assistant")]
        turns.append({"role": "user", "content": f"{messages[-1]['content']}\n{context}"})
        out = self.recommender.generate_text(turns, max_new_tokens=max_new_tokens)
        return out["text"], [i for i in out["items"] if i is not None]

    # ------------------------------------------------------------------ cold start
    def add_items(self, item_ids: Sequence[str], titles: Sequence[str], embeddings: np.ndarray | None = None,
                  encoder: str = "default", texts: Sequence[str] | None = None) -> list[dict]:
        """Add new (cold-start) items: embed ``texts`` (default: the titles) with ``encoder`` — the one the
        catalogue was embedded with — or take ``embeddings``; give them IDs with the saved ID encoder, leaving
        every existing ID unchanged. They can be recommended at once."""
        if embeddings is None:
            from .data.item_embeddings import encode_texts

            embeddings = encode_texts(list(texts if texts is not None else titles), encoder, show_progress=False)
        self.recommender.add_items(item_ids, embeddings, titles)
        return [self._item(self.codebook.index_of(str(i))) for i in item_ids]

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> Path:
        return self.recommender.save_pretrained(save_directory, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs) -> str:
        return self.recommender.push_to_hub(repo_id, **kwargs)
