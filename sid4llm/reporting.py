"""What a measured run writes beside its numbers: the machine it ran on, and JSON written so that a killed run
never leaves half a file. Used by the commands that report (quickstart, paper reproduction) and the benchmarks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def machine_description() -> str:
    """What a reported time ran on: architecture, CPU threads torch uses, the GPU if any."""
    import platform

    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {torch.get_num_threads()} CPU threads, {gpu}"


def write_json(path: str | Path, value: Any) -> None:
    """JSON written atomically (numpy scalars as numbers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
    tmp.replace(path)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table: one header row, then one line per row (values as ``str`` gives them)."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)
