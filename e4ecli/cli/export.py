"""`e4e export`: the encoder and the generator's synthesis as ONNX graphs, for ONNX Runtime or TensorRT."""
from __future__ import annotations

from pathlib import Path

import typer

from e4ecli.cli.app import app
from e4ecli.cli.common import die

FORMATS = ("onnx",)


@app.command(
    "export",
    epilog=(
        "Examples:\n\n"
        "  e4e export e4e_ffhq_encode.pt -o onnx/               # onnx/encoder.onnx + onnx/synthesis.onnx\n\n"
        "  e4e export stylegan2-ffhq-config-f.pt -o onnx/       # a bare generator: synthesis.onnx only\n\n"
        "  e4e export e4e_ffhq_encode.pt -o onnx/ --no-check    # skip the onnxruntime comparison\n\n"
        "Needs the optional extra: pip install 'e4ecli[onnx]'."
    ),
)
def export_cmd(
    checkpoint: str = typer.Argument(..., help="e4e/pSp checkpoint, generator file or zoo name.", show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="Folder for the graphs (created if missing).", show_default=False),
    fmt: str = typer.Option("onnx", "--format", help="Export format: onnx."),
    check: bool = typer.Option(True, help="Run each graph in onnxruntime (when installed) and report the max |diff| against e4ecli."),
) -> None:
    """Export the encoder (images -> W+ latents, latent average included) and the synthesis network
    (W+ -> images) as fp32 ONNX graphs with a dynamic batch dimension.

    encoder.onnx: input "image" (N, 3, H, W) in [-1, 1], H x W the checkpoint's input size (256 x 256 for
    faces, 192 x 256 for cars), preprocessed as `e4e invert` does; output "wplus" (N, n_styles, 512).
    synthesis.onnx: input "wplus"; output "image" (N, 3, size, size) in about [-1, 1], with the generator's
    stored noise (what `e4e render` does).
    """
    from e4ecli.cli.common import EXIT_OK, console, escape, load_model, out_dir_or_die

    if fmt not in FORMATS:
        die(f"--format {fmt!r}: supported formats are {', '.join(FORMATS)}")
    try:
        import onnx  # noqa: F401
    except ImportError:
        die("ONNX export needs the onnx package: pip install 'e4ecli[onnx]' (onnxruntime too, to check the graphs)")
    out_dir_or_die(out)

    from rich.table import Table

    from e4ecli.files.batch import atomic_output
    from e4ecli.pipelines.export import OPSET, export_onnx, onnxruntime_available

    ckpt, ident = load_model(checkpoint)
    check = check and onnxruntime_available()
    try:
        with console.status(f"exporting {escape(checkpoint)} to ONNX"):
            done = export_onnx(ckpt, out, check=check, writer=atomic_output)
    except OSError as e:
        die(f"{out}: cannot write ({e})")
    # the folder once in the title, file names in the rows: a long -o path never folds a name on a narrow console
    table = Table(title=f"export: {escape(ident)} -> ONNX opset {OPSET} in {escape(out)}", title_justify="left")
    for col in ("graph", "input", "output", "onnxruntime max |diff|"):
        table.add_column(col, overflow="fold")
    for e in done:
        shape = lambda s: "(" + ", ".join(map(str, s)) + ")"  # noqa: E731
        table.add_row(escape(e.path.name), shape(e.input_shape), shape(e.output_shape), "not checked" if e.max_abs_diff is None else f"{e.max_abs_diff:.2e}")
    console.print(table)
    if not ckpt.has_encoder:
        console.print("note: the checkpoint holds only a generator; no encoder.onnx")
    raise typer.Exit(EXIT_OK)
