"""A chat turn: the words of a conversation read as a request, the list decoded through the trie, and the sentence
around it (:mod:`.narration`), in the catalogue profile's words.

:class:`ChatAssistant` is what ``RecommendationPipeline.chat`` runs, over a catalogue (the pipeline: its title index,
how it names an item, how it resolves names) and a :class:`~sid4llm.lm.recommender.SidRecommender`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cached_property

from ..data.titles import spoken_title
from .narration import Narrator

LIST_HEADING = "Recommended for you:"  # opens the numbered list of a reply (the benchmark reads answers by it)
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


class ChatAssistant:
    def __init__(self, recommender, catalogue):
        """``catalogue``: what names items (``titles``: a :class:`~sid4llm.chat.mentions.TitleIndex`, ``item(index,
        score)``: an item's record, ``resolve(names)``: names to indices), e.g. the pipeline."""
        self.recommender, self.catalogue = recommender, catalogue

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
        return Narrator(rec.words_model, rec.tokenizer, rec.vocab.new_token_ids, mentions=self.catalogue.titles.find_mentions,
                        profile=self.recommender.config.profile)

    def reply(self, messages: list[dict], k: int = 5, history: Sequence[str | int] = (), exclude: Sequence[str | int] = (),
              max_new_tokens: int = 40, prose: bool | None = None) -> dict:
        """One assistant turn for a conversation (``[{"role", "content"}, ...]``, the last one the user's).

        Items the user names anywhere in the conversation (by title, fuzzily; ``history`` adds more) are read as an
        ID stream after the words of the last message, and the list is the model's trie-constrained decoding of
        that request (:attr:`chat_style`); items recommended in earlier assistant turns (their ``items``), named
        items and ``exclude`` are left out. With ``prose`` (default: :attr:`writes_prose`) the whole instruct LM
        writes a sentence opened with the first recommended item's title (at most ``max_new_tokens`` of its own).
        A greeting gets words only; an empty message, one without words, or names the catalogue lacks get an answer
        that says so, never an exception. Returns ``{"role": "assistant", "content", "items", "history",
        "unknown"}`` — append it to ``messages`` to continue the conversation."""
        plan = self.plan(messages, k, history, exclude)
        return self.compose(plan, self.words(plan, max_new_tokens, prose))

    def plan(self, messages: list[dict], k: int = 5, history: Sequence[str | int] = (),
             exclude: Sequence[str | int] = ()) -> dict:
        """The first half of a turn: what the conversation names and asks, and the list (``items``) — all a
        streamed answer needs to start. :meth:`words` writes the sentence, :meth:`compose` the answer."""
        if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
            raise ValueError("messages must end with a user turn ({'role': 'user', 'content': ...})")
        text = messages[-1].get("content")
        if not isinstance(text, str):
            raise ValueError(f"the last user turn's content must be a string, got {type(text).__name__}")
        profile, titles = self.recommender.config.profile, self.catalogue.titles
        text, note = _clip(text)
        named, unknown = titles.resolve(list(history))
        shown: list[int] = []
        for message in messages:
            if not isinstance(message, dict):
                continue
            if message.get("role") == "user" and isinstance(message.get("content"), str):
                named += [i for i in titles.find_mentions(_clip(message["content"])[0]) if i not in named]
            elif message.get("role") == "assistant":
                shown += [item["index"] for item in message.get("items", []) if isinstance(item, dict) and "index" in item]
        unknown += [name for name in _quoted(text) if titles.lookup(name) is None]
        plan = {"text": text, "note": note, "named": named, "unknown": unknown, "items": [], "kind": "list",
                "fallback": ""}
        if not text.strip() or not re.search(r"\w", text):
            return {**plan, "kind": "hint", "fallback": profile.fill(profile.ask_hint)}
        if not named and _is_small_talk(text):
            return {**plan, "kind": "greeting", "fallback": profile.fill(profile.greeting)}
        banned = set(shown) | set(self.catalogue.resolve(list(exclude)) if exclude else ())
        return {**plan, "items": self.recommend_request(text, named, k=k, exclude=banned)}

    def words(self, plan: dict, max_new_tokens: int = 40, prose: bool | None = None) -> str:
        """The second half: the instruct LM's sentence for a :meth:`plan` ("" without a words path, or for a hint)."""
        speak = self.writes_prose if prose is None else prose
        if not speak or plan["kind"] == "hint":
            return ""
        if plan["kind"] == "greeting":
            return self.narrator.greet(plan["text"], max_new_tokens)
        cats, items = self.recommender.item_categories, plan["items"]
        return self.narrator.introduce(plan["text"], [dict(item, title=spoken_title(item["title"], with_year=True))
                                                      for item in items],
                                       [cats[item["index"]] for item in items] if cats else None,
                                       max_new_tokens=max_new_tokens)

    def compose(self, plan: dict, words: str) -> dict:
        """The answer of a :meth:`plan` with its ``words``."""
        return self._reply(words or plan["fallback"], plan["items"], plan["named"], plan["unknown"], plan["note"])

    def recommend_request(self, text: str, named: Sequence[int] = (), k: int = 10, exclude: Sequence[int] = (),
                          num_beams: int | None = None) -> list[dict]:
        """The top-``k`` items for a request in words that names ``named`` (codebook indices), with the prompt
        of :attr:`chat_style`; named and ``exclude``d items are left out."""
        style = self.chat_style
        results = self.recommender.recommend([list(named)], k=min(k, len(self.recommender.codebook)), num_beams=num_beams,
                                             style=style, exclude=[set(exclude)],
                                             texts=[text] if style == "request" else None)
        return [self.catalogue.item(r["index"], r["score"]) for r in results[0]]

    def _reply(self, words: str, items: list[dict], named: list[int], unknown: list[str], note: str) -> dict:
        understood = [self.catalogue.item(i) for i in named]
        parts = [note] if note else []
        if unknown:
            parts.append("I couldn't find " + ", ".join(f"\"{u}\"" for u in unknown) + " in the catalogue.")
        if understood and items:
            parts.append("You mentioned: " + "; ".join(item["title"] for item in understood) + ".")
        if words:
            parts.append(words)
        if items:
            parts.append(LIST_HEADING + "\n" + "\n".join(f"{n}. {item['title']}" for n, item in enumerate(items, 1)))
        return {"role": "assistant", "content": "\n\n".join(parts), "items": items, "history": understood,
                "unknown": unknown}

