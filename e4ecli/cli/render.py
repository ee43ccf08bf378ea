"""`e4e render`: W+ latents (.npy) -> images."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from e4ecli.cli import app
from e4ecli.cli.common import DEFAULT_CHECKPOINT, DEVICE_HELP, die


@app.command(
    "render",
    epilog=(
        "Examples:\n\n"
        "  e4e render latents/ -o renders/\n\n"
        "  e4e render latents/a.npy -o small/ --size 256\n\n"
        "  e4e render latents/ -o renders/ --checkpoint stylegan2-ffhq-config-f.pt"
    ),
)
def render_cmd(
    inputs: List[Path] = typer.Argument(..., help=".npy latent files and/or folders (searched recursively).", show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder: <name>.png per latent, mirroring the input tree, plus manifest.jsonl."),
    checkpoint: str = typer.Option(DEFAULT_CHECKPOINT, "--checkpoint", "-c", help="e4e/pSp checkpoint or bare StyleGAN2 generator: zoo name or file path."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    batch_size: int = typer.Option(4, "--batch-size", "-b", min=1, help="Latents per forward pass."),
    size: Optional[int] = typer.Option(None, min=1, help="Output width, by area averaging (default: the generator's native size)."),
    overwrite: bool = typer.Option(False, help="Redo latents whose images already exist (default: skip them)."),
) -> None:
    """Render W+ latents (n_styles x 512 .npy files) through the StyleGAN2 generator."""
    from e4ecli.cli.common import device_or_die, discover_or_die, load_model, run_with_progress
    from e4ecli.files.latents import LATENT_EXTENSIONS

    dev = device_or_die(device)
    items, problems = discover_or_die(inputs, LATENT_EXTENSIONS, out)
    if not items and not problems:
        die("no .npy latents found in the given inputs")
    ckpt, ident = load_model(checkpoint)
    from e4ecli.pipelines.render import render

    results = render(items, ckpt, out, device=dev, batch_size=batch_size, size=size, overwrite=overwrite)
    raise typer.Exit(run_with_progress(results, len(items), "render", out, ident, problems, suffix=".png"))
