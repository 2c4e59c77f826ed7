"""Every entry point is a command of the package: ``sid4llm <command>`` (the console script), the thin
``recipes/<command>.py`` files for ``accelerate launch``, and Python, all through one parser that reads
``--config`` YAML by path or by the name of a config shipped in the package."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from sid4llm.cli import load_arguments, parse_config_and_args, resolve_config
from sid4llm.commands import COMMANDS, command_module, finetune, main
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
    module_name = command_module(name)
    module = importlib.import_module(module_name)
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0 and f"usage: sid4llm {name}" in capsys.readouterr().out
    recipe = (REPO / "recipes" / f"{module_name.rsplit('.', 1)[1]}.py").read_text()
    assert f"from {module_name} import run" in recipe and callable(module.run)


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


def test_commands_pass_typed_values_to_each_other_over_a_config():
    """One command calling another: a shipped config, typed overrides on top (None: keep the config's value)."""
    model, data, task, training = load_arguments(finetune.ARGUMENTS, "finetune/quickstart", data_dir="d", codebook="c",
                                                 output_dir=Path("out"), max_steps=7, history_token_budget=None)
    assert task.tasks == ["sequential", "requests"] and model.peft_layers == "full"
    assert training.max_steps == 7 and training.output_dir == "out" and task.history_token_budget == 128
    with pytest.raises(ValueError, match="history_tokn_budget"):  # a key no dataclass knows is refused, by name
        load_arguments((TaskArguments,), history_tokn_budget=64)


def test_list_fields_take_several_values_and_choice_fields_list_their_choices(capsys):
    (task,) = parse_config_and_args([TaskArguments], ["--tasks", "sequential", "requests", "--sequential_targets", "last"])
    assert task.tasks == ["sequential", "requests"] and task.sequential_targets == "last"
    with pytest.raises(SystemExit):
        parse_config_and_args([TaskArguments], ["--sequential_targets", "some"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown task"):
        parse_config_and_args([TaskArguments], ["--tasks", "sequential", "reqests"])


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_choice_field_shows_its_choices_in_help(name, capsys):
    import dataclasses
    import typing

    module = importlib.import_module(command_module(name))
    types = module.arguments([]) if hasattr(module, "arguments") else module.ARGUMENTS
    with pytest.raises(SystemExit):
        parse_config_and_args(types, ["--help"])
    shown = capsys.readouterr().out
    for cls in types:
        if cls.__module__.startswith("transformers"):
            continue
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if typing.get_origin(hints[f.name]) is typing.Literal:
                assert "{" + ",".join(typing.get_args(hints[f.name])) + "}" in shown, (name, f.name)


@pytest.mark.slow
def test_the_recipe_file_and_the_module_entry_point_run(tmp_path):
    for cmd in ([sys.executable, str(REPO / "recipes" / "finetune.py"), "--help"],
                [sys.executable, "-m", "sid4llm", "--help"]):
        run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert run.returncode == 0, run.stderr
        assert "--config" in run.stdout


@pytest.mark.parametrize("command, flag, closest", [("finetune", "--lora_rr", "--lora_r"), ("serve", "--prot", "--port"),
                                                    ("prepare-data", "--item_nuon", "--item_noun"),
                                                    ("evaluate", "--bogus", None)])
def test_a_misspelled_flag_on_any_command_is_one_error_line_naming_the_closest(command, flag, closest, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, flag, "1"])
    message = str(exit_.value.code)
    assert message.startswith(f"error: unknown flag(s) {flag}") and "\n" not in message
    assert (f"did you mean {closest}?" in message) if closest else "did you mean" not in message


def test_an_unknown_yaml_key_is_one_error_line_naming_the_file_and_the_closest(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("learnig_rate: 0.1\nmax_steps: 3\n")
    with pytest.raises(SystemExit) as exit_:
        main(["finetune", "--config", str(config), "--data_dir", "d", "--codebook", "c", "--output_dir", "o"])
    assert str(exit_.value.code) == f"error: {config}: unknown key(s) learnig_rate (did you mean learning_rate?)"
    with pytest.raises(ValueError, match=r"unknown setting\(s\) learnig_rate \(did you mean learning_rate\?\)"):
        load_arguments([TaskArguments, IdTrainingArguments], None, learnig_rate=0.1)


def test_a_gpu_setting_on_a_machine_without_one_is_one_clear_line(monkeypatch):
    from sid4llm.training import config as training_config

    monkeypatch.setattr(training_config, "accelerator_available", lambda: False)
    with pytest.raises(SystemExit) as exit_:
        main(["finetune", "--config", "finetune/lora_gpu", "--data_dir", "d", "--codebook", "c",
              "--output_dir", "o"])
    assert str(exit_.value.code) == ("error: --bf16 true needs a GPU (or another accelerator), and this machine has "
                                     "none: pass --bf16 false to train in fp32 on the CPU")


def test_a_setting_that_moved_names_its_new_place(tmp_path):
    config = tmp_path / "old.yaml"
    config.write_text("request_item_nouns: [book]\n")
    with pytest.raises(SystemExit) as exit_:
        main(["finetune", "--config", str(config), "--data_dir", "d", "--codebook", "c", "--output_dir", "o"])
    assert "request_item_nouns (it moved to the catalogue profile: sid4llm prepare-data --item_noun" in str(exit_.value.code)
