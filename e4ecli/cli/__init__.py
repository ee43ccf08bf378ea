"""The `e4e` command: a thin Typer layer over e4ecli.pipelines.

Every command module registers itself on `app` and imports torch and the models only
inside the command body, so `e4e --help` stays fast.
"""
from __future__ import annotations

from e4ecli.cli.app import app

# Command modules register themselves on `app` when imported.
from e4ecli.cli import align as _align  # noqa: F401
from e4ecli.cli import convert as _convert  # noqa: F401
from e4ecli.cli import invert as _invert  # noqa: F401
from e4ecli.cli import render as _render  # noqa: F401
from e4ecli.cli import train as _train  # noqa: F401
from e4ecli.cli import weights as _weights  # noqa: F401
from e4ecli.cli import bench as _bench  # noqa: F401
from e4ecli.cli import edit as _edit  # noqa: F401
from e4ecli.cli import directions as _directions  # noqa: F401
from e4ecli.cli import video as _video  # noqa: F401
from e4ecli.cli import eval as _eval  # noqa: F401
from e4ecli.cli import export as _export  # noqa: F401
from e4ecli.cli import ui as _ui  # noqa: F401
from e4ecli.cli import edit_video as _edit_video  # noqa: F401

app.add_typer(_weights.weights_app, name="weights")


def main() -> None:
    app()
