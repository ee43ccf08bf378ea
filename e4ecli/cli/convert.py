"""`e4e convert`: NVIDIA StyleGAN2-ADA .pkl -> StyleGAN2 generator .pt (rosinality layout)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from e4ecli.cli.app import app
from e4ecli.cli.common import die


@app.command(
    "convert",
    epilog=(
        "Examples:\n\n"
        "  e4e convert network-snapshot-025000.pkl -o ffhq_ada.pt\n\n"
        "  e4e convert snapshot.pkl                 # writes snapshot.pt beside it\n\n"
        "  e4e render latents/ -o renders/ --checkpoint ffhq_ada.pt\n\n"
        "A .pkl also works directly wherever a generator is taken (--checkpoint, --stylegan-weights); "
        "converting once saves re-reading the whole training snapshot each time. The pickle's embedded "
        "Python code is never run."
    ),
)
def convert_cmd(
    source: Path = typer.Argument(..., help="StyleGAN2-ADA training snapshot (.pkl) from stylegan2-ada-pytorch.", show_default=False),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output .pt file (default: the input's name with .pt)."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists (default: leave it and exit)."),
) -> None:
    """Convert a StyleGAN2-ADA snapshot's G_ema into a StyleGAN2 generator checkpoint (.pt).

    The output holds {'g_ema', 'latent_avg'} with rosinality's state-dict keys; latent_avg is G_ema's w_avg.

    When rosinality's own code cannot express the generator (a channel plan other than multiplier 1 or 2, not 8 mapping
    layers, or the conv_clamp of fp16 training), the file also holds 'e4ecli_generator_config'
    (size, style_dim, n_mlp, channels, conv_clamp), which every e4e command reads.
    """
    from e4ecli.cli.common import escape
    from rich.table import Table

    from e4ecli.cli.common import EXIT_OK, console

    if not source.is_file():
        die(f"{source}: no such file")
    out = out or source.with_suffix(".pt")
    if out.resolve() == source.resolve():
        die(f"{out}: the output would replace the input; choose another -o")
    from e4ecli.cli.common import out_file_or_die, save_or_die

    out_file_or_die(out, [source])
    if out.exists() and not overwrite:
        console.print(f"[yellow]note:[/] {escape(str(out))} already exists; left as it is (use --overwrite to replace it)")
        raise typer.Exit(EXIT_OK)

    from e4ecli.hub.ada import convert_pickle, is_plain_pickle
    from e4ecli.hub.checkpoints import CheckpointError, GENERATOR_CONFIG_KEY

    if not is_plain_pickle(source):
        die(f"{source}: not a StyleGAN2-ADA pickle (it looks like a PyTorch checkpoint, which every command loads as it is)")
    try:
        with console.status(f"reading {escape(str(source))}"):
            conv = convert_pickle(source)
    except CheckpointError as e:
        die(e)
    ckpt = conv.checkpoint()
    save_or_die(out, ckpt, "torch")

    c = conv.config
    table = Table(title="convert: summary", title_justify="left")
    for col in ("output", "size", "channels (4 -> size)", "mapping layers", "conv_clamp", "layout"):
        table.add_column(col, overflow="fold")
    layout = "rosinality" if GENERATOR_CONFIG_KEY not in ckpt else "rosinality keys + config"
    table.add_row(escape(str(out)), str(c["size"]), " ".join(str(v) for _, v in sorted(c["channels"].items())), str(c["n_mlp"]),
                  "off" if c["conv_clamp"] is None else f"{c['conv_clamp']:g}", layout)
    console.print(table)
    if not conv.fits_rosinality:
        console.print("note: this architecture does not fit rosinality's Generator; load the file with e4ecli (every e4e command does).")
    raise typer.Exit(EXIT_OK)
