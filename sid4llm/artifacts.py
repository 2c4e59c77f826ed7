"""Reading the files of saved artefacts (codebook, recommender): every failure names the file and says what is
wrong with it, and optional files (metrics) never block loading. Imports nothing else of sid4llm."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class ArtifactError(ValueError):
    """A saved artefact's file is missing, truncated or malformed; the message names the file."""


class SettingsError(ValueError):
    """A setting that cannot work as given (on this machine, or with another setting); the message says which
    flag to change."""


def read_json(path: str | Path, required_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object from ``path``, or an :class:`ArtifactError` naming the file (and the keys it lacks)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file missing")
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path}: not valid JSON ({err}); the file is corrupted or was edited by hand") from None
    if not isinstance(value, dict):
        raise ArtifactError(f"{path}: expected a JSON object, got {type(value).__name__}")
    missing = [k for k in required_keys if k not in value]
    if missing:
        raise ArtifactError(f"{path}: missing key(s) {missing}; not a file written by sid4llm, or an edited one")
    return value


def read_optional_json(path: str | Path) -> dict[str, Any]:
    """Like :func:`read_json` for a file that only reports (metrics): absent or broken gives ``{}`` and a warning."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        return read_json(path)
    except ArtifactError as err:
        logger.warning("%s; loading without it", err)
        return {}


def read_safetensors(path: str | Path) -> dict:
    """The tensors of a safetensors file, or an :class:`ArtifactError` naming it (missing, truncated, not safetensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ArtifactError(f"{path}: cannot be read as safetensors ({err}); the file is truncated or corrupted") from None
