"""Every subcommand given bad input ends with one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from magpie.cli import build_parser, main

REFUSED = "postgresql://nobody@127.0.0.1:9/none?connect_timeout=2"


def _leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers or not subparsers[0].required:
        yield path, parser
    for action in subparsers:
        for name, child in action.choices.items():
            yield from _leaves(child, (*path, name))


def _bad_argv(path: tuple[str, ...], parser: argparse.ArgumentParser) -> list[str]:
    """The command with every required argument present but wrong: missing files, unknown names."""
    argv = list(path)
    for action in parser._actions:
        if action.option_strings and not action.required:
            continue
        if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
            continue
        value = "/nonexistent/file.yaml" if action.dest in ("file", "source", "to") else "no such thing!"
        if action.type is int:
            value = "424242"
        if action.choices:
            value = next(iter(action.choices))
        argv += [action.option_strings[0], value] if action.option_strings else [value]
    if any(a.dest == "env" for a in parser._actions):
        argv += ["--env", "no-such-env"]
    if path == ("serve",):
        argv += ["--host", "203.0.113.255"]  # not an address of this machine: the bind fails
    if path == ("backup",):
        argv[argv.index("--to") + 1] = "/proc/no-such-dir/backup"
    return argv


COMMANDS = sorted(_leaves(build_parser()), key=lambda leaf: leaf[0])
# The commands that take some input to get wrong (the rest are covered by the refused database).
WITH_INPUT = [(path, parser) for path, parser in COMMANDS if _bad_argv(path, parser) != list(path)]


def test_every_subcommand_is_exercised() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    for expected in ("serve", "campaign apply", "cohort set", "settings", "provider check", "backup", "restore"):
        assert expected in names


@pytest.mark.parametrize(("path", "parser"), [pytest.param(p, s, id=" ".join(p)) for p, s in WITH_INPUT])
def test_subcommand_with_bad_input_fails_in_one_line(
    path: tuple[str, ...], parser: argparse.ArgumentParser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    assert main(["env", "create", "development", "--data-dir", str(data)]) == 0
    capsys.readouterr()
    argv = [*_bad_argv(path, parser), "--data-dir", str(data)]
    status = main(argv)
    err = capsys.readouterr().err
    assert status != 0, argv
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("magpie: "), err
    assert len([line for line in lines if not line.startswith("magpie: warning:")]) == 1, err


@pytest.mark.parametrize(("path", "parser"), [pytest.param(p, s, id=" ".join(p)) for p, s in COMMANDS])
def test_subcommand_with_a_refused_database_fails_in_one_line(
    path: tuple[str, ...], parser: argparse.ArgumentParser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*_bad_argv(path, parser), "--database-url", REFUSED, "--data-dir", str(tmp_path / "data")]
    status = main(argv)
    err = capsys.readouterr().err
    assert status != 0, argv
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("magpie: "), err
    assert "nobody" not in err or "password" not in err


@pytest.mark.parametrize(
    ("argv", "content", "expected"),
    [
        pytest.param(["campaign", "apply", "-f"], b"key: [unclosed\n", "cannot parse", id="campaign-bad-yaml"),
        pytest.param(["settings", "-f"], b"senderName: {\n", "cannot parse", id="settings-bad-yaml"),
        pytest.param(["settings", "set", "-f"], b"- a\n- b\n", "settings must be an object", id="settings-not-object"),
        pytest.param(["campaign", "apply", "-f"], b"key: 1\nname: x\n", "INVALID_CAMPAIGN", id="campaign-incomplete"),
        pytest.param(["cohort", "set", "vip", "-f"], b"\xff\xfe\x00u1\n", "not UTF-8 text", id="cohort-binary"),
    ],
)
def test_bad_files_are_one_line_errors(
    argv: list[str], content: bytes, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    assert main(["env", "create", "development", "--data-dir", str(data)]) == 0
    capsys.readouterr()
    path = tmp_path / "input.yaml"
    path.write_bytes(content)
    status = main([*argv, str(path), "--data-dir", str(data)])
    err = capsys.readouterr().err
    assert status != 0 and "Traceback" not in err
    # One line; a campaign file's problems come first, one line each at FILE:LINE:COLUMN.
    *problems, last = err.strip().splitlines()
    assert last.startswith("magpie: ") and expected in err, err
    assert all(line.startswith(f"{path}:") for line in problems), err
