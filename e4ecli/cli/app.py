"""The Typer application every command module registers itself on (imported by them, never the reverse)."""
from __future__ import annotations

import typer


def _help_without_emoji() -> None:
    """Typer renders help text as rich markup, which also turns `:name:` into emoji (the sweep syntax A:B:N
    showed as A🅱N). Keep the markup (styles, escapes) and drop the emoji substitution."""
    try:
        from typer import rich_utils
    except ImportError:  # typer without rich: plain click help, nothing to do
        return
    make = getattr(rich_utils, "_make_rich_text", None)
    if make is None or getattr(make, "_e4e_no_emoji", False):
        return

    def make_rich_text(*, text: str, style: str = "", markup_mode):
        if markup_mode != rich_utils.MARKUP_MODE_RICH or rich_utils._has_ansi_character(text):
            return make(text=text, style=style, markup_mode=markup_mode)
        import inspect

        from rich.text import Text

        return rich_utils.highlighter(Text.from_markup(inspect.cleandoc(text), style=style, emoji=False))

    make_rich_text._e4e_no_emoji = True
    rich_utils._make_rich_text = make_rich_text


_help_without_emoji()

app = typer.Typer(
    name="e4e",
    help=(
        "Batch StyleGAN2 inversion and editing with e4e.\n\n"
        "Typical pipeline:\n\n"
        "  e4e invert ./photos -o latents/      # photos -> W+ latents (.npy)\n\n"
        "  e4e render latents/ -o renders/      # latents -> images\n\n"
        "  e4e weights list                     # published checkpoints and where they are cached"
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
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
