"""The `e4e` command: a thin Typer layer over e4ecli.pipelines.

Every command module registers itself on `app` and imports torch and the models only
inside the command body, so `e4e --help` stays fast.
"""
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

# Command modules register themselves on `app` when imported.
from e4ecli.cli import align as _align  # noqa: E402,F401
from e4ecli.cli import convert as _convert  # noqa: E402,F401
from e4ecli.cli import invert as _invert  # noqa: E402,F401
from e4ecli.cli import render as _render  # noqa: E402,F401
from e4ecli.cli import train as _train  # noqa: E402,F401
from e4ecli.cli import weights as _weights  # noqa: E402,F401
from e4ecli.cli import bench as _bench  # noqa: E402,F401
app.add_typer(_weights.weights_app, name="weights")
from e4ecli.cli import edit as _edit  # noqa: E402,F401
from e4ecli.cli import directions as _directions  # noqa: E402,F401
from e4ecli.cli import video as _video  # noqa: E402,F401
from e4ecli.cli import eval as _eval  # noqa: E402,F401


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        from e4ecli import __version__

        typer.echo(f"e4ecli {__version__}")
        raise typer.Exit()


def main() -> None:
    app()
