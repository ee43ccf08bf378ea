"""`e4e bench`: how fast inversion + rendering run here, against the machine's own peak."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from e4ecli.cli.app import app
from e4ecli.cli.common import DEVICE_HELP, console, die


@app.command(
    "bench",
    epilog=(
        "Examples:\n\n"
        "  e4e bench                                   # published FFHQ architecture, 1024 px, CPU or GPU\n\n"
        "  e4e bench --device cuda --batch-size 8 --precision fp16\n\n"
        "  e4e bench --checkpoint e4e_ffhq_encode.pt --json bench.json"
    ),
)
def bench_cmd(
    size: int = typer.Option(1024, help="Generator resolution of the randomly initialised published architecture (ignored with --checkpoint)."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", help="Time a real e4e/pSp checkpoint instead of random weights."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    batch_size: int = typer.Option(1, "--batch-size", "-b", min=1, help="Images per forward pass."),
    precision: str = typer.Option("fp32", help="fp32, fp16 or bf16 (autocast)."),
    iters: int = typer.Option(3, min=1, help="Timed repetitions (the median is reported) after one warm-up."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the numbers to this JSON file."),
    compare: Optional[str] = typer.Option(None, "--compare", help="Also time the same graphs in: onnxruntime (CPU, fp32; needs the [onnx] extra)."),
) -> None:
    """Measure per-image encoder, generator and end-to-end time, the machine's peak (the best of a large matmul and
    a large NHWC convolution, at the chosen precision) and the efficiency; optionally against ONNX Runtime."""
    from rich.table import Table

    from e4ecli.cli.common import distributed_or_die, load_model
    from e4ecli.files.batch import write_text
    from e4ecli.pipelines.bench import bench

    if compare not in (None, "onnxruntime"):
        die(f"--compare {compare!r}: the only runtime to compare with is onnxruntime")
    if compare:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError:
            die("--compare onnxruntime needs onnx and onnxruntime: pip install 'e4ecli[onnx]'")
        if precision != "fp32":
            die("--compare onnxruntime compares fp32 graphs; use --precision fp32")
    _, dev = distributed_or_die(device, precision)
    if compare and dev.type != "cpu":
        die("--compare onnxruntime runs on the CPU; use --device cpu")
    if checkpoint:
        ckpt, _ = load_model(checkpoint)
        if not ckpt.has_encoder:
            die(f"{checkpoint} holds only a generator; bench needs an e4e/pSp checkpoint")
        model, input_size = ckpt.inverter(), ckpt.domain.input_size
    else:
        if size < 16 or size & (size - 1):
            die(f"--size must be a power of two >= 16, got {size}")
        import torch

        from e4ecli.models.encoders import Encoder4Editing
        from e4ecli.models.inverter import Inverter
        from e4ecli.models.stylegan2 import Generator

        torch.manual_seed(0)
        gen = Generator(size)
        model, input_size = Inverter(Encoder4Editing(size), gen, None, False), (256, 256)
    with console.status(f"timing on {dev} (batch {batch_size}, {precision})"):
        r = bench(model, dev, input_size=input_size, batch_size=batch_size, precision=precision, iters=iters)
    table = Table(title=f"e4e bench: {r.size} px, batch {r.batch_size}, {r.precision} on {r.device}", title_justify="left")
    for col in ("", "GFLOP / image", "s / image", "images / s"):
        table.add_column(col, justify="right")
    table.add_row("encoder", f"{r.encoder_gflop_per_image:.1f}", f"{r.encoder_s_per_image:.3f}", f"{1 / r.encoder_s_per_image:.2f}")
    table.add_row("generator", f"{r.generator_gflop_per_image:.1f}", f"{r.generator_s_per_image:.3f}", f"{1 / r.generator_s_per_image:.2f}")
    table.add_row("end to end", f"{r.encoder_gflop_per_image + r.generator_gflop_per_image:.1f}", f"{r.end_to_end_s_per_image:.3f}", f"{r.images_per_s:.2f}")
    console.print(table)
    console.print(f"{r.precision} peak: {r.peak_gflops:.0f} GFLOP/s (matmul {r.matmul_gflops:.0f}, NHWC convolution {r.conv_gflops:.0f})   "
                  f"efficiency: [bold]{100 * r.efficiency:.0f}%[/] of peak")
    data = r.as_dict()
    if compare:
        import tempfile

        from e4ecli.pipelines.export import onnxruntime_times

        with console.status("timing the same graphs in onnxruntime"), tempfile.TemporaryDirectory() as tmp:
            enc, gen = onnxruntime_times(model, input_size, batch_size, iters, Path(tmp))
        console.print(f"onnxruntime: encoder {enc:.3f} s / image (e4ecli {r.encoder_s_per_image:.3f}), "
                      f"generator {gen:.3f} s / image (e4ecli {r.generator_s_per_image:.3f})")
        data["onnxruntime"] = {"encoder_s_per_image": enc, "generator_s_per_image": gen}
    if json_out:
        write_text(json_out, json.dumps(data, indent=2) + "\n")
