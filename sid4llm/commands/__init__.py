"""Every entry point of sid4llm, one module per command, each a ``main(arguments...)`` that does the work and
a ``run(argv=None)`` that parses flags (and ``--config`` YAML) with the shared parser of :mod:`sid4llm.cli`.

They are reached three ways, all the same code: ``sid4llm <command>`` (the console script),
``python recipes/<command>.py`` / ``accelerate launch recipes/<command>.py`` (thin files), and from Python —
the quickstart and the paper reproduction call the other commands' ``main`` functions.
"""

# command name → (module, one-line summary); the order is the order of a run. A module named without a package is
# one of sid4llm.commands; the research harness (sid4llm.research) adds the last two.
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare-data": ("prepare_data", "read a dataset, split it leave-one-out, embed the item texts"),
    "train-ids": ("train_ids", "learn semantic IDs (variable-length dVAE, fixed, RQ-KMeans, REINFORCE, atomic)"),
    "finetune": ("finetune", "train a causal LM to write item IDs (from scratch, full or LoRA; accelerate launch)"),
    "align": ("align", "the preference stage: learn from the model's own ranked lists with trl's DPO (accelerate launch)"),
    "evaluate": ("evaluate", "recall/NDCG/coverage on the valid or test split against the most-popular floor"),
    "chat": ("chat", "talk to a trained recommender: titles in, catalogue items out"),
    "serve": ("serve", "serve a trained recommender over HTTP: /v1/recommend, OpenAI-compatible /v1/chat/completions"),
    "add-items": ("add_items", "give new (cold-start) items IDs without changing any existing one"),
    "cold-start": ("sid4llm.research.cold_start", "how well new items are recommended from their text alone (held-out items, add_items)"),
    "quickstart": ("quickstart", "every step in one run on bundled MovieLens-1M and SmolLM2, sized for 2 CPU cores"),
    "reproduce-paper": ("sid4llm.research.reproduce_paper", "the claims of arXiv 2602.16375 on one dataset, with results.md"),
}


def main(argv: list[str] | None = None) -> None:
    """``sid4llm <command> [flags]``: the console script; ``sid4llm --help`` lists the commands."""
    import importlib
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, COMMANDS))
        lines = ["usage: sid4llm <command> [--config FILE] [flags]   (sid4llm <command> --help for its flags)", "",
                 "commands:"]
        lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
        print("\n".join(lines))
        return
    name = argv.pop(0)
    if name not in COMMANDS:
        sys.exit(f"error: unknown command {name!r}; choose from {', '.join(COMMANDS)} (sid4llm --help)")
    sys.argv = [f"sid4llm {name}", *argv]
    importlib.import_module(command_module(name)).run()


def command_module(name: str) -> str:
    """The dotted module that runs the command ``name``."""
    module = COMMANDS[name][0]
    return module if "." in module else f"{__name__}.{module}"

