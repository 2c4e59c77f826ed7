"""The words of a chat answer, written by the whole pretrained instruct LM.

A chat turn's list comes from the ID path (trie-constrained decoding of the request); this module writes the
one or two sentences around it. The LM reads the request and the list (titles with their categories, so what it
says is grounded in the catalogue), and its answer is opened with the first recommended title — forced from the
list, the way the trie forces an ID — after which every word is the LM's own. A sentence in which the LM names a
catalogue item that is not on the list is cut, so every title in an answer is a real recommended item. ID
tokens are never written (they are suppressed), and a greeting gets a plain answer in words.

The words are kept true to the catalogue (:mod:`.grounding`): the LM cannot write a digit or a month name that
the list and the request lack, a sentence that still states a number, a date or a name they do not hold is
dropped, and one that makes a claim in plain words they do not support ("about a young man turned into stone") is
cut back to its last clause that is supported, or dropped; when no opener gives words that check out, the answer is
the profile's ``grounded_answer``.

Greedy decoding (repeatable answers), a repetition penalty and a cap of one sentence per answer (two for a
greeting) keep a 135M model on topic; on 2 CPU cores one answer costs a few seconds (``scripts/bench_chat.py``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from functools import cached_property

import torch

from ..data.profile import CatalogueProfile
from .grounding import (
    content_words,
    fact_token_ids,
    ungrounded_claims,
    ungrounded_facts,
    unsupported_token_ids,
)

# How an answer opens: the first recommended title, then the LM's own words.
OPENERS = ("{title} is a great choice because", "I'd start with {title}, since", "You might enjoy {title}, because")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"”']?\s+")  # a stray closing quote ends a sentence too
# Where a sentence may be cut back to a shorter one that still reads whole: before a comma, a relative clause, a
# conjunction or a prepositional phrase.
_CLAUSE_BREAK = re.compile(r"\s*(?:[,;:–—(]|\s(?:that|which|who|whom|whose|where|when|while|and|but|or|so|as|because|"
                           r"since|with|about|by|for|from|in|on|of|at|into|after|before|like|than|to)\b)", re.I)
_MIN_WORDS = 3  # a cut sentence keeps at least this many of the LM's words


class Narrator:
    """Writes answers with ``model`` (a context manager giving the whole instruct LM, e.g.
    :meth:`SidRecommender.words_model`), its ``tokenizer``, and the token ids it must never write."""

    def __init__(self, words_model: Callable, tokenizer, banned_token_ids: Sequence[int],
                 mentions: Callable[[str], list[int]] | None = None, max_new_tokens: int = 40,
                 profile: CatalogueProfile | None = None):
        """``profile``: the catalogue's words, which give the assistant its introduction."""
        self.words_model, self.tokenizer = words_model, tokenizer
        self.profile = profile = profile or CatalogueProfile()
        self.system_prompt = profile.fill(profile.assistant_prompt)
        self.greeting_prompt = profile.fill(profile.greeting_prompt)
        self.banned = [[int(t)] for t in banned_token_ids]
        self.mentions = mentions
        self.max_new_tokens = max_new_tokens

    @cached_property
    def _fact_tokens(self) -> dict[int, str]:
        return fact_token_ids(self.tokenizer)

    def introduce(self, request: str, items: list[dict], categories: list[list[str]] | None = None,
                  seed_text: str | None = None, max_new_tokens: int | None = None) -> str:
        """One or two sentences presenting ``items`` (``{"title", "index"}``, best first) for ``request``."""
        if not items:
            return ""
        listing = "\n".join(f"{n}. {item['title']}" + (f" ({', '.join(categories[n - 1])})" if categories and categories[n - 1] else "")
                            for n, item in enumerate(items, 1))
        listed_categories = [c for cats in (categories or []) for c in cats]
        facts = [item["title"] for item in items] + listed_categories
        grounding = "\n".join([self.system_prompt, request, *facts])  # not the listing: its "2." grounds no "2"
        unsupported = unsupported_token_ids(self._fact_tokens, grounding)
        allowed = self.profile.answer_vocabulary(listed_categories)
        first = _stable_index(seed_text or request, len(OPENERS))
        for n in range(len(OPENERS)):  # another opener when the LM's sentence had to be dropped
            opener = OPENERS[(first + n) % len(OPENERS)].format(title=items[0]["title"])
            continuation = self._generate(self.system_prompt, request, f"Here are my picks for you:\n{listing}\n\n{opener}",
                                          max_new_tokens, unsupported)
            words = self._keep_listed(continuation, {item["index"] for item in items}, grounding, allowed=allowed)
            if words:
                return f"{opener} {words}"
        return self.profile.grounded_sentence(items[0]["title"], categories[0] if categories else None)

    def greet(self, message: str, max_new_tokens: int | None = None) -> str:
        """A plain answer in words to a message that asks for nothing (a greeting, thanks)."""
        opener = "Hello!" if not re.search(r"\bthank", message, re.I) else "You're welcome!"
        grounding = f"{self.greeting_prompt}\n{message}"
        words = self._generate(self.greeting_prompt, message, opener, max_new_tokens,
                               unsupported_token_ids(self._fact_tokens, grounding))
        return f"{opener} {self._keep_listed(words, set(), grounding, sentences=2)}".strip()

    @torch.no_grad()
    def _generate(self, system: str, user: str, prefix: str, max_new_tokens: int | None = None,
                  unsupported: Sequence[int] = ()) -> str:
        """The LM's continuation of ``prefix``, never writing an ID token or an ``unsupported`` fact token."""
        tokenizer = self.tokenizer
        turns = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        if getattr(tokenizer, "chat_template", None):
            prompt = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
        else:
            prompt = f"{system}\n{user}\n"
        with self.words_model() as model:
            device = next(model.parameters()).device
            ids = tokenizer(prompt + prefix, add_special_tokens=False, return_tensors="pt")["input_ids"].to(device)
            banned = self.banned + [[t] for t in unsupported]
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                                 max_new_tokens=max_new_tokens or self.max_new_tokens, repetition_penalty=1.3, no_repeat_ngram_size=3,
                                 bad_words_ids=banned or None, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None)
        text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        return " ".join(text.split())

    def _keep_listed(self, text: str, listed: set[int], grounding: str, sentences: int = 1,
                     allowed: frozenset[str] | None = None) -> str:
        """At most ``sentences`` whole sentences (one: the opener's, where a 135M model stays on topic), stopping
        before one that names a catalogue item not on the list, states a fact ``grounding`` lacks, or that the LM
        left unfinished. With ``allowed`` (the words an answer may use besides the grounding's), plain-word claims
        are checked too, and a first sentence that makes one is cut back to its longest supported head."""
        kept = []
        for sentence in _SENTENCE_END.split(text.strip())[:sentences]:
            if not sentence or sentence[-1] not in ".!?":
                break
            if not self._checks_out(sentence, listed, grounding, allowed):
                break
            kept.append(sentence)
        if not kept and len(text.split()) >= _MIN_WORDS:
            if self._checks_out(text, listed, grounding, allowed):
                kept = [text.rstrip(" ,;:-") + "."]  # the first sentence ran past the token limit: keep it, closed
            elif allowed is not None:  # a head that checks out lies inside the first sentence, which did not
                head = self._supported_head(text, listed, grounding, allowed)
                kept = [head] if head else []
        return " ".join(kept)

    def _supported_head(self, sentence: str, listed: set[int], grounding: str, allowed: frozenset[str]) -> str:
        """The longest start of ``sentence`` that ends at a clause break, holds at least ``_MIN_WORDS`` words, one
        of them saying something ("it's a comedy", not "it was made"), and checks out, closed with a full stop; ""
        if none."""
        for cut in sorted((m.start() for m in _CLAUSE_BREAK.finditer(sentence)), reverse=True):
            head = sentence[:cut].rstrip(" ,;:-–—")
            if (len(head.split()) >= _MIN_WORDS and content_words(head)
                    and self._checks_out(head, listed, grounding, allowed)):
                return head + "."
        return ""

    def _checks_out(self, text: str, listed: set[int], grounding: str, allowed: frozenset[str] | None = None) -> bool:
        if ungrounded_facts(text, grounding):
            return False
        if allowed is not None and ungrounded_claims(text, grounding, allowed):
            return False
        return self.mentions is None or all(i in listed for i in self.mentions(text))


def _stable_index(text: str, n: int) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % n
