"""`e4e render`: W+ latents (.npy) -> images."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from e4ecli.cli.app import app
from e4ecli.cli.common import DEFAULT_CHECKPOINT, DEVICE_HELP, MAX_SIZE, die


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
    precision: str = typer.Option("fp32", help="fp32 (exact, the default), or for speed fp16 (GPUs) / bf16 (GPUs, and CPUs with native bf16: AVX512-BF16 or AMX)."),
    batch_size: int = typer.Option(4, "--batch-size", "-b", min=1, help="Latents per forward pass."),
    size: Optional[int] = typer.Option(None, min=1, max=MAX_SIZE, help=f"Output width, by area averaging "
                                      f"(default: the generator's native size; at most {MAX_SIZE})."),
    overwrite: bool = typer.Option(False, help="Redo latents whose images already exist (default: skip them)."),
) -> None:
    """Render W+ latents (n_styles x 512 .npy files) through the StyleGAN2 generator."""
    from e4ecli.cli.common import discover_or_die, distributed_or_die, load_model, out_dir_or_die, outputs_or_die, planned, run_with_progress
    from e4ecli.files.batch import shard
    from e4ecli.files.latents import LATENT_EXTENSIONS

    dist, dev = distributed_or_die(device, precision)
    out_dir_or_die(out, lock=dist.is_main)
    items, problems = discover_or_die(inputs, LATENT_EXTENSIONS, out)
    if not items and not problems:
        die("no .npy latents found in the given inputs")
    outputs_or_die(items, planned(items, out, [".png"]))
    items = shard(items, dist.rank, dist.world)
    ckpt, ident = load_model(checkpoint)
    from e4ecli.pipelines.render import render

    results = render(items, ckpt, out, device=dev, precision=precision, batch_size=batch_size, size=size, overwrite=overwrite)
    code = run_with_progress(results, len(items), "render", out, ident, problems, suffix=".png", dist=dist)
    dist.close()
    raise typer.Exit(code)
