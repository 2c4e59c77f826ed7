"""The main job in one command (`make quickstart`): every step, one after the other, on the bundled MovieLens-1M with the
bundled SmolLM2-135M-Instruct, sized for 2 CPU cores (under 30 minutes).

    sid4llm quickstart                                             # what `make quickstart` runs
    accelerate launch recipes/quickstart.py --max_steps 2000 --id_epochs 5 --eval_users 0    # a GPU-sized run

Steps: prepare data → embed items → train variable-length IDs → extend the tokenizer + LoRA fine-tune →
evaluate on the test split against most-popular → chat. Writes to OUT (default outputs/quickstart/):
results.md, results.json, length_vs_popularity.png, chat_transcript.md, and data/, ids/, model/ (the trained
recommender, loadable with RecommendationPipeline.from_pretrained). Each finished step is skipped on a re-run.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from accelerate import PartialState

from ..cli import run_command
from ..data import PrepareDataArguments, PreparedData
from ..data.titles import spoken_title
from ..evaluation import evaluate_recommender, format_table
from ..lm.models import layer_cut_phrase
from ..lm.recommender_config import CONFIG_FILE
from ..lm.tasks import TaskArguments, request_writer
from ..pipeline import RecommendationPipeline
from ..reporting import machine_description, markdown_table, write_json
from . import finetune, prepare_data, train_ids


@dataclass
class QuickstartArguments:
    output_dir: str = field(default="outputs/quickstart", metadata={"help": "Where every output goes."})
    dataset: str = field(default="default", metadata={"help": "Bundled dataset name or a path (see sid4llm prepare-data --help)."})
    item_file: str | None = field(default=None, metadata={"help": "Item metadata file for a path dataset."})
    encoder: str = field(default="default", metadata={"help": "Sentence encoder for item text."})
    max_users: int | None = field(default=None, metadata={"help": "Subsample users for a faster run."})
    ids_config: str = field(default="ids/varlen_dvae.yaml", metadata={"help": "ID training config (a file, or a shipped config name)."})
    id_epochs: float = field(default=1.0, metadata={"help": "Passes over the train interactions for the ID model (raised to the config's min_steps)."})
    id_steps: int | None = field(default=None, metadata={"help": "Exactly this many ID training steps (overrides id_epochs and min_steps)."})
    allow_collapse: bool = field(default=False, metadata={"help": "Go on with a collapsed codebook instead of stopping (see sid4llm train-ids --help)."})
    finetune_config: str = field(default="finetune/quickstart.yaml", metadata={"help": "Fine-tuning config (a file, or a shipped config name)."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "Override the config's causal LM."})
    max_steps: int | None = field(default=None, metadata={"help": "Override the config's fine-tuning steps."})
    per_device_train_batch_size: int | None = field(default=None, metadata={"help": "Override the config's batch size."})
    eval_users: int = field(default=1000, metadata={"help": "Test users to evaluate (a seeded random sample; 0 = all)."})
    eval_k: list[int] = field(default_factory=lambda: [1, 5, 10], metadata={"help": "Cut-offs for the results table."})
    eval_batch_size: int = field(default=16, metadata={"help": "Users per decoding batch."})
    chat_k: int = field(default=5, metadata={"help": "Items per chat answer in the transcript."})


# What a new user would type: a greeting, a request that names no title ({request}: one in the catalogue's own words,
# written from its categories in a held-out phrasing), a request with a title, and popular titles in plain words.
TRANSCRIPT_TURNS = (
    ("hi",),
    ("{request}", "Something different?"),
    ("Something like {d}",),
    ("I loved {a} and {b}. {next}", "Thanks! Something else, maybe closer to {c}?"),
)


def chat_transcript(pipe: RecommendationPipeline, data: PreparedData, k: int) -> tuple[str, list[dict]]:
    """Conversations a new user would start (a greeting, requests that name no title, a request with a title,
    popular titles in plain words), written out as markdown with the seconds each answer took."""
    titles = list(data.items["title"])
    popularity = data.item_popularity
    order = sorted(range(len(titles)), key=lambda i: -int(popularity[i]))
    profile = data.profile
    writer = request_writer(data, TaskArguments(example_seed=1))
    asked = next((r for r in (writer.describe_request("held_out") for _ in range(50)) if r is not None), None)
    names = {"a": spoken_title(titles[order[0]]), "b": spoken_title(titles[order[2]]), "c": spoken_title(titles[order[6]]),
             "d": spoken_title(titles[order[10]]), "next": profile.fill(profile.next_question),
             "request": asked.text if asked else profile.fill(profile.next_question)}
    lines = ["# Chat transcript", "", "Generated by `make quickstart` with the model in `model/` "
             "(`sid4llm chat --model outputs/quickstart/model` to talk to it yourself). Each conversation starts afresh.", ""]
    every: list[dict] = []
    for conversation in TRANSCRIPT_TURNS:
        messages: list[dict] = []
        for turn in conversation:
            messages.append({"role": "user", "content": turn.format(**names)})
            start = time.perf_counter()
            messages.append(pipe.chat(messages, k=k))
            messages[-1]["seconds"] = round(time.perf_counter() - start, 1)
        for m in messages:
            took = f" *({m['seconds']} s)*" if "seconds" in m else ""
            lines += [f"**{m['role']}:**{took} " + m["content"].replace("\n", "  \n"), ""]
        lines += ["---", ""]
        every += messages
    return "\n".join(lines), every


def model_label(recommender) -> str:
    cfg = recommender.config
    base = "SmolLM2-135M-Instruct" if cfg.base_model == "default" else Path(cfg.base_model).name
    layers = cfg.pretrained_layers
    base += f" ({layer_cut_phrase(layers)})" if layers and not cfg.from_scratch else ""
    model = "Llama from scratch" if cfg.from_scratch else base + (" + LoRA" if cfg.peft else "")
    return f"{model}, {'variable' if recommender.codebook.config.variable_length else 'fixed'}-length IDs"


def num(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def floor_sentence(evaluation: dict, ks: list[int]) -> str:
    """How the model compares with the most-popular floor, in words (seen items left out of both lists)."""
    k = 10 if 10 in ks else max(ks)
    model, floor = evaluation["model"][f"recall@{k}"], evaluation["most_popular"][f"recall@{k}"]
    if not floor:
        return f"recall@{k} {model:.4f}; the most-popular floor is 0 on these users."
    ratio = model / floor
    verdict = ("at least twice the floor" if ratio >= 2 else "above the floor, but under twice it" if ratio > 1
               else "**not above the most-popular floor**")
    seen = "left out of" if evaluation.get("exclude_seen", True) else "kept in"
    return (f"recall@{k} is {ratio:.2f}× the most-popular floor ({model:.4f} vs {floor:.4f}; each user's seen items "
            f"{seen} both lists): {verdict}.")


def results_markdown(summary: dict) -> str:
    ev, ids, ks = summary["evaluation"], summary["ids"], summary["eval_k"]
    cols = [f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks] + [f"coverage@{max(ks)}"]
    table = markdown_table(["method", *cols], [[label, *(num(ev[name][c], 4) for c in cols)] for name, label in
                                               (("model", summary["model_label"]), ("most_popular", "most popular"))])
    t = summary["timings_seconds"]
    return "\n".join([
        "# Quickstart results", "",
        f"Dataset: {summary['dataset']['source']} — {summary['dataset']['n_users']:,} users, "
        f"{summary['dataset']['n_items']:,} items, {summary['dataset']['n_interactions']:,} interactions. "
        f"Evaluated on {ev['model']['n_users']:,} test users (leave-one-out, full catalogue, constrained beam search).", "",
        table, "",
        floor_sentence(ev, ks), "",
        f"Invalid IDs: {num(ev['model']['invalid_rate_constrained'])} with the trie, "
        f"{num(ev['model'].get('invalid_rate_unconstrained'))} without it "
        f"(greedy, {ev['model'].get('invalid_rate_unconstrained_users', 0)} users).", "",
        "## Semantic IDs", "",
        f"- mean length {num(ids['mean_length_uniform'], 2)} per item, {num(ids['mean_length_unigram'], 2)} per interaction "
        f"(max {ids['max_length']}); Spearman(length, popularity) {num(ids['spearman_length_popularity'])}",
        f"- reconstruction error {num(ids['recon_mse_uniform'])} (per item), {num(ids['recon_mse_unigram'])} (per interaction)",
        "- plot: `length_vs_popularity.png`", "",
        "## Time", "",
        markdown_table(["step", "seconds"], [[k, "reused from an earlier run" if k in summary["reused_steps"] else f"{v:.0f}"]
                                             for k, v in t.items()]), "",
        f"Machine: {summary['machine']}. Fine-tuning: {summary['finetune']['steps']} steps; "
        f"train loss {num(summary['finetune'].get('train_loss'))}.", "",
    ])


def main(args: QuickstartArguments) -> None:
    state = PartialState()
    out = Path(args.output_dir)
    data_dir, ids_dir, model_dir = out / "data", out / "ids", out / "model"
    timings: dict[str, float] = {}
    outputs = {"prepare + embed": data_dir / "stats.json", "semantic IDs": ids_dir / "metrics.json",
               "fine-tuning": model_dir / CONFIG_FILE}
    existed = {step for step, path in outputs.items() if path.exists()}  # data and model: reused when they exist
    start = time.time()

    def say(message: str) -> None:
        if state.is_main_process:
            print(message, flush=True)

    with state.main_process_first():  # data and IDs: the main process builds, the others then load
        t = time.time()
        if "prepare + embed" not in existed:
            say(f"[1/5] preparing {args.dataset} and embedding its items → {data_dir}")
            prepare_data.main(PrepareDataArguments(output_dir=str(data_dir), dataset=args.dataset,
                                                   item_file=args.item_file, encoder=args.encoder, max_users=args.max_users))
        else:
            say(f"[1/5] prepared dataset found in {data_dir}")
        data = PreparedData.load(data_dir)
        timings["prepare + embed"] = time.time() - t

        t = time.time()
        say(f"[2/5] variable-length semantic IDs ({args.ids_config}, {args.id_epochs:g} epoch(s)) → {ids_dir}")
        # τ/β anneal over the first half of the steps (the config's anneal_fraction), whatever their number.
        codebook = train_ids.trained_or_train(
            args.ids_config, data_dir=data_dir, output_dir=ids_dir, epochs=args.id_epochs, max_steps=args.id_steps,
            allow_collapse=args.allow_collapse or None)
        timings["semantic IDs"] = time.time() - t

    # Each step reuses its output only under the same settings (for fine-tuning: the same IDs too, by fingerprint).
    t = time.time()
    say(f"[3/5] extending the tokenizer and fine-tuning ({args.finetune_config}) → {model_dir}")
    recommender = finetune.trained_or_train(
        args.finetune_config, data_dir=data_dir, codebook=ids_dir / "codebook", output_dir=model_dir,
        model_name_or_path=args.model_name_or_path, max_steps=args.max_steps,
        per_device_train_batch_size=args.per_device_train_batch_size)
    if "fine-tuning" in existed and outputs["fine-tuning"].stat().st_mtime < start:
        say("      trained model found, fine-tuned with these settings on these IDs: reused")
    timings["fine-tuning"] = time.time() - t
    reused = [step for step, path in outputs.items() if step in existed and path.stat().st_mtime < start]

    t = time.time()
    ks = list(args.eval_k)
    n_eval = args.eval_users or None
    say(f"[4/5] evaluating on {'all' if n_eval is None else n_eval} test users against most-popular")
    evaluation = evaluate_recommender(recommender, data, "test", ks, batch_size=args.eval_batch_size, max_users=n_eval)
    timings["evaluation"] = time.time() - t
    if not state.is_main_process:
        return

    t = time.time()
    say("[5/5] chatting")
    pipe = RecommendationPipeline(recommender)
    transcript, _ = chat_transcript(pipe, data, args.chat_k)
    (out / "chat_transcript.md").write_text(transcript)
    timings["chat"] = time.time() - t
    timings["total"] = time.time() - start

    recommender.results["evaluation"] = evaluation  # results.json and the model card now carry the test metrics
    recommender.save_description(model_dir)
    if (ids_dir / "length_vs_popularity.png").exists():
        shutil.copy(ids_dir / "length_vs_popularity.png", out / "length_vs_popularity.png")
    m = codebook.metrics
    summary = {
        "command": "make quickstart", "arguments": asdict(args), "eval_k": ks, "model_label": model_label(recommender),
        "machine": machine_description(),
        "dataset": {k: data.stats.get(k) for k in ("source", "n_users", "n_items", "n_interactions", "density")},
        "ids": {k: m.get(k) for k in ("method", "variable_length", "vocab_size", "max_length", "mean_length_uniform",
                                      "mean_length_unigram", "recon_mse_uniform", "recon_mse_unigram",
                                      "spearman_length_popularity", "codebook_usage", "train_seconds")},
        "finetune": {"steps": _trained_steps(model_dir),
                     **{k: v for k, v in recommender.results.get("metrics", {}).items() if k in ("train_loss", "train_runtime")}},
        "evaluation": evaluation, "timings_seconds": {k: round(v, 1) for k, v in timings.items()},
        "reused_steps": reused,
    }
    write_json(out / "results.json", summary)
    (out / "results.md").write_text(results_markdown(summary))

    print("\n" + format_table(evaluation, ks))
    print(f"\nDone in {timings['total'] / 60:.1f} min. Outputs in {out}/:")
    print("  results.md / results.json   the table above, ID statistics, timings")
    print("  length_vs_popularity.png    ID length against item popularity")
    print("  chat_transcript.md          a two-turn chat with recommendations by title")
    print(f"  model/                      the recommender (RecommendationPipeline.from_pretrained('{model_dir}'))")
    print("  ids/ data/                  the codebook and the prepared dataset")
    print(f"Talk to it: sid4llm chat --model {model_dir}")


def _trained_steps(model_dir: Path) -> int | None:
    state = model_dir / "trainer_state.json"
    return json.loads(state.read_text()).get("global_step") if state.exists() else None


ARGUMENTS = (QuickstartArguments,)


def run(argv: list[str] | None = None) -> None:
    run_command(main, ARGUMENTS, argv, log_level=30)
