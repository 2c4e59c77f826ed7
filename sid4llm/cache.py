"""One cache folder for everything sid4llm derives once and reuses (text embeddings, converted models)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$SID4LLM_CACHE`` if set, else ``$XDG_CACHE_HOME/sid4llm`` (default ``~/.cache/sid4llm``)."""
    if os.environ.get("SID4LLM_CACHE"):
        root = Path(os.environ["SID4LLM_CACHE"])
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sid4llm"
    return root.expanduser()
