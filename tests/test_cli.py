"""Every entry point is a command of the package: ``sid4llm <command>`` (the console script), the thin
``recipes/<command>.py`` files for ``accelerate launch``, and Python, all through one parser that reads
``--config`` YAML by path or by the name of a config shipped in the package."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from sid4llm.cli import as_flags, parse_config_and_args, resolve_config
from sid4llm.commands import COMMANDS, main
from sid4llm.ids import DVAEConfig, IdTrainingArguments
from sid4llm.lm.tasks import TaskArguments

REPO = Path(__file__).resolve().parents[1]


def test_help_lists_every_command(capsys):
    main(["--help"])
    listed = capsys.readouterr().out
    for name, (_, summary) in COMMANDS.items():
        assert f"  {name} " in listed and summary in listed


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_parses_its_flags_and_has_a_recipe_file(name, capsys):
    module = importlib.import_module(f"sid4llm.commands.{COMMANDS[name][0]}")
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0 and f"usage: sid4llm {name}" in capsys.readouterr().out
    recipe = (REPO / "recipes" / f"{COMMANDS[name][0]}.py").read_text()
    assert f"from sid4llm.commands.{COMMANDS[name][0]} import run" in recipe and callable(module.run)


def test_an_unknown_command_is_an_error_naming_the_commands():
    with pytest.raises(SystemExit) as exit_:
        main(["trian-ids"])
    assert "unknown command 'trian-ids'" in str(exit_.value.code) and "train-ids" in str(exit_.value.code)


def test_shipped_configs_are_found_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no checkout here
    shipped = resolve_config("ids/varlen_dvae")
    assert shipped.is_file() and shipped == resolve_config("ids/varlen_dvae.yaml")
    assert shipped == resolve_config("sid4llm/configs/ids/varlen_dvae.yaml")
    _, config = parse_config_and_args([IdTrainingArguments, DVAEConfig], ["--config", "ids/varlen_dvae", "--seed", "3"])
    assert config.variable_length and config.length_cost == 4.0 and config.seed == 3  # the file's values, then flags
    with pytest.raises(FileNotFoundError, match="ids/varlen_dvae.yaml"):  # the error lists what is shipped
        resolve_config("ids/varlen")


def test_a_local_file_wins_over_a_shipped_config_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ids").mkdir()
    (tmp_path / "ids" / "varlen_dvae.yaml").write_text("length_cost: 2.5\n")
    _, config = parse_config_and_args([IdTrainingArguments, DVAEConfig], ["--config", "ids/varlen_dvae.yaml"])
    assert config.length_cost == 2.5


def test_values_passed_between_commands_go_through_the_typed_parser():
    (task,) = parse_config_and_args([TaskArguments], as_flags(history_token_budget=64, max_history_items=None,
                                                              context_fraction=0.25))
    assert task.history_token_budget == 64 and task.context_fraction == 0.25 and task.max_history_items is None
    with pytest.raises(SystemExit):  # a wrong type is an argparse error, not a silent string
        parse_config_and_args([TaskArguments], as_flags(history_token_budget="many"))


@pytest.mark.slow
def test_the_recipe_file_and_the_module_entry_point_run(tmp_path):
    for cmd in ([sys.executable, str(REPO / "recipes" / "finetune.py"), "--help"],
                [sys.executable, "-m", "sid4llm", "--help"]):
        run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert run.returncode == 0, run.stderr
        assert "--config" in run.stdout
