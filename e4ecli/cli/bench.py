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
        "  e4e bench --precision fp32,bf16                # both in every round, with the speed-up\n\n"
        "  e4e bench --compare onnxruntime --device cpu\n\n"
        "  e4e bench --checkpoint e4e_ffhq_encode.pt --json bench.json"
    ),
)
def bench_cmd(
    size: int = typer.Option(1024, help="Generator resolution of the randomly initialised published architecture (ignored with --checkpoint)."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", help="Time a real e4e/pSp checkpoint instead of random weights."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    batch_size: int = typer.Option(1, "--batch-size", "-b", min=1, help="Images per forward pass."),
    precision: str = typer.Option("fp32", help="fp32, fp16 or bf16 (autocast); several, comma-separated (fp32,bf16), are timed in turn in every round."),
    iters: int = typer.Option(3, min=1, help="Rounds (each times the peak and the model side by side; medians are reported) after one warm-up."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the numbers to this JSON file."),
    compare: Optional[str] = typer.Option(None, "--compare", help="Also time the same graphs in: onnxruntime (CPU, fp32; needs the [onnx] extra)."),
) -> None:
    """Measure per-image encoder, generator and end-to-end time, the machine's peak (the best of a large matmul and
    a large NHWC convolution, at the chosen precision) and the efficiency; optionally against ONNX Runtime.
    Every round times the peak, the model (and ONNX Runtime) side by side; medians are reported. With
    --checkpoint it also reports the time to a ready model (load + build) and the first encoder pass."""
    from rich.table import Table

    from e4ecli.cli.common import distributed_or_die, load_model, precision_or_die

    precisions = tuple(dict.fromkeys(p.strip() for p in precision.split(",") if p.strip()))
    if not precisions:
        die("--precision: name at least one of fp32, fp16, bf16")
    for p in precisions:
        precision_or_die(p)
    if compare not in (None, "onnxruntime"):
        die(f"--compare {compare!r}: the only runtime to compare with is onnxruntime")
    if compare:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError:
            die("--compare onnxruntime needs onnx and onnxruntime: pip install 'e4ecli[onnx]'")
        if "fp32" not in precisions:
            die("--compare onnxruntime compares fp32 graphs; use --precision fp32 (or fp32,bf16)")
    if not checkpoint and (size < 16 or size & (size - 1)):
        die(f"--size must be a power of two >= 16, got {size}")
    from e4ecli.files.batch import write_text
    from e4ecli.pipelines.bench import bench  # torch: only once the options are known to be good

    _, dev = distributed_or_die(device, "bf16" if "bf16" in precisions else precisions[0])  # the note on emulated bf16
    if compare and dev.type != "cpu":
        die("--compare onnxruntime runs on the CPU; use --device cpu")
    ready = None
    if checkpoint:
        import time

        t = time.perf_counter()
        ckpt, _ = load_model(checkpoint)
        if not ckpt.has_encoder:
            die(f"{checkpoint} holds only a generator; bench needs an e4e/pSp checkpoint")
        model, input_size = ckpt.inverter(), ckpt.domain.input_size
        ready = time.perf_counter() - t
    else:
        import torch

        from e4ecli.models.encoders import Encoder4Editing
        from e4ecli.models.inverter import Inverter
        from e4ecli.models.stylegan2 import Generator

        torch.manual_seed(0)
        gen = Generator(size)
        model, input_size = Inverter(Encoder4Editing(size), gen, None, False), (256, 256)
    import contextlib
    import tempfile

    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory())) if compare else None
        what = "/".join(precisions) + (" with onnxruntime" if compare else "")
        stack.enter_context(console.status(f"timing on {dev} (batch {batch_size}, {what}, {iters} rounds)"))
        results = bench(model, dev, input_size=input_size, batch_size=batch_size, precision=precisions, iters=iters, onnxruntime_dir=work)
    first = results[0]
    several = len(results) > 1
    title = f"e4e bench: {first.size} px, batch {first.batch_size}, {'/'.join(precisions)} on {first.device}"
    table = Table(title=title, title_justify="left")
    table.add_column("", no_wrap=True)
    table.add_column("GFLOP / image", justify="right")
    for r in results:
        table.add_column(f"{r.precision} s / image" if several else "s / image", justify="right")
        table.add_column(f"{r.precision} images / s" if several else "images / s", justify="right")
    if several:
        table.add_column(f"{results[-1].precision} vs {first.precision}", justify="right")
    if compare:
        table.add_column("onnxruntime s / image", justify="right")
    ort = next((r.onnxruntime for r in results if r.onnxruntime), None) or {}
    enc_gflop, gen_gflop = first.encoder_gflop_per_image, first.generator_gflop_per_image
    parts = (("encoder", "encoder_s_per_image", enc_gflop), ("generator", "generator_s_per_image", gen_gflop),
             ("end to end", "end_to_end_s_per_image", enc_gflop + gen_gflop))
    for name, key, gflop in parts:
        cells = [name, f"{gflop:.1f}"]
        for r in results:
            cells += [f"{getattr(r, key):.3f}", f"{1 / getattr(r, key):.2f}"]
        if several:
            cells.append(f"×{getattr(first, key) / getattr(results[-1], key):.2f}")
        if compare:
            ort_s = ort["encoder_s_per_image"] + ort["generator_s_per_image"] if key == "end_to_end_s_per_image" else ort[key]
            cells.append(f"{ort_s:.3f}")
        table.add_row(*cells)
    console.print(table)
    for r in results:
        console.print(f"{r.precision} peak: {r.peak_gflops:.0f} GFLOP/s (matmul {r.matmul_gflops:.0f}, NHWC convolution {r.conv_gflops:.0f})   "
                      f"efficiency: [bold]{100 * r.efficiency:.0f}%[/] of peak")
    console.print(f"medians of {first.rounds} rounds; each round times the peak and the model side by side"
                  + (", every precision in turn" if several else ""))
    data = first.as_dict() if not several else {"precisions": {r.precision: r.as_dict() for r in results},
                                                "speedup": {key: getattr(first, key) / getattr(results[-1], key) for _, key, _ in parts}}
    if ready is not None:
        data["ready_s"] = ready
        console.print(f"ready model: {ready:.2f} s to load {checkpoint} and build the inverter, first encoder pass {first.first_encode_s:.2f} s")
    if json_out:
        write_text(json_out, json.dumps(data, indent=2) + "\n")
