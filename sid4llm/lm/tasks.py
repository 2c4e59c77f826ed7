"""Training and evaluation examples for the LM, as ``datasets.Dataset``.

Tasks:
- ``sequential`` — the paper's downstream setting. A user's train history is written as one **ID stream**
  (``<|sid_user|>``, then every item as its codes + end marker) and, with ``sequential_targets="all"``
  (default), *every* item in it is a target of the next-token loss, as SASRec/HSTU train on every position.
  Histories longer than the token budget are cut into windows at item boundaries: each window keeps up to
  ``history_token_budget`` tokens before its last target, the first ``context_fraction`` of a window that
  does not start the history is context only (no loss), and the targets of successive windows tile the
  history, so every train event is a target exactly once per epoch. ``sequential_targets="last"`` is the
  older form: one target per example (the user's most recent ``windows_per_user`` train events).
- ``natural_language`` — an instruction listing the history as titles → the next item's ID.
- ``alignment`` — title → ID and ID → title, which teaches the LM what the new tokens mean.
- ``requests`` — natural-language requests written from the catalogue's metadata ("a funny animated movie for
  my kids", "like The Matrix but scarier", a user's recent titles; :mod:`sid4llm.lm.requests`), read as
  ``words <|sid_user|> named items…`` and answered by ID-stream items: what a chat turn decodes from.

Training examples come from each user's **train** prefix only, so valid and test targets never leak.
Streams never use a chat template (an item costs its codes + one token, as in the paper); the text tasks use
the tokenizer's chat template when it has one (``prompt_format``). Every example is a *segment*
(``input_ids`` + ``labels``); :func:`pack_segments` packs segments into rows of ``max_seq_length`` tokens
whose ``position_ids`` restart at every segment, which transformers turns into a block-diagonal causal mask:
one user never attends to another.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from ..data import PreparedData
from ..data.profile import CatalogueProfile
from ..vocabulary import IdVocabulary

TASKS = ("sequential", "natural_language", "alignment", "requests")
SEQUENTIAL_TARGETS = ("all", "last")
IGNORE_INDEX = -100
NO_TIE_GROUP = -1  # a token that no shuffle moves: the user-start token, words, items with a timestamp of their own


@dataclass
class TaskArguments:
    tasks: list[str] = field(default_factory=lambda: ["sequential"],
                             metadata={"help": f"Tasks to train on, from {TASKS}."})
    sequential_targets: Literal["all", "last"] = field(
        default="all", metadata={"help": "all: every item of a train history is a target (whole-history streams, the "
                                         "paper's setting); last: one target per example (windows_per_user examples per user)."})
    history_token_budget: int | None = field(
        default=512, metadata={"help": "Tokens of ID history the model reads before an item (the user-start token and "
                                       "the most recent whole items that fit); None: only max_history_items limits it."})
    max_history_items: int | None = field(default=None, metadata={"help": "At most this many history items (None: no limit)."})
    context_fraction: float = field(
        default=0.5, metadata={"help": "Whole-history windows that do not start the user's history: the share of their "
                                       "items that is context only (no loss)."})
    text_history_items: int | None = field(
        default=None, metadata={"help": "Natural-language prompts name at most this many of the most recent history "
                                        "items (people name a few in a chat; each title costs ~10 tokens); None: as many "
                                        "as the token budget keeps."})
    windows_per_user: int = field(default=4, metadata={"help": "sequential_targets=last and natural_language: examples per "
                                                               "user, ending at its most recent train events."})
    max_examples_per_task: int | None = field(default=None, metadata={"help": "Cap each task's examples (random, seeded)."})
    prompt_format: Literal["auto", "chat", "plain"] = field(default="auto", metadata={"help": "Text tasks: chat (tokenizer's chat template), plain, or "
                                                                  "auto (chat when the tokenizer has a template)."})
    system_prompt: str = field(default="You are a recommender. Answer with item IDs.",
                               metadata={"help": "System message for chat-formatted examples ('' for none)."})
    max_seq_length: int | None = field(
        default=None, metadata={"help": "Tokens per packed training row (longer text examples are cut from the left of "
                                        "the prompt); None: room for two full history windows."})
    example_seed: int = field(default=0, metadata={"help": "Seed for sampling and packing examples."})
    request_examples: int = field(default=20000, metadata={"help": "requests task: requests written per epoch."})
    request_answers: int = field(default=3, metadata={"help": "requests task: answer items per request (each a target; "
                                                                "the later ones also read the earlier)."})
    request_max_tokens: int = field(default=48, metadata={"help": "Words of a request the model reads (the last N tokens)."})
    def __post_init__(self):
        self.task_list()
        if self.sequential_targets not in SEQUENTIAL_TARGETS:
            raise ValueError(f"sequential_targets must be one of {SEQUENTIAL_TARGETS}, got {self.sequential_targets!r}")
        if not 0.0 <= self.context_fraction < 1.0:
            raise ValueError(f"context_fraction must be in [0, 1), got {self.context_fraction}")
        if self.history_token_budget is not None and self.history_token_budget < 2:
            raise ValueError(f"history_token_budget must be at least 2 tokens, got {self.history_token_budget}")

    def task_list(self) -> list[str]:
        """The tasks, checked (a list field's items are free strings to the parser)."""
        if isinstance(self.tasks, str) or not self.tasks:
            raise ValueError(f"tasks must be a non-empty list from {TASKS}, got {self.tasks!r}")
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; choose from {TASKS}")
        return list(self.tasks)

    def window_length(self, vocab: IdVocabulary) -> int | None:
        """Most tokens of one whole-history window: the budget before its last target, plus that target."""
        if self.history_token_budget is None:
            return self.max_seq_length
        window = self.history_token_budget + int(vocab.id_token_counts.max())
        return window if self.max_seq_length is None else min(window, self.max_seq_length)

    def row_length(self, vocab: IdVocabulary) -> int:
        """Tokens per packed row: ``max_seq_length``, or two full windows (so two long histories share a row)."""
        if self.max_seq_length is not None:
            return self.max_seq_length
        window = self.window_length(vocab)
        return 2 * window if window is not None else 1024

    @property
    def text_tasks(self) -> bool:
        """Whether any task needs words (a text tokenizer), not only ID streams."""
        return any(t != "sequential" for t in self.task_list())


def budget_history(history: list[int], vocab: IdVocabulary, token_budget: int | None,
                   max_items: int | None = None) -> list[int]:
    """The most recent whole items of ``history`` that fit in ``token_budget`` tokens of ID stream (the
    user-start token included) and in ``max_items``."""
    kept, used = [], 1
    for item in reversed(history[-max_items:] if max_items else history):
        cost = vocab.id_token_count(item)
        if token_budget is not None and used + cost > token_budget:
            break
        kept.append(item)
        used += cost
    return kept[::-1]


def stream_windows(costs: list[int], limit: int, context_fraction: float) -> list[tuple[int, int, int]]:
    """``(start, first_target, end)`` item ranges that cover a history whose items cost ``costs`` tokens.

    Each window holds the user-start token and items ``start..end-1`` in at most ``limit`` tokens; items
    ``first_target..end-1`` are its targets. Built from the most recent item backwards; the targets of all
    windows tile ``0..len(costs)-1`` exactly once. A window that starts the history has every item as a target."""
    windows, end = [], len(costs)
    while end > 0:
        start, used = end, 1
        while start > 0 and used + costs[start - 1] <= limit:
            start -= 1
            used += costs[start]
        if start == end:
            raise ValueError(f"an item of {costs[end - 1]} tokens does not fit a window of {limit} tokens")
        first = start if start == 0 else min(end - 1, start + math.ceil(context_fraction * (end - start)))
        windows.append((start, first, end))
        end = first
    return windows[::-1]


def stream_tie_groups(vocab: IdVocabulary, items: list[int], timestamps: list[int]) -> list[int]:
    """One group per token of :meth:`ExampleBuilder.stream_segment`'s ``items``: consecutive items with the same
    timestamp share a group (numbered from 0 in order), an item with a timestamp of its own and the user-start token
    get :data:`NO_TIE_GROUP`; :class:`PackedCollator` shuffles the items of a group."""
    if len(items) != len(timestamps):
        raise ValueError(f"{len(items)} items but {len(timestamps)} timestamps")
    groups, run, n = [NO_TIE_GROUP], -1, len(items)
    for k, (item, time) in enumerate(zip(items, timestamps)):
        starts_run = k == 0 or time != timestamps[k - 1]
        run += starts_run
        tied = not starts_run or (k + 1 < n and timestamps[k + 1] == time)
        groups += [run if tied else NO_TIE_GROUP] * len(vocab.stream_item_input_ids(item))
    return groups


class ExampleBuilder:
    """Writes prompts (ID streams, or text with titles) and tokenized, loss-masked segments."""

    def __init__(self, vocab: IdVocabulary, titles: list[str], args: TaskArguments,
                 profile: CatalogueProfile | None = None):
        self.vocab, self.titles, self.args = vocab, titles, args
        self.profile = profile or CatalogueProfile()
        self.tokenizer: PreTrainedTokenizerBase = vocab.tokenizer
        fmt = args.prompt_format
        self.chat = (fmt == "chat") or (fmt == "auto" and bool(getattr(self.tokenizer, "chat_template", None)))
        self.row_length = args.row_length(vocab)

    # ------------------------------------------------------------------ ID streams
    def stream_segment(self, items: list[int], first_target: int) -> dict:
        """``items`` as an ID stream; every item from ``first_target`` on is a target (its codes + end marker)."""
        vocab = self.vocab
        input_ids, labels = [vocab.user_id], [IGNORE_INDEX]
        for n, item in enumerate(items):
            tokens = vocab.stream_item_token_ids(item)
            input_ids += vocab.stream_item_input_ids(item)  # read with its memory token, written with the end marker
            labels += tokens if n >= first_target else [IGNORE_INDEX] * len(tokens)
        return {"input_ids": input_ids, "labels": labels}

    def stream_prompt_ids(self, history: list[int]) -> list[int]:
        """What the model reads before recommending from an ID history: the next token starts an ID."""
        return self.vocab.stream_token_ids(self.budget(history))

    def budget(self, history: list[int]) -> list[int]:
        return budget_history(history, self.vocab, self.args.history_token_budget, self.args.max_history_items)

    # ------------------------------------------------------------------ requests
    def request_words_ids(self, text: str) -> list[int]:
        """The words of a request as the model reads them: its last ``request_max_tokens`` tokens."""
        ids = self.tokenizer(text.strip(), add_special_tokens=False)["input_ids"]
        return ids[-self.args.request_max_tokens:] if self.args.request_max_tokens else ids

    def request_prompt_ids(self, text: str, named: list[int]) -> list[int]:
        """What the model reads before answering a request: its words, then the items it names as an ID stream
        (cut to the history budget); the next token starts an item's ID. Without words this is exactly the
        sequential prompt."""
        words = self.request_words_ids(text) if text and text.strip() else []
        return words + self.stream_prompt_ids(named)

    def request_segment(self, text: str, named: list[int], answers: list[int]) -> dict:
        """A request and its answers: every answer item (codes + end marker) is a target."""
        prompt = self.request_prompt_ids(text, named)
        written = [t for i in answers for t in self.vocab.stream_item_token_ids(i)]
        read = [t for i in answers for t in self.vocab.stream_item_input_ids(i)]
        return {"input_ids": prompt + read, "labels": [IGNORE_INDEX] * len(prompt) + written}

    # ------------------------------------------------------------------ text prompts
    def natural_language_prompt(self, history: list[int]) -> str:
        """The instruction naming the history by titles: the most recent ``text_history_items`` of the items given."""
        limit = self.args.text_history_items
        titles = "; ".join(self.titles[i] for i in (history[-limit:] if limit else history))
        return f"I liked these, in order: {titles}. {self.profile.fill(self.profile.next_question)} Answer with an item ID."

    def messages(self, prompt: str, answer: str | None) -> list[dict]:
        msgs = [{"role": "system", "content": self.args.system_prompt}] if self.args.system_prompt else []
        msgs.append({"role": "user", "content": prompt})
        if answer is not None:
            msgs.append({"role": "assistant", "content": answer})
        return msgs

    def prompt_text(self, prompt: str) -> str:
        """The prompt as the model sees it, up to where it starts answering (chat template applied)."""
        if self.chat:
            return self.tokenizer.apply_chat_template(self.messages(prompt, None), add_generation_prompt=True, tokenize=False)
        return prompt + "\n"

    def text_prompt_ids(self, prompt: str) -> list[int]:
        return self.tokenizer(self.prompt_text(prompt), add_special_tokens=False)["input_ids"]

    def answer_ids(self, prompt: str, answer: str, head: str | None = None) -> list[int]:
        """Token ids of the answer turn; ``head`` is ``prompt_text(prompt)`` when the caller already has it."""
        if self.chat:
            head = self.prompt_text(prompt) if head is None else head
            full = self.tokenizer.apply_chat_template(self.messages(prompt, answer), tokenize=False)
            if not full.startswith(head):
                raise ValueError("the chat template renders the prompt differently with and without the answer")
            return self.tokenizer(full[len(head):], add_special_tokens=False)["input_ids"]
        return self.tokenizer(answer, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]

    def text_segment(self, prompt: str, answer: str) -> dict:
        """A prompt/answer pair with the loss on the answer only (the prompt cut from the left to fit)."""
        head = self.prompt_text(prompt)
        prompt_ids = self.tokenizer(head, add_special_tokens=False)["input_ids"]
        answer_ids = self.answer_ids(prompt, answer, head)
        keep = max(self.row_length - len(answer_ids), 0)
        prompt_ids = prompt_ids[-keep:] if keep else []
        return {"input_ids": prompt_ids + answer_ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids}


def _recent_positions(sequences: list[list[int]], per_user: int) -> list[tuple[int, int]]:
    """(user, target position) pairs: each user's most recent ``per_user`` events that have a history."""
    return [(u, pos) for u, seq in enumerate(sequences) for pos in range(max(1, len(seq) - per_user), len(seq))]


def build_segments(data: PreparedData, vocab: IdVocabulary, args: TaskArguments, split: str = "train",
                   tie_groups: bool = False) -> Dataset:
    """Tokenized examples of every requested task: ``task``, ``user_idx``, ``input_ids``, ``labels``,
    ``targets`` (the target items), ``history_tokens`` (ID-stream tokens before the last target).

    ``split="train"`` uses each user's train history; ``valid``/``test`` give one example per user whose only
    target is its held-out event (for eval loss), and skip the alignment task. ``tie_groups`` (train only) adds
    each token's group of items that share a timestamp, which the collator's tie shuffling reads."""
    rng = random.Random(args.example_seed)
    builder = ExampleBuilder(vocab, list(data.items["title"]), args, data.profile)
    rows: dict[str, list] = {k: [] for k in ("task", "user_idx", "input_ids", "labels", "targets", "history_tokens")}
    ties = tie_groups and split == "train"
    if ties:
        rows["tie_groups"] = []

    def add(task: str, user: int, segment: dict, targets: list[int], history_tokens: int) -> None:
        for key, value in zip(rows, (task, user, segment["input_ids"], segment["labels"], targets, history_tokens)):
            rows[key].append(value)
        if ties:
            rows["tie_groups"].append(segment.get("tie_groups") or [NO_TIE_GROUP] * len(segment["input_ids"]))

    seq_split = data.sequences[split]
    sequences = data.split_sequences(split)
    times = ([h + [t] for h, t in zip(list(seq_split["history_timestamps"]), list(seq_split["target_timestamp"]))]
             if ties else None)
    held_out = [(u, len(s) - 1) for u, s in enumerate(sequences)]
    cap = args.max_examples_per_task

    def capped(pairs: list) -> list:
        return pairs if not cap or cap >= len(pairs) else sorted(rng.sample(pairs, cap))

    limit = args.window_length(vocab) or args.row_length(vocab)
    costs = vocab.id_token_counts
    for task in args.task_list():
        if task == "requests":
            if split != "train":
                continue
            writer = request_writer(data, args, sequences)
            for request in writer.requests(args.request_examples, "train", args.request_answers):
                segment = builder.request_segment(request.text, list(request.named), list(request.answers))
                add(task, -1, segment, list(request.answers), len(segment["input_ids"]))
        elif task == "alignment":
            if split != "train":
                continue
            items = list(range(len(vocab.codebook)))
            if cap:
                items = sorted(rng.sample(items, min(cap // 2, len(items))))
            for i in items:
                title = builder.titles[i]
                add(task, -1, builder.text_segment(f"What is the ID of the item \"{title}\"?", vocab.format_item(i)), [i], 0)
                add(task, -1, builder.text_segment(f"Which item has the ID {vocab.format_item(i)}?", title), [i], 0)
        elif task == "sequential" and args.sequential_targets == "all" and split == "train":
            windows = [(u, w) for u, seq in enumerate(sequences)
                       for w in stream_windows(costs[seq].tolist(), limit, args.context_fraction)]
            for u, (start, first, end) in capped(windows):
                items = sequences[u][start:end]
                segment = builder.stream_segment(items, first - start)
                if ties:
                    segment["tie_groups"] = stream_tie_groups(vocab, items, times[u][start:end])
                add(task, u, segment, items[first - start:], len(segment["input_ids"]) - vocab.id_token_count(items[-1]))
        else:
            pairs = _recent_positions(sequences, args.windows_per_user) if split == "train" else held_out
            for u, pos in capped(pairs):
                history, target = builder.budget(sequences[u][:pos]), sequences[u][pos]
                history_tokens = 1 + sum(vocab.id_token_count(i) for i in history)
                if task == "sequential":
                    segment = builder.stream_segment(history + [target], len(history))
                else:
                    segment = builder.text_segment(builder.natural_language_prompt(history), vocab.format_item(target))
                add(task, u, segment, [target], history_tokens)
    return Dataset.from_dict(rows)


def request_writer(data: PreparedData, args: TaskArguments, histories: list[list[int]] | None = None):
    """A :class:`~sid4llm.lm.requests.RequestWriter` over the prepared catalogue and its train histories."""
    from .requests import RequestWriter

    items = data.items
    if histories is None:  # every train event: a train row's history and its target
        histories = data.train_histories()
    categories = items["categories"] if "categories" in items.column_names else [[] for _ in range(len(items))]
    return RequestWriter(list(items["title"]), categories, data.item_popularity, histories, list(items["item_id"]),
                         data.profile, seed=args.example_seed)


def stream_tokens_per_item(vocab: IdVocabulary, popularity: np.ndarray) -> dict:
    """Tokens one item costs in an ID stream (codes + end marker), per item and per interaction."""
    costs = vocab.id_token_counts.astype(float)
    weights = np.asarray(popularity, dtype=float)[: len(costs)]
    return {"tokens_per_item_uniform": float(costs.mean()),
            "tokens_per_item_unigram": float((costs * weights).sum() / weights.sum()) if weights.sum() else None}
