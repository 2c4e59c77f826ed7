"""Fine-tuning throughput: item targets/s, tokens/s and peak memory of the finetune recipe for a few steps.

    python scripts/bench_finetune.py --config sid4llm/configs/finetune/from_scratch.yaml \
        --data_dir data/ml-1m --codebook outputs/ids/varlen --max_steps 20 \
        --compare "scratch_tokenizer=text id_softmax=false" "scratch_tokenizer=ids" --json outputs/bench_finetune.json

``--profile_steps N`` also profiles the last N steps (torch.profiler; left out of the timing) and prints the ops with
the most self time, so where a step's time goes is measured, not guessed.

Takes every flag of recipes/finetune.py. ``--compare A B`` runs once per variant (``FIELD=none`` sets an optional field to None), side by side in one table;
a variant is one argument ``"FIELD=VALUE [FIELD=VALUE ...]"`` (e.g. ``"scratch_tokenizer=text id_softmax=false" "scratch_tokenizer=ids"``:
a text vocabulary with the whole-vocabulary loss, as before, vs an ID-only vocabulary with the ID-token loss). Counts what the model actually processed: tokens (padding
included, and without it) and item targets (the end markers it learned to write).
"""

from __future__ import annotations

import copy
import platform
import resource
import tempfile
import time
import typing
from dataclasses import dataclass, field

import torch
from transformers import TrainerCallback

from sid4llm.cli import parse_config_and_args
from sid4llm.lm.models import ModelArguments
from sid4llm.lm.tasks import TaskArguments
from sid4llm.reporting import markdown_table, write_json
from sid4llm.training import SidDataArguments, SidTrainingConfig, run_finetune
from sid4llm.training.finetuning import build_vocab, load_codebook
from sid4llm.training.packing import PackedCollator


@dataclass
class BenchArguments:
    json: str | None = field(default=None, metadata={"help": "Write the results here as JSON."})
    warmup_steps_excluded: int = field(default=2, metadata={"help": "Steps not timed (allocation, first-call overhead)."})
    compare: list[str] | None = field(default=None, metadata={"help": "Variants, each one argument \"FIELD=VALUE [FIELD=VALUE ...]\": "
                                                                       "one run per variant, side by side."})
    profile_steps: int = field(default=0, metadata={"help": "Profile the last this many steps (not timed) and report "
                                                            "the ops with the most self time (0: off)."})
    profile_top: int = field(default=12, metadata={"help": "Ops listed per profiled variant."})


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step after the first ``skip``, but for the last ``profiled`` ones."""

    def __init__(self, skip: int, profiled: int = 0):
        self.skip, self.profiled, self.step_times, self._start = skip, profiled, [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.skip < state.global_step <= state.max_steps - self.profiled:
            self.step_times.append(time.perf_counter() - self._start)


class StepProfiler(TrainerCallback):
    """torch.profiler over the last ``steps`` optimizer steps: self time per op."""

    def __init__(self, steps: int):
        self.steps, self.profile = steps, None
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self._activities = activities

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == state.max_steps - self.steps:  # global_step counts finished steps
            self.profile = torch.profiler.profile(activities=self._activities)
            self.profile.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        if self.profile is not None and state.global_step == state.max_steps:
            self.profile.__exit__(None, None, None)

    def top_ops(self, top: int) -> list[dict]:
        """The ``top`` ops by self time (CPU, or the device's where there is one), with their share of the total."""
        if self.profile is None:
            return []
        cuda = torch.cuda.is_available()
        key = "self_device_time_total" if cuda else "self_cpu_time_total"
        events = [e for e in self.profile.key_averages() if getattr(e, key, 0) > 0]
        total = sum(getattr(e, key) for e in events) or 1.0
        events.sort(key=lambda e: -getattr(e, key))
        return [{"op": e.key, "calls": e.count, "self_ms": round(getattr(e, key) / 1e3, 1),
                 "share": round(getattr(e, key) / total, 3)} for e in events[:top]]


class CountingCollator(PackedCollator):
    """The recipe's collator, recording each batch's padded and real token counts and its item targets."""

    def __init__(self, pad_token_id: int, end_id: int):
        super().__init__(pad_token_id)
        self.end_id, self.padded, self.real, self.targets = end_id, [], [], []

    def __call__(self, rows):
        batch = super().__call__(rows)
        self.padded.append(int(batch["input_ids"].numel()))
        self.real.append(sum(len(r["input_ids"]) for r in rows))
        self.targets.append(int((batch["labels"] == self.end_id).sum()))
        return batch


def run_one(model_args, data_args, task_args, training_args, bench: BenchArguments) -> dict:
    if bench.profile_steps and bench.profile_steps >= training_args.max_steps - bench.warmup_steps_excluded:
        raise SystemExit(f"--profile_steps {bench.profile_steps} leaves no timed steps of --max_steps "
                         f"{training_args.max_steps} after {bench.warmup_steps_excluded} untimed ones")
    timer = StepTimer(bench.warmup_steps_excluded, bench.profile_steps)
    profiler = StepProfiler(bench.profile_steps) if bench.profile_steps > 0 else None
    codebook = load_codebook(data_args.codebook)
    vocab = build_vocab(model_args, codebook, task_args.text_tasks)  # the token ids the run will use
    collator = CountingCollator(vocab.tokenizer.pad_token_id, vocab.end_id)
    training_args.eval_examples = training_args.valid_users = 0  # time training steps, not evaluations or selection
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.time()
    run_finetune(model_args, data_args, task_args, training_args, callbacks=[timer] + ([profiler] if profiler else []),
                 data_collator=collator)
    wall = time.time() - start
    skip, steps, timed = bench.warmup_steps_excluded, len(timer.step_times), sum(timer.step_times)
    accumulation = training_args.gradient_accumulation_steps
    window = slice(skip * accumulation, (skip + steps) * accumulation)  # the timed steps' batches
    padded, real, targets = (sum(c[window]) for c in (collator.padded, collator.real, collator.targets))
    if profiler is not None:
        ops = profiler.top_ops(bench.profile_top)
        print(markdown_table(["op", "calls", "self_ms", "share"], [list(o.values()) for o in ops]), flush=True)
    return {
        "model": model_args.model_name_or_path, "peft": model_args.use_peft and not model_args.from_scratch,
        "from_scratch": model_args.from_scratch, "vocabulary": len(vocab.tokenizer),
        "batch_size": training_args.per_device_train_batch_size,
        "gradient_accumulation_steps": accumulation, "timed_steps": steps,
        "seconds_per_step": round(timed / max(steps, 1), 3),
        "item_targets_per_second": round(targets / timed, 1) if timed else None,
        "tokens_per_second_padded": round(padded / timed, 1) if timed else None,
        "tokens_per_second_real": round(real / timed, 1) if timed else None,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
        "wall_seconds_including_load": round(wall, 1), "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
        **({"profile_top_ops": ops} if profiler is not None else {}),
    }


def parse_value(owner, key: str, value: str):
    """A --compare value in the type of the field it sets (``none`` for an optional field's None)."""
    if value.lower() in ("none", "null"):
        return None
    current = getattr(owner, key)
    if isinstance(current, bool):
        return value.lower() in ("1", "true", "yes")
    if current is not None:
        return type(current)(value)
    declared = typing.get_type_hints(type(owner)).get(key)  # resolved: HfArgumentParser rewrites field.type
    kinds = set(typing.get_args(declared)) if typing.get_args(declared) else {declared}
    return int(value) if int in kinds else float(value) if float in kinds else value


def main(model_args, data_args, task_args, training_args, bench: BenchArguments) -> list[dict]:
    variants = [("as configured", {})]
    if bench.compare:
        variants = [(v.strip(), dict(pair.split("=", 1) for pair in v.split())) for v in bench.compare]
    rows = []
    for label, change in variants:
        args = [copy.deepcopy(a) for a in (model_args, data_args, task_args, training_args)]
        for key, value in change.items():
            owner = next((a for a in args if hasattr(a, key)), None)
            if owner is None:
                raise SystemExit(f"--compare: no argument named {key!r}")
            setattr(owner, key, parse_value(owner, key, value))
        args[3].output_dir = tempfile.mkdtemp(prefix="bench_finetune_")
        rows.append({"variant": label, **run_one(*args, bench)})
        print(rows[-1], flush=True)
    columns = [k for k in rows[0] if k != "profile_top_ops"]
    print(markdown_table(columns, [[row.get(k) for k in columns] for row in rows]))
    peak_note = ("peak_rss_gib is the process's peak so far: list the smallest variant first, so that each later "
                 "row's peak is its own when it needs more")
    if bench.json:
        write_json(bench.json, {"rows": rows, "note": peak_note if len(rows) > 1 else None})
    return rows


if __name__ == "__main__":
    model_args, data_args, task_args, training_args, bench_args = parse_config_and_args(
        [ModelArguments, SidDataArguments, TaskArguments, SidTrainingConfig, BenchArguments])
    main(model_args, data_args, task_args, training_args, bench_args)
