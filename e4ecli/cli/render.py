"""`e4e render`: W+ latents (.npy) -> images."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from e4ecli.cli.app import app
from e4ecli.cli.batch import (Job, batch_size_option, checkpoint_option, device_option, ident_hash, overwrite_option,
                              precision_option, run_batch, size_option, workers_option)


@app.command(
    "render",
    epilog=(
        "Examples:\n\n"
        "  e4e render latents/ -o renders/\n\n"
        "  e4e render latents/a.npy -o small/ --size 256\n\n"
        "  e4e render latents/ -o renders/ --checkpoint stylegan2-ffhq-config-f.pt --workers 2"
    ),
)
def render_cmd(
    inputs: List[Path] = typer.Argument(..., help=".npy latent files and/or folders (searched recursively).", show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder: <name>.png per latent, mirroring the input tree, plus manifest.jsonl."),
    checkpoint: str = checkpoint_option(),
    device: str = device_option(),
    precision: str = precision_option(),
    batch_size: int = batch_size_option("Latents"),
    workers: int = workers_option(),
    size: Optional[int] = size_option("Output width"),
    overwrite: bool = overwrite_option("latent"),
) -> None:
    """Render W+ latents (n_styles x 512 .npy files) through the StyleGAN2 generator."""
    from e4ecli.cli.common import capped_workers, outputs_or_die, planned
    from e4ecli.files.kinds import LATENT_EXTENSIONS
    from e4ecli.pipelines.plans import RENDER_SUFFIXES, RenderConfig

    config = RenderConfig(precision=precision, batch_size=batch_size, workers=capped_workers(workers), size=size)

    def work(job: Job):
        from e4ecli.cli.common import load_model
        from e4ecli.pipelines.render import RenderPipeline

        ckpt, ident = load_model(checkpoint)
        pipe = RenderPipeline.from_checkpoint(ckpt, config, device=job.device)
        return pipe(job.items, out, finished=job.start(pipe.settings(ident_hash(ident)), ident))

    run_batch("render", inputs, out, LATENT_EXTENSIONS, work, device=device, precision=precision, overwrite=overwrite,
              checkpoint=checkpoint, suffix=".png", empty="no .npy latents found in the given inputs",
              check_items=lambda items: outputs_or_die(items, planned(items, out, RENDER_SUFFIXES)))
