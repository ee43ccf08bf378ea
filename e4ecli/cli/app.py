"""The Typer application every command module registers itself on (imported by them, never the reverse)."""
from __future__ import annotations

import typer

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


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        from e4ecli import __version__

        typer.echo(f"e4ecli {__version__}")
        raise typer.Exit()
