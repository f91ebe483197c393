"""`zoo --help` and `zoo COMMAND --help`: every public command explained, with examples that run.

The tests walk the parser for its commands and options, so a command or option added later is
held to the same rules without touching them.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys

import pytest

from zoo import cli

# argparse keeps 2 columns of an 80-column terminal free; a summary beside the command names
# of `zoo --help` starts at column 24 at most, which leaves it 54.
LINE_WIDTH = 78
SUMMARY_WIDTH = LINE_WIDTH - 24


def _subparsers() -> argparse._SubParsersAction:
    (subparsers,) = [action for action in cli._parser()._actions
                     if isinstance(action, argparse._SubParsersAction)]
    return subparsers


def _commands() -> dict[str, argparse.ArgumentParser]:
    return dict(_subparsers().choices)


def _summaries() -> dict[str, str]:
    """The help of each command listed by `zoo --help` (argparse lists those with a help)."""
    return {action.dest: action.help for action in _subparsers()._choices_actions}


PUBLIC = [name for name in _commands() if name not in cli.INTERNAL_COMMANDS]


def _help_text(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def _examples(parser: argparse.ArgumentParser) -> list[str]:
    """The command lines under "examples:" in a command's epilog."""
    head, _, body = (parser.epilog or "").partition("examples:\n")
    assert not head.strip(), f"{parser.prog}: the epilog should start with 'examples:'"
    return [line.strip() for line in body.splitlines() if line.strip()]


def test_internal_commands_exist_so_that_hiding_them_is_tested():
    assert set(cli.INTERNAL_COMMANDS) <= set(_commands())
    assert {"train", "ablate", "predict", "ui"} <= set(PUBLIC)


def test_zoo_help_lists_every_public_command_and_no_internal_one(capsys):
    out = _help_text(capsys, [])
    listed = re.findall(r"^    (\S+)", out, re.MULTILINE)
    assert listed == PUBLIC
    for name in cli.INTERNAL_COMMANDS:
        assert name not in out


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_command_has_a_one_line_summary(name):
    summary = _summaries().get(name) or ""
    assert summary.strip(), f"zoo {name}: no help in the listing of zoo --help"
    assert len(summary) <= SUMMARY_WIDTH and "\n" not in summary, summary


@pytest.mark.parametrize("name", PUBLIC)
def test_command_help_shows_a_description_and_examples(capsys, name):
    parser = _commands()[name]
    assert (parser.description or "").strip(), f"zoo {name}: no description"
    examples = _examples(parser)
    assert examples, f"zoo {name}: no examples"
    out = _help_text(capsys, [name])
    assert " ".join(parser.description.split()) in " ".join(out.split())
    assert "\nexamples:\n" in out
    for example in examples:
        assert f"\n  {example}\n" in out, f"{example!r} is not a line of its own"
        assert len(f"  {example}") <= LINE_WIDTH, f"{example!r} is wider than {LINE_WIDTH}"


@pytest.mark.parametrize("name", PUBLIC)
def test_every_argument_has_help_that_states_its_default(name):
    for action in _commands()[name]._actions:
        label = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"zoo {name} {label}: no help"
        if action.default not in (None, False, argparse.SUPPRESS):
            assert "(default: " in action.help, f"zoo {name} {label}: default not stated"


def test_top_level_options_have_help():
    for action in cli._parser()._actions:
        if not isinstance(action, argparse._SubParsersAction):
            assert action.help and action.help.strip(), action.option_strings


@pytest.mark.parametrize("name", PUBLIC)
def test_every_example_parses_and_names_recipes_and_models_that_exist(name):
    commands = []
    for example in _examples(_commands()[name]):
        words = shlex.split(example, comments=True)
        while re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # an environment variable set first
            words = words[1:]
        assert words[0] == "zoo", example
        try:
            args = cli.parse_args(words[1:])
        except SystemExit:
            pytest.fail(f"{example!r} does not parse")
        _check_names(args)
        commands.append(args.command)
    # Another command may show how to go on (zoo train against the server zoo server started).
    assert commands and commands[0] == name


def _check_names(args: argparse.Namespace) -> None:
    """Load what an example names, so that a renamed recipe, key or model fails here."""
    from zoo import paths
    from zoo.pretrained import manifest_entry

    if hasattr(args, "recipe"):
        from zoo.recipe import load_recipe
        from zoo.workflows.ablate import OVERLAY, overlay_overrides, parse_axis

        path = args.recipe
        if path.endswith(".yaml"):  # relative to the project, where the examples run
            path = paths.project_root() / path
        recipe = load_recipe(path, args.overrides)
        for key, values in map(parse_axis, getattr(args, "axis", None) or ()):
            for value in values:
                if key == OVERLAY:
                    overlay_overrides(value)
                else:
                    recipe.with_overrides({key: value})
    for name in [*([args.name] if hasattr(args, "name") else []), *getattr(args, "names", [])]:
        manifest_entry(name)


def test_ui_serves_the_zoo_store_on_this_machine(monkeypatch, capsys, mlflow_store):
    executed = []
    monkeypatch.setattr(os, "execv", lambda path, command: executed.append(command))
    assert cli.main(["ui"]) == 0
    (command,) = executed
    assert command[:4] == [sys.executable, "-m", "mlflow", "server"]
    options = dict(zip(command[4::2], command[5::2], strict=True))
    assert options["--backend-store-uri"] == mlflow_store
    assert options["--host"] == "127.0.0.1" and options["--port"] == "5000"
    store_folder = mlflow_store.removeprefix("sqlite:///").rsplit("/", 1)[0]
    assert options["--default-artifact-root"].endswith(f"{store_folder}/artifacts")
    assert "--workers" not in options  # MLflow's own number of web workers for one browser
    assert f"MLflow UI over {mlflow_store}" in capsys.readouterr().out
