"""Argument parsing shared by every recipe and script: HfArgumentParser dataclasses, with ``--config
file.yaml`` supplying values and explicit command-line flags overriding them (as in TRL's scripts)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser


def parse_config_and_args(dataclass_types: list[type] | tuple[type, ...], args: list[str] | None = None) -> tuple[Any, ...]:
    """Parse ``args`` (default ``sys.argv[1:]``) into one instance per dataclass.

    ``--config PATH`` loads a YAML mapping of field names to values; a key that no dataclass knows is an
    error naming the key and the file, so a typo never silently falls back to a default.
    """
    args = list(sys.argv[1:] if args is None else args)
    parser = HfArgumentParser(dataclass_types)
    parser.add_argument("--config", type=str, default=None, help="YAML file of arguments; flags given on the command line win.")
    config_path = None
    if "--config" in args:
        i = args.index("--config")
        if i + 1 >= len(args):
            parser.error("--config needs a path")
        config_path = args[i + 1]
        del args[i : i + 2]
    else:
        for i, a in enumerate(args):
            if a.startswith("--config="):
                config_path = a.split("=", 1)[1]
                del args[i]
                break
    if config_path is not None:
        path = Path(config_path)
        if not path.is_file():
            parser.error(f"--config: file not found: {path}")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            parser.error(f"{path}: expected a mapping of argument names to values")
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            parser.error(f"{path}: unknown argument(s) {unknown}")
        parser.set_defaults(**values)
        # Arguments that are required on the command line are satisfied by the config file.
        for action in parser._actions:
            if action.dest in values:
                action.required = False
    outputs = parser.parse_args_into_dataclasses(args=args)
    return tuple(outputs[: len(dataclass_types)])  # the rest is the namespace holding --config


def peek_option(name: str, default: str | None = None, args: list[str] | None = None) -> str | None:
    """The value of ``--name`` from the command line, else from the ``--config`` YAML, else ``default``.

    Used to pick which dataclass to parse with (e.g. the ID method's config) before parsing everything."""
    args = list(sys.argv[1:] if args is None else args)
    for i, a in enumerate(args):
        if a == f"--{name}" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    for i, a in enumerate(args):
        path = args[i + 1] if a == "--config" and i + 1 < len(args) else (a.split("=", 1)[1] if a.startswith("--config=") else None)
        if path and Path(path).is_file():
            values = yaml.safe_load(Path(path).read_text()) or {}
            if isinstance(values, dict) and name in values:
                return str(values[name])
    return default


def user_error_types() -> tuple[type[BaseException], ...]:
    """The errors that mean bad input (a file, a flag, a saved artefact), not a bug in sid4llm."""
    from .artifacts import ArtifactError
    from .data import DataFormatError
    from .embeddings import EmbeddingError
    from .ids import IdInputError

    return (ArtifactError, DataFormatError, EmbeddingError, IdInputError, FileExistsError, FileNotFoundError)


@contextmanager
def user_errors(argv: list[str] | None = None) -> Iterator[None]:
    """Run a command so that an expected user error prints one line (``error: <what, where, what to do>``) and
    exits with status 1, with no traceback; ``--debug`` (taken out of ``sys.argv`` before parsing) shows it.

        if __name__ == "__main__":
            with user_errors():
                main(*parse_config_and_args([...]))
    """
    argv = sys.argv if argv is None else argv
    debug = "--debug" in argv
    while "--debug" in argv:
        argv.remove("--debug")
    try:
        yield
    except user_error_types() as err:
        if debug:
            raise
        sys.exit(f"error: {err}")
