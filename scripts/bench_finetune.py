"""Fine-tuning throughput: tokens/s and peak memory of the finetune recipe for a few steps.

    python scripts/bench_finetune.py --config recipes/configs/finetune/smollm2_lora.yaml \
        --data_dir data/ml-1m --codebook outputs/ids/varlen --max_steps 20 --json outputs/bench_finetune.json

Takes every flag of recipes/finetune.py. Counts the tokens the model actually processed (padding included,
and separately without it), so the numbers compare across batch sizes and devices.
"""

from __future__ import annotations

import platform
import resource
import tempfile
import time
from dataclasses import dataclass, field

import torch
from transformers import DataCollatorForSeq2Seq, TrainerCallback, TrainingArguments

from sid4llm.cli import parse_config_and_args
from sid4llm.finetuning import ModelArguments, SidDataArguments, run_finetune
from sid4llm.models import load_tokenizer
from sid4llm.tasks import IGNORE_INDEX, TaskArguments
from sid4llm.workflow import write_json


@dataclass
class BenchArguments:
    json: str | None = field(default=None, metadata={"help": "Write the results here as JSON."})
    warmup_steps_excluded: int = field(default=2, metadata={"help": "Steps not timed (allocation, first-call overhead)."})


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step after the first ``skip``."""

    def __init__(self, skip: int):
        self.skip, self.step_times, self._start = skip, [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step > self.skip:
            self.step_times.append(time.perf_counter() - self._start)


class CountingCollator(DataCollatorForSeq2Seq):
    """The recipe's collator, recording each batch's padded and real token counts."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.padded, self.real = [], []

    def __call__(self, features, return_tensors=None):
        batch = super().__call__(features, return_tensors)
        self.padded.append(int(batch["input_ids"].numel()))
        self.real.append(int(batch["attention_mask"].sum()))
        return batch


def main(model_args, data_args, task_args, training_args, bench: BenchArguments) -> None:
    timer = StepTimer(bench.warmup_steps_excluded)
    tokenizer = load_tokenizer(model_args.model_name_or_path)
    collator = CountingCollator(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
    data_args.eval_examples = 0
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.time()
    run_finetune(model_args, data_args, task_args, training_args, callbacks=[timer], data_collator=collator)
    wall = time.time() - start
    skip, steps, timed = bench.warmup_steps_excluded, len(timer.step_times), sum(timer.step_times)
    accumulation = training_args.gradient_accumulation_steps
    window = slice(skip * accumulation, (skip + steps) * accumulation)
    padded, real = sum(collator.padded[window]), sum(collator.real[window])
    result = {
        "model": model_args.model_name_or_path, "peft": model_args.use_peft and not model_args.from_scratch,
        "from_scratch": model_args.from_scratch, "batch_size": training_args.per_device_train_batch_size,
        "gradient_accumulation_steps": accumulation, "timed_steps": steps,
        "seconds_per_step": round(timed / max(steps, 1), 3),
        "tokens_per_second_padded": round(padded / timed, 1) if timed else None,
        "tokens_per_second_real": round(real / timed, 1) if timed else None,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
        "wall_seconds_including_load": round(wall, 1), "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
    }
    print("| " + " | ".join(result) + " |")
    print("|" + "---|" * len(result))
    print("| " + " | ".join(str(v) for v in result.values()) + " |")
    if bench.json:
        write_json(bench.json, result)


if __name__ == "__main__":
    model_args, data_args, task_args, training_args, bench_args = parse_config_and_args(
        [ModelArguments, SidDataArguments, TaskArguments, TrainingArguments, BenchArguments])
    if training_args.output_dir in (None, "", "trainer_output"):
        training_args.output_dir = tempfile.mkdtemp(prefix="bench_finetune_")
    main(model_args, data_args, task_args, training_args, bench_args)
