"""Below the CLI no command-line words: lower layers raise typed errors carrying the facts (which file, which
field, what is wrong) and cli/ (and the page, ui/) word them with the option names and what to do next."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import e4ecli

PACKAGE = Path(e4ecli.__file__).parent
WORDING_LAYERS = {"cli", "ui"}  # the layers that speak to a user
FLAG = re.compile(r"(?<![\w-])--[a-z]")
# Modules whose text still names options, each with why (the test fails when one is clean: the list only shrinks).
ALLOWED = {
    "e4ecli.hub.ada": "--cond is StyleGAN2-ADA's own training option (why its conditional pickles are refused), not e4e's",
    "e4ecli.training.options": "the table of `e4e train`'s options: it spells each flag, its help and the OptionsError of a bad "
                               "value for the command line and config files (tests/test_train_options.py checks that wording)",
    "e4ecli.training.checkpoint": "OptimizerLayoutError names --optim-name / --train-decoder; tests/test_train_optimizer_layout.py "
                                  "checks that wording on the library's TrainError (word it in cli/ when that test may change)",
}
# Packages other helpers are clearing this round (added to the scan when they land).
PENDING: tuple[str, ...] = ()


def docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                ids.add(id(first.value))
    return ids


def flag_words() -> dict[str, list[str]]:
    """module -> 'line N: text' of each string literal (docstrings aside) that names a command-line option."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in WORDING_LAYERS or rel.name == "__main__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip and FLAG.search(node.value):
                module = ".".join(("e4ecli", *rel.with_suffix("").parts)).removesuffix(".__init__")
                found.setdefault(module, []).append(f"line {node.lineno}: {node.value.strip()[:100]!r}")
    return found


def test_the_scan_finds_an_option_name():
    tree = ast.parse('x = f"{a}: use --force to redo"\n"""a --docstring"""\n')
    assert FLAG.search(tree.body[0].value.values[1].value) and not FLAG.search("a-- b") and not FLAG.search("x--y")


def test_no_option_names_below_the_cli():
    found = flag_words()
    new = {m: lines for m, lines in found.items() if m not in ALLOWED and not m.startswith(PENDING)}
    assert not new, "command-line words below the CLI (raise a typed error, word it in cli/):\n" + "\n".join(
        f"{m}: {line}" for m, lines in new.items() for line in lines)
    clean = set(ALLOWED) - set(found)
    assert not clean, f"clean now, remove from ALLOWED: {sorted(clean)}"


def test_missing_clip_weights_are_worded_by_the_interface(tmp_path, monkeypatch):
    """The zoo's CLIP weights absent (not fetched): the error below the CLI names the setting, the CLI its flag."""
    from e4ecli.cli.common import worded
    from e4ecli.hub.directions import DirectionError
    from e4ecli.pipelines import directions
    from e4ecli.pipelines.directions import clip_cached

    monkeypatch.setenv("E4E_HOME", str(tmp_path))
    monkeypatch.setattr(directions, "_CLIP_MEMO", {})  # nothing loaded earlier in this process
    try:
        clip_cached(None, "cpu", download=False)
    except DirectionError as e:
        assert "`clip_weights` FILE" in str(e) and not FLAG.search(str(e)), str(e)
        assert "(or give --clip-weights FILE)" in worded(e) and worded(e).startswith("CLIP weights: "), worded(e)
    else:
        raise AssertionError("no error without CLIP weights")
