"""The one argument parser of every command (HfArgumentParser dataclasses, ``--config file.yaml`` supplying
values and explicit flags overriding them, as in TRL's scripts), and how a command reports bad input."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser


def resolve_config(value: str | Path) -> Path:
    """A config file by path, else one shipped inside the package (``finetune/quickstart``,
    ``ids/varlen_dvae.yaml`` or ``sid4llm/configs/ids/varlen_dvae.yaml``), so that the commands' defaults work
    from any directory and from an installed wheel, not only from a checkout."""
    path = Path(value)
    if path.is_file():
        return path
    from importlib.resources import files

    shipped = files("sid4llm") / "configs"
    name = str(value).replace("\\", "/").split("sid4llm/configs/", 1)[-1]
    for candidate in (name, name + ".yaml"):
        found = shipped.joinpath(*candidate.split("/"))
        if found.is_file():
            return Path(str(found))
    names = sorted(f"{d.name}/{f.name}" for d in shipped.iterdir() if d.is_dir() for f in d.iterdir()
                   if f.name.endswith(".yaml"))
    raise FileNotFoundError(f"config file not found: {value} (neither a file nor a shipped config: {', '.join(names)})")


def read_config(config: str | Path | None) -> dict[str, Any]:
    """The mapping a YAML config holds (a file, or a shipped config's name); ``{}`` for no config."""
    if config is None:
        return {}
    path = resolve_config(config)
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of argument names to values")
    return values


def load_arguments(types: Sequence[type], config: str | Path | None = None, **overrides: Any) -> tuple[Any, ...]:
    """One instance per dataclass in ``types``, from a YAML ``config`` with ``overrides`` on top, the way one
    command calls another (typed values in, typed values out; no argv strings between them). A key that no
    dataclass knows is an error naming it; an override of ``None`` means "not given" (the config's value or
    the default stays); paths are taken as strings."""
    from dataclasses import fields

    from .artifacts import SettingsError

    values = read_config(config)
    values.update({k: str(v) if isinstance(v, Path) else v for k, v in overrides.items() if v is not None})
    known = {f.name for kind in types for f in fields(kind) if f.init}
    unknown = sorted(set(values) - known)
    if unknown:
        where = f" (config {config})" if config is not None else ""
        raise SettingsError(f"unknown setting(s) {', '.join(_with_closest(k, known, '') for k in unknown)}{where}")
    parser = HfArgumentParser(list(types))
    try:
        return tuple(parser.parse_dict(values, allow_extra_keys=False))
    except ValueError as err:
        where = f" (config {config})" if config is not None else ""
        raise ValueError(f"{err}{where}") from None


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
        try:
            path = resolve_config(config_path)
        except FileNotFoundError as err:
            parser.error(f"--config: {err}")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            parser.error(f"{path}: expected a mapping of argument names to values")
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            sys.exit(f"error: {path}: unknown key(s) {', '.join(_with_closest(k, known, '') for k in unknown)}")
        parser.set_defaults(**values)
        # Arguments that are required on the command line are satisfied by the config file.
        for action in parser._actions:
            if action.dest in values:
                action.required = False
    flags = {s for action in parser._actions for s in action.option_strings}
    unknown = [a.split("=", 1)[0] for a in args if a.startswith("--") and a.split("=", 1)[0] not in flags]
    if unknown:  # before anything else: a misspelled flag also reads as a missing required one
        sys.exit(f"error: unknown flag(s) {', '.join(_with_closest(u, flags, '--') for u in unknown)} "
                 "(--help lists them)")
    *outputs, remaining = parser.parse_args_into_dataclasses(args=args, return_remaining_strings=True)
    if remaining:
        sys.exit(f"error: unexpected argument(s) {' '.join(remaining)} (--help lists the flags)")
    return tuple(outputs[: len(dataclass_types)])  # the rest is the namespace holding --config


# Settings that moved out of the command-line arguments, and where they live now.
MOVED_SETTINGS = {
    "request_item_nouns": "the catalogue profile: sid4llm prepare-data --item_noun NOUN (or --profile FILE, "
                          "'request_nouns'), stored with the prepared data",
}


def _with_closest(name: str, known: set[str], prefix: str) -> str:
    """``'--bogus'`` or ``'--lora_rr (did you mean --lora_r?)'``: a name the parser does not know, with the known
    name closest to it (or, for a setting that moved, where it lives now)."""
    import difflib

    moved = MOVED_SETTINGS.get(name.removeprefix("--"))
    if moved:
        return f"{name} (it moved to {moved})"
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f"{name} (did you mean {prefix}{close[0].removeprefix(prefix) if prefix else close[0]}?)" if close else name


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
        try:
            found = resolve_config(path) if path else None
        except FileNotFoundError:
            found = None  # the parser reports it
        if found:
            values = yaml.safe_load(found.read_text()) or {}
            if isinstance(values, dict) and name in values:
                return str(values[name])
    return default


def user_error_types() -> tuple[type[BaseException], ...]:
    """The errors that mean bad input (a file, a flag, a saved artefact), not a bug in sid4llm."""
    from .artifacts import ArtifactError, SettingsError
    from .data import DataFormatError
    from .data.item_embeddings import EmbeddingError
    from .ids import IdInputError

    return (ArtifactError, SettingsError, DataFormatError, EmbeddingError, IdInputError, FileExistsError, FileNotFoundError)


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


def run_command(main: Any, dataclass_types: list[type] | tuple[type, ...], argv: list[str] | None = None,
                log_level: int = 20) -> Any:
    """What every command's ``run`` does: logging, the allocator setting of :mod:`sid4llm.allocator`, the shared
    parser, then ``main(*parsed)`` with user errors printed as one line (see :func:`user_errors`)."""
    import logging

    from .allocator import keep_freed_memory

    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    keep_freed_memory()
    with user_errors(sys.argv if argv is None else argv):
        return main(*parse_config_and_args(dataclass_types, argv))
