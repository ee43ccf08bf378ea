"""The Typer application every command module registers itself on (imported by them, never the reverse)."""
from __future__ import annotations

import enum
import inspect
import re
from pathlib import Path
from typing import Any, Callable, List, Union, get_args, get_origin

import typer
import typer.core
import typer.models


# -- plain, conventional help -----------------------------------------------------------------------
# Help is click's plain text (rich_markup_mode=None: no markup, no `:name:` emoji, so A:B:N and ganspace:-1:0:1
# print as written) with click's conventional metavars (INPUTS..., PATH, INTEGER, TEXT) instead of Python types.
# Only public API: Typer's `cls=` and parameter `metavar=`, click's Command formatting methods.
_METAVARS = {int: "INTEGER", float: "FLOAT", str: "TEXT", Path: "PATH"}
_RANGE = re.compile(r"(?:(?P<lo>-?[\d.e+-]+)(?P<lo_op><=?))?x(?:(?P<hi_op>[<>]=?)(?P<hi>-?[\d.e+-]+))?")


def _metavar(annotation: Any, name: str, argument: bool) -> str | None:
    """The metavar click would show for this annotation (None: a flag, which shows none)."""
    if argument:
        return name.upper()
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, list, List) or type(annotation).__name__ == "UnionType":
        return _metavar(args[0], name, argument) if len(args) == 1 else None
    if annotation is bool:
        return None
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "[" + "|".join(str(m.value) for m in annotation) + "]"
    return _METAVARS.get(annotation, "TEXT")


def with_metavars(func: Callable) -> Callable:
    """Give every typer.Option/Argument default of `func` without a metavar the conventional one."""
    for param in inspect.signature(func, eval_str=True).parameters.values():
        info = param.default
        if isinstance(info, (typer.models.OptionInfo, typer.models.ArgumentInfo)) and info.metavar is None:
            info.metavar = _metavar(param.annotation, param.name, isinstance(info, typer.models.ArgumentInfo))
    return func


def _range_words(extra: str) -> str:
    """click's range notation in an option's [default: ...; 1<=x<=16] as words: 1 to 16, at least 1, ..."""
    def words(m: re.Match) -> str:
        lo, hi = m["lo"], m["hi"]
        if lo and hi:
            return f"{lo} to {hi}"
        if lo:  # 'lo<=x' / 'lo<x' never appear alone in click's notation, kept for completeness
            return f"at least {lo}" if m["lo_op"] == "<=" else f"more than {lo}"
        if hi:
            return {">=": f"at least {hi}", ">": f"more than {hi}", "<=": f"at most {hi}", "<": f"less than {hi}"}[m["hi_op"]]
        return m[0]

    return "; ".join(_RANGE.sub(words, part) if "x" in part and not part.startswith("default") else part for part in extra.split("; "))


def _plain_record(param, ctx) -> tuple[str, str] | None:
    if isinstance(param, typer.core.TyperArgument):
        name = (param.metavar or param.name.upper()) + ("..." if param.nargs != 1 else "")
        return name, param.help or ""
    record = param.get_help_record(ctx)
    if record is None:
        return None
    name, help = record
    if help.endswith("]") and "  [" in help:
        head, _, extra = help.rpartition("  [")
        help = f"{head}  [{_range_words(extra[:-1])}]"
    return name, help


def _format_examples(command, formatter) -> None:
    """The epilog with each example on its own unwrapped line (click would rewrap them into each other)."""
    if not command.epilog:
        return
    previous_example = False
    with formatter.indentation():
        for i, paragraph in enumerate(inspect.cleandoc(command.epilog).split("\n\n")):
            example = paragraph.strip().startswith(("e4e ", "ls ", "torchrun "))
            if i == 0 or not (example and previous_example):
                formatter.write_paragraph()
            if example:
                formatter.write(" " * formatter.current_indent + "  " + paragraph.strip() + "\n")
            else:
                formatter.write_text(paragraph)
            previous_example = example


class Command(typer.core.TyperCommand):
    """A command's help: `Usage: e4e video [OPTIONS] INPUTS...`, Arguments/Options with conventional metavars,
    the examples unwrapped."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, typer.core.TyperArgument):
                name = (param.metavar or param.name.upper()) + ("..." if param.nargs != 1 else "")
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx, formatter) -> None:
        records = [(p, _plain_record(p, ctx)) for p in self.get_params(ctx)]
        for title, kind in (("Arguments", typer.core.TyperArgument), ("Options", typer.core.TyperOption)):
            rows = [r for p, r in records if r is not None and isinstance(p, kind)]
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)

    def format_epilog(self, ctx, formatter) -> None:
        _format_examples(self, formatter)


class Group(typer.core.TyperGroup):
    """A group's help: its options and commands, the examples unwrapped."""

    def format_options(self, ctx, formatter) -> None:
        rows = [r for r in (_plain_record(p, ctx) for p in self.get_params(ctx)) if r is not None]
        if rows:
            with formatter.section("Options"):
                formatter.write_dl(rows)
        self.format_commands(ctx, formatter)

    def format_epilog(self, ctx, formatter) -> None:
        _format_examples(self, formatter)


class App(typer.Typer):
    """typer.Typer with the plain help above on every command (`cls`, `rich_markup_mode=None`)."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("cls", Group)
        kwargs.setdefault("rich_markup_mode", None)
        super().__init__(**kwargs)

    def command(self, *args: Any, cls: Any = None, **kwargs: Any) -> Callable:
        register = super().command(*args, cls=cls or Command, **kwargs)
        return lambda func: register(with_metavars(func))

    def callback(self, *args: Any, **kwargs: Any) -> Callable:
        register = super().callback(*args, **kwargs)
        return lambda func: register(with_metavars(func))


app = App(
    name="e4e",
    help=(
        "Batch StyleGAN2 inversion and editing with e4e.\n\n"
        "Typical pipeline:\n\n"
        "\b\n"
        "  e4e invert ./photos -o latents/      # photos -> W+ latents (.npy)\n"
        "  e4e render latents/ -o renders/      # latents -> images\n"
        "  e4e weights list                     # published checkpoints and where they are cached"
    ),
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    """Runs while the options are parsed, so `e4e --version` needs no command."""
    if value:
        from e4ecli import __version__

        typer.echo(f"e4ecli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version),
) -> None:
    pass
