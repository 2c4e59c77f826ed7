"""A catalogue's profile: every word the library says about its items.

What the items are called ("book", "books"), what people do with them ("read", "read"), how the assistant
introduces itself, the sentence frames of training requests and chat prompts, and the everyday words people use
for the catalogue's categories ("funny" → Comedy). Training requests, the natural-language prompt, the chat's
answers, greetings and hints, the server and the chat benchmark all read one profile, stored with the prepared
data (``catalogue_profile.json``) and in every saved recommender, so a bookshop's assistant never talks about
movies. A catalogue that says nothing gets neutral words ("item", "Which item next?"); MovieLens's wording is
MovieLens's profile, a YAML shipped with the package (``sid4llm/configs/profiles/movielens.yaml``).

Frames and sentences may use ``{noun}``, ``{nouns}``, ``{Noun}``, ``{Nouns}``, ``{verb}`` and ``{verb_past}``,
filled from the profile; request frames also take ``{desc}``, ``{title}``, ``{titles}`` and ``{wish}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, astuple, dataclass, field, fields
from pathlib import Path
from typing import Any

from .readers import DataFormatError

PROFILE_FILE = "catalogue_profile.json"
SHIPPED_PROFILES = ("movielens",)

# Request frames by kind; "train" frames are trained on, "held_out" ones only evaluated (the chat benchmark).
NEUTRAL_FRAMES: dict[str, dict[str, list[str]]] = {
    "describe": {
        "train": ["I want {desc}", "Recommend {desc}", "Can you recommend {desc}?", "{desc} please",
                  "I'm in the mood for {desc}", "Looking for {desc}", "Show me {desc}", "Suggest {desc}",
                  "Any ideas for {desc}?", "Give me {desc}", "I need {desc}", "{desc}",
                  "What's {desc} I should {verb}?", "We'd like {desc}", "Find me {desc}"],
        "held_out": ["Could you find me {desc}?", "Today I feel like {desc}", "Help me pick {desc}",
                     "My friends want {desc}, any picks?", "What would be {desc} to {verb} this weekend?",
                     "do you know {desc}"],
    },
    "like": {
        "train": ["Something like {title}", "More like {title}", "I loved {title}, what else?",
                  "{Nouns} similar to {title}", "{title} was great, give me more like it", "like {title}",
                  "I enjoyed {title}. What next?"],
        "held_out": ["If I enjoyed {title}, what should I {verb} next?", "Anything in the spirit of {title}?"],
    },
    "like_wish": {
        "train": ["Something like {title} but {wish}", "I loved {title}, now something {wish}",
                  "Like {title}, only {wish}", "{title} but {wish}", "More like {title} but {wish} please",
                  "I liked {title}. Give me something {wish}"],
        "held_out": ["Anything in the spirit of {title} but {wish}?", "Similar to {title}, just {wish}?"],
    },
    "history": {
        "train": ["I loved {titles}. What should I {verb} next?", "I liked {titles}", "My favourites are {titles}",
                  "I've tried {titles}, what now?", "Fans of {titles} like me {verb} what?",
                  "I {verb_past} {titles}. Recommend something"],
        "held_out": ["Recently I {verb_past} {titles}; recommend me something", "After {titles}, what comes next?"],
    },
    "history_wish": {
        "train": ["I loved {titles}. Now something {wish}", "I liked {titles}, next I want something {wish}",
                  "After {titles} I'd like something {wish}"],
        "held_out": ["Recently I {verb_past} {titles}; something {wish} now?"],
    },
    "title": {"train": ["{title}", "the {noun} {title}", "Do you have {title}?"], "held_out": ["I'm looking for {title}"]},
}
FRAME_KINDS = tuple(NEUTRAL_FRAMES)
# How people say a decade ("from the eighties"), beside "from the 80s" and "from the 1980s".
DECADE_WORDS = {1920: "twenties", 1930: "thirties", 1940: "forties", 1950: "fifties", 1960: "sixties",
                1970: "seventies", 1980: "eighties", 1990: "nineties"}
_WORD_KEYS = ("noun", "nouns", "Noun", "Nouns", "verb", "verb_past")


class ProfileError(DataFormatError):
    """A profile file or field that cannot be read; the message names it."""


@dataclass(frozen=True)
class CategoryWords:
    """How people ask for a category: before the item noun ("a *funny* movie"), on its own ("a *comedy*"),
    after it ("a movie *for my kids*") and as a wish relative to another item ("like X but *funnier*")."""

    adjectives: tuple[str, ...] = ()
    nouns: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    wishes: tuple[str, ...] = ()


@dataclass
class CatalogueProfile:
    """The words of one catalogue. Every field has a neutral default; ``item_noun`` alone already makes requests,
    prompts and answers speak of books, songs or products."""

    item_noun: str = field(default="item", metadata={"help": "What one item is called: book, song, product."})
    item_noun_plural: str | None = field(default=None, metadata={"help": "Plural (default: item_noun + 's')."})
    request_nouns: list[str] = field(default_factory=list, metadata={
        "help": "Nouns requests use for an item ('a funny {noun}'); default: [item_noun]."})
    verb: str = field(default="try", metadata={"help": "What people do with an item: watch, read, buy, listen to."})
    verb_past: str = field(default="tried", metadata={"help": "The verb's past: watched, read, bought, listened to."})
    assistant_prompt: str = field(
        default="You are a friendly recommender of {nouns}. Answer in one or two short sentences.",
        metadata={"help": "System prompt of the chat's answers in words."})
    greeting_prompt: str = field(
        default="You are a friendly recommender of {nouns}. Greet the user in one short sentence and ask what "
                "kind of {noun} they are looking for.",
        metadata={"help": "System prompt of the answer to a greeting."})
    greeting: str = field(default="Hello! Tell me what kind of {noun} you are looking for.",
                          metadata={"help": "The answer to a greeting when no LM writes words."})
    ask_hint: str = field(
        default="Tell me what you are looking for: a kind of {noun}, or {nouns} you liked.",
        metadata={"help": "The answer to a message that asks for nothing."})
    grounded_answer: str = field(
        default="My first pick is {title}, filed under {categories}.",
        metadata={"help": "The sentence when the LM's own would state a fact the catalogue lacks (a date, a number, a "
                          "name): {title} and {categories} are the first recommended item's. For an item without "
                          "categories the sentence ends before the clause that holds {categories}."})
    next_question: str = field(default="What should I {verb} next?", metadata={
        "help": "The question after a list of liked titles (natural-language prompt, chat benchmark)."})
    frames: dict[str, dict[str, list[str]]] = field(default_factory=dict, metadata={
        "help": f"Request frames by kind ({', '.join(FRAME_KINDS)}), each {{'train': [...], 'held_out': [...]}}; "
                "a kind left out keeps the neutral frames."})
    category_words: dict[str, dict[str, list[str]]] = field(default_factory=dict, metadata={
        "help": "Everyday words per category name: {'Comedy': {'adjectives': ['funny'], 'nouns': ['a comedy'], "
                "'suffixes': [], 'wishes': ['funnier']}}; a category left out is asked for by its own name."})
    answer_words: list[str] = field(default_factory=list, metadata={
        "help": "Words a chat answer may use about any item besides the catalogue's own (synonyms of the item noun, "
                "the domain's words of appreciation): ['film', 'page-turner']. Other content words must come from "
                "the listed items' titles and categories, or from the request."})
    extra_stop_words: list[str] = field(default_factory=list, metadata={
        "help": "Words that never name an item on their own in a chat message (besides the nouns and verbs)."})

    def __post_init__(self):
        if not isinstance(self.item_noun, str) or not self.item_noun.strip():
            raise ProfileError("item_noun must be a non-empty word, e.g. 'book'")
        unknown = sorted(set(self.frames) - set(FRAME_KINDS))
        if unknown:
            raise ProfileError(f"frames: unknown kind(s) {unknown}; choose from {list(FRAME_KINDS)}")
        for kind, splits in self.frames.items():
            if not isinstance(splits, dict) or not all(isinstance(splits.get(s), list) and splits.get(s)
                                                       for s in ("train", "held_out")):
                raise ProfileError(f"frames.{kind}: needs non-empty 'train' and 'held_out' lists of sentences")
        for name, words in self.category_words.items():
            bad = sorted(set(words) - {f.name for f in fields(CategoryWords)}) if isinstance(words, dict) else ["?"]
            if bad:
                raise ProfileError(f"category_words.{name}: expected a mapping of adjectives/nouns/suffixes/wishes "
                                   f"to lists, got {words!r}")

    # ------------------------------------------------------------------ words
    @property
    def plural(self) -> str:
        return self.item_noun_plural or self.item_noun + "s"

    @property
    def nouns(self) -> list[str]:
        """The nouns requests use for one item."""
        return list(self.request_nouns) or [self.item_noun]

    def fill(self, text: str) -> str:
        """``text`` with the profile's words in place of ``{noun}``, ``{nouns}``, ``{verb}``... (other fields
        such as ``{desc}`` stay for the caller)."""
        words = {"noun": self.item_noun, "nouns": self.plural, "Noun": _cap(self.item_noun), "Nouns": _cap(self.plural),
                 "verb": self.verb, "verb_past": self.verb_past}
        for key in _WORD_KEYS:
            text = text.replace("{" + key + "}", words[key])
        return text

    def grounded_sentence(self, title: str, categories: list[str] | None = None) -> str:
        """:attr:`grounded_answer` for one item: nothing in it but the catalogue's own words."""
        text = self.fill(self.grounded_answer)
        if not categories and "{categories}" in text:
            head = text[:text.index("{categories}")]
            cut = max(head.rfind(mark) for mark in ",(:;—")
            end = text.rstrip()[-1] if text.rstrip()[-1] in ".!?" else ""
            text = (head[:cut] if cut > 0 else head).rstrip() + end
        return text.replace("{title}", title).replace("{categories}", ", ".join(categories or []))

    def request_frames(self, kind: str, split: str) -> list[str]:
        """The frames of one request kind and split (``train`` or ``held_out``), words filled."""
        return [self.fill(f) for f in (self.frames.get(kind) or NEUTRAL_FRAMES[kind])[split]]

    def words_for(self, category: str) -> CategoryWords | None:
        """The everyday words of a category (matched by :func:`category_key`), or None."""
        wanted = category_key(category)
        for name, words in self.category_words.items():
            if category_key(name) == wanted:
                return CategoryWords(**{k: tuple(v) for k, v in words.items()})
        return None

    def vocabulary(self) -> frozenset[str]:
        """Every word a request is built from besides titles (nouns, verbs, category words): a run of these
        alone never names an item in a chat message."""
        phrases = [p for entry in self.category_words.values() for group in entry.values() for p in group]
        return self._words_with(self.extra_stop_words, phrases)

    def answer_vocabulary(self, categories: Iterable[str] = ()) -> frozenset[str]:
        """The words an answer presenting items of ``categories`` may use besides their titles and the request:
        the item nouns and verbs, :attr:`answer_words`, and the everyday words of those categories only (a comedy
        may be called "funny", not "scary")."""
        entries = [entry for entry in map(self.words_for, categories) if entry]
        return self._words_with(self.answer_words, [p for entry in entries for group in astuple(entry) for p in group])

    def _words_with(self, extra: Iterable[str], phrases: Iterable[str]) -> frozenset[str]:
        """The item nouns and verbs, ``extra`` words and the words of ``phrases``, lower case."""
        words = {*self.nouns, self.item_noun, self.plural, *self.verb.split(), *self.verb_past.split(), *extra}
        for phrase in phrases:
            words.update(re.sub(r"[^\w]+", " ", phrase.lower()).split())
        return frozenset(w.lower() for w in words)

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str | Path = "profile") -> CatalogueProfile:
        if not isinstance(values, dict):
            raise ProfileError(f"{where}: expected a mapping of profile fields, got {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ProfileError(f"{where}: unknown profile field(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**values)
        except ProfileError as err:
            raise ProfileError(f"{where}: {err}") from None

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / PROFILE_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> CatalogueProfile | None:
        """The profile saved in ``folder``, or None when it holds none."""
        path = Path(folder) / PROFILE_FILE
        if not path.is_file():
            return None
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ProfileError(f"{path}: not valid JSON ({err})") from None
        return cls.from_dict(values, path)

    @classmethod
    def read(cls, value: str | Path) -> CatalogueProfile:
        """A profile from a YAML or JSON file, or a shipped profile's name (``movielens``)."""
        import yaml

        path = Path(value)
        if not path.is_file():
            if str(value) not in SHIPPED_PROFILES:
                raise ProfileError(f"profile not found: {value} (neither a file nor a shipped profile: "
                                   f"{', '.join(SHIPPED_PROFILES)})")
            from importlib.resources import files

            path = Path(str(files("sid4llm") / "configs" / "profiles" / f"{value}.yaml"))
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ProfileError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
        return cls.from_dict(values, path)


def category_key(name: str) -> str:
    """"Children's" → "childrens", "Sci-Fi" → "scifi": the form category names are compared in."""
    return re.sub(r"[^a-z0-9]+", "", name.lower())


def _cap(word: str) -> str:
    return word[:1].upper() + word[1:]
