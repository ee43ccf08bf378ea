"""The help of every command: conventional metavars (INPUTS..., PATH, INTEGER, TEXT), no Python types, no
rich markup or emoji (A:B:N stays A:B:N), ranges in words, the examples on their own lines. Walks the real
command tree, so a new command or option is checked too -- and a Typer upgrade that changes how help is
made fails here rather than in front of a user."""
from __future__ import annotations

import re

import pytest
import typer

from conftest import run
from e4ecli.cli import app

LEAKS = re.compile(r"--[\w-]+ <[^>]+>|<(bool|str|int|float|int range|float range)>|list\[|\{[a-z_]+\}|\bx[<>]=?\s?-?\d|\d<=?x\b|\\\[|\[/\]|\[bold|\[dim")
EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F]")


def command_paths() -> list[list[str]]:
    root = typer.main.get_command(app)
    paths = []

    def walk(cmd, path):
        paths.append(path)
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            walk(sub, [*path, name])

    walk(root, [])
    return paths


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "e4e")
def test_help_is_plain_and_conventional(path):
    res = run(*path, "--help")
    assert res.exit_code == 0, res.output
    text = res.output
    assert not LEAKS.findall(text), (LEAKS.findall(text), text)
    assert not EMOJI.findall(text), text
    assert "\x1b" not in text
    usage = text.splitlines()[0]
    assert usage.startswith(f"Usage: e4e {' '.join(path)}".rstrip()), usage
    if path and path[0] not in ("weights", "directions") or len(path) > 1:  # a command (not a group) shows examples
        examples = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("e4e ")]
        assert examples, f"{' '.join(path)} --help has no examples"
        assert all(len(ln) < 200 for ln in examples)


def test_usage_and_metavars_are_click_conventions():
    text = run("video", "--help").output
    assert text.splitlines()[0] == "Usage: e4e video [OPTIONS] INPUTS..."
    assert re.search(r"^  INPUTS\.\.\.\s+Latent", text, re.M)
    for option, metavar in (("-o, --out", "PATH"), ("-n, --frames", "INTEGER"), ("--fps", "FLOAT"), ("--easing", "TEXT")):
        assert re.search(rf"^  {re.escape(option)} {metavar}\b", text, re.M), (option, text)
    assert "--loop  " in text and "--loop BOOL" not in text  # a flag takes no value
    flat = " ".join(text.split())  # click wraps at 80 columns
    assert "[default: 60; 1 to 10000]" in flat and "[default: 4; at least 1]" in flat
    edit = run("edit", "--help").output
    assert "A:B:N" in edit and "ganspace:COMP:START:END" in edit
    assert "[w+|w|pti]" in run("invert", "--help").output  # a choice shows its values


def test_examples_are_not_rewrapped():
    text = run("edit", "--help").output
    line = next(ln for ln in text.splitlines() if "sweep/ --direction smile" in ln)
    assert line.strip().endswith("# frames + labelled strip"), line
