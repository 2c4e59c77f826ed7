"""Settings that every ID method of a comparison shares (``sid4llm reproduce-paper``, ``sid4llm cold-start``).

One value for all methods keeps a comparison fair, so these are arguments of the comparison, not of a method; the
defaults are the paper's and the published runs', not the shipped configs' (which turn some of them on)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass(kw_only=True)
class SharedMethodSettings:
    collaborative_weight: float = field(default=0.0, metadata={"help": "Share of every ID method's input from item co-occurrence (0: text only, as the paper and the published runs; the shipped varlen config alone uses 0.8)."})
    item_memory_tokens: bool = field(default=False, metadata={"help": "Recommenders read a learned memory token per warm item (off, as in the shipped configs, the paper and the published runs)."})
    trie_softmax: bool = field(default=False, metadata={"help": "Recommenders normalise each ID token over the trie's continuations of its prefix, in training and decoding (off, as the paper and the published runs; the shipped from-scratch config turns it on)."})
    weight_average_decay: float = field(default=0.0, metadata={"help": "Recommenders are saved as a moving average of their weights with this decay per step (0: off, as the published runs and the shipped from-scratch config)."})

    def shared_settings(self) -> dict:
        """These settings by name, to hand to another comparison."""
        return {f.name: getattr(self, f.name) for f in fields(SharedMethodSettings)}

    def recommender_settings(self) -> dict:
        """The settings that reach every recommender's ``sid4llm finetune``."""
        return {k: v for k, v in self.shared_settings().items() if k != "collaborative_weight"}
