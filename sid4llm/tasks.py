"""Training and evaluation examples for the LM, as ``datasets.Dataset``.

Tasks:
- ``sequential``: the user's recent history as IDs → the next item's ID. History is cut to a **token
  budget** (the most recent whole items whose ID tokens fit in B tokens, the paper's fixed-budget setting)
  or to an item count.
- ``natural_language``: an instruction listing the history as titles → the next item's ID.
- ``alignment``: title → ID and ID → title, which teaches the LM what the new tokens mean.

Training examples come from each user's **train** prefix only (sliding windows ending at its most recent
train events), so valid and test targets never leak. Instruct models get their chat template, base and
from-scratch models a plain format; the loss is on the answer only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from .data import PreparedData
from .tokenization import IdVocabulary

TASKS = ("sequential", "natural_language", "alignment")
IGNORE_INDEX = -100


@dataclass
class TaskArguments:
    tasks: str = field(default="sequential,natural_language,alignment",
                       metadata={"help": f"Comma-separated tasks to train on, from {TASKS}."})
    history_token_budget: int | None = field(
        default=160, metadata={"help": "Tokens of ID history per example (most recent whole items that fit); None: use max_history_items."})
    max_history_items: int = field(default=30, metadata={"help": "At most this many history items per example."})
    windows_per_user: int = field(default=4, metadata={"help": "Training windows per user (ending at the user's most recent train events)."})
    max_examples_per_task: int | None = field(default=None, metadata={"help": "Cap each task's examples (random, seeded)."})
    prompt_format: str = field(default="auto", metadata={"help": "chat (tokenizer's chat template), plain, or auto (chat when the tokenizer has a template)."})
    system_prompt: str = field(default="You are a recommender. Answer with item IDs.",
                               metadata={"help": "System message for chat-formatted examples ('' for none)."})
    max_seq_length: int = field(default=512, metadata={"help": "Truncate examples (the prompt, from the left) to this many tokens."})
    example_seed: int = field(default=0, metadata={"help": "Seed for sampling examples."})

    def task_list(self) -> list[str]:
        tasks = [t.strip() for t in self.tasks.split(",") if t.strip()]
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise ValueError(f"unknown task(s) {unknown or self.tasks!r}; choose from {TASKS}")
        return tasks


def budget_history(history: list[int], vocab: IdVocabulary, token_budget: int | None, max_items: int) -> list[int]:
    """The most recent whole items of ``history`` whose ID tokens fit in ``token_budget`` (and ``max_items``)."""
    kept, used = [], 0
    for item in reversed(history[-max_items:] if max_items else history):
        cost = vocab.id_token_count(item)
        if token_budget is not None and used + cost > token_budget:
            break
        kept.append(item)
        used += cost
    return kept[::-1]


class ExampleBuilder:
    """Turns (history, target) pairs into chat messages and tokenized, loss-masked examples."""

    def __init__(self, vocab: IdVocabulary, titles: list[str], args: TaskArguments):
        self.vocab, self.titles, self.args = vocab, titles, args
        self.tokenizer: PreTrainedTokenizerBase = vocab.tokenizer
        fmt = args.prompt_format
        self.chat = (fmt == "chat") or (fmt == "auto" and bool(getattr(self.tokenizer, "chat_template", None)))

    # ------------------------------------------------------------------ prompts
    def ids_text(self, items: list[int]) -> str:
        return "".join(self.vocab.format_item(i) for i in items)

    def sequential_prompt(self, history: list[int]) -> str:
        return self.ids_text(history)

    def natural_language_prompt(self, history: list[int]) -> str:
        titles = "; ".join(self.titles[i] for i in history)
        return f"I liked these, in order: {titles}. What should I watch next? Answer with an item ID."

    def messages(self, prompt: str, answer: str | None) -> list[dict]:
        msgs = [{"role": "system", "content": self.args.system_prompt}] if self.args.system_prompt else []
        msgs.append({"role": "user", "content": prompt})
        if answer is not None:
            msgs.append({"role": "assistant", "content": answer})
        return msgs

    # ------------------------------------------------------------------ tokenization
    def prompt_text(self, prompt: str) -> str:
        """The prompt as the model sees it, up to where it starts answering (chat template applied)."""
        if self.chat:
            return self.tokenizer.apply_chat_template(self.messages(prompt, None), add_generation_prompt=True, tokenize=False)
        return prompt

    def prompt_ids(self, prompt: str) -> list[int]:
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

    def tokenize(self, prompt: str, answer: str) -> dict:
        head = self.prompt_text(prompt)
        prompt_ids = self.tokenizer(head, add_special_tokens=False)["input_ids"]
        answer_ids = self.answer_ids(prompt, answer, head)
        keep = max(self.args.max_seq_length - len(answer_ids), 0)
        prompt_ids = prompt_ids[-keep:] if keep else []
        ids = prompt_ids + answer_ids
        return {"input_ids": ids, "attention_mask": [1] * len(ids),
                "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids}


def _windows(train_sequences: list[list[int]], per_user: int) -> list[tuple[int, int]]:
    """(user, target position) pairs: each user's most recent ``per_user`` train events with a history."""
    pairs = []
    for u, seq in enumerate(train_sequences):
        for pos in range(max(1, len(seq) - per_user), len(seq)):
            pairs.append((u, pos))
    return pairs


def build_task_examples(data: PreparedData, vocab: IdVocabulary, args: TaskArguments, split: str = "train") -> Dataset:
    """Raw (untokenized) examples of every requested task: ``task``, ``user_idx``, ``target_position``,
    ``prompt``, ``answer``, ``target``, ``history_tokens``.

    ``split="train"`` slides windows over each user's train prefix; ``valid``/``test`` give one example per
    user (its held-out event) and are meant for evaluation only."""
    rng = random.Random(args.example_seed)
    builder = ExampleBuilder(vocab, list(data.items["title"]), args)
    tasks = args.task_list()
    rows: dict[str, list] = {k: [] for k in ("task", "user_idx", "target_position", "prompt", "answer", "target",
                                             "history_tokens")}

    def add(task, user, pos, prompt, answer, target, history_tokens):
        for key, value in zip(rows, (task, user, pos, prompt, answer, target, history_tokens)):
            rows[key].append(value)

    seq_split = data.sequences[split]
    sequences = [h + [t] for h, t in zip(list(seq_split["history"]), list(seq_split["target"]))]
    if split == "train":
        pairs = _windows(sequences, args.windows_per_user)
    else:
        pairs = [(u, len(s) - 1) for u, s in enumerate(sequences)]
    per_task_cap = args.max_examples_per_task
    for task in tasks:
        if task == "alignment":
            if split != "train":
                continue
            items = list(range(len(vocab.codebook)))
            if per_task_cap:
                items = rng.sample(items, min(per_task_cap // 2, len(items)))
            for i in items:
                title = builder.titles[i]
                add("alignment", -1, -1, f"What is the ID of the item \"{title}\"?", vocab.format_item(i), i, 0)
                add("alignment", -1, -1, f"Which item has the ID {vocab.format_item(i)}?", title, i, 0)
            continue
        chosen = pairs if not per_task_cap or per_task_cap >= len(pairs) else rng.sample(pairs, per_task_cap)
        for u, pos in chosen:
            seq = sequences[u]
            history = budget_history(seq[:pos], vocab, args.history_token_budget, args.max_history_items)
            target = seq[pos]
            tokens = sum(vocab.id_token_count(i) for i in history)
            prompt = builder.sequential_prompt(history) if task == "sequential" else builder.natural_language_prompt(history)
            add(task, u, pos, prompt, vocab.format_item(target), target, tokens)
    return Dataset.from_dict(rows)


def tokenize_examples(examples: Dataset, vocab: IdVocabulary, args: TaskArguments, titles: list[str]) -> Dataset:
    """Add ``input_ids``, ``attention_mask`` and answer-only ``labels``."""
    builder = ExampleBuilder(vocab, titles, args)
    return examples.map(lambda ex: builder.tokenize(ex["prompt"], ex["answer"]), desc="tokenizing")
