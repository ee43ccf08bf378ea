"""`e4e video`: interpolate through latents, or sweep an edit there and back, into an MP4/GIF."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from e4ecli.cli.app import app
from e4ecli.cli.common import DEFAULT_CHECKPOINT, DEVICE_HELP, EXIT_FAILED, MAX_SIZE, console, die
from e4ecli.cli.styleflow import Attribute, StyleflowWeights

MAX_FRAMES = 10_000  # 5.5 min at 30 fps; the latents of every frame are held in memory (~370 MB at 1024 px)
MAX_FPS = 240.0


@app.command(
    "video",
    epilog=(
        "Examples:\n\n"
        "  e4e video a.npy b.npy c.npy -o morph.mp4 --frames 90 --fps 30 --easing cosine\n\n"
        "  e4e video a.npy b.npy -o loop.gif --frames 48 --loop\n\n"
        "  e4e video face.npy --direction age --strength -3:3 -o age.mp4      # -3 -> +3 -> -3\n\n"
        "  e4e video face.npy -d smile -s 3 --no-bounce -o smile.mp4          # 0 -> +3\n\n"
        "  e4e video face.npy -d styleflow:age -s 20:70 -o age.mp4            # StyleFlow: age 20 -> 70 -> 20"
    ),
)
def video_cmd(
    inputs: List[Path] = typer.Argument(..., help="Latent .npy files: keyframes in order (one latent with --direction).", show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="Output video: .mp4 (also .mkv, .mov, .webm, .avi) or .gif."),
    frames: int = typer.Option(60, "--frames", "-n", min=1, max=MAX_FRAMES, help=f"Number of frames in the video (at most {MAX_FRAMES})."),
    fps: float = typer.Option(30.0, "--fps", min=0.1, max=MAX_FPS, help=f"Frames per second, 0.1 to {MAX_FPS:g} (duration = frames / fps)."),
    easing: str = typer.Option("linear", help="Motion between keyframes (and along a sweep): linear, smooth or cosine."),
    loop: bool = typer.Option(False, "--loop", help="Interpolation: come back to the first latent at the end (seamless loop)."),
    direction: Optional[str] = typer.Option(None, "--direction", "-d", help="Sweep this edit instead of interpolating (same specs as `e4e edit`)."),
    strength: Optional[str] = typer.Option(None, "--strength", "-s", help="Sweep range A:B (or S for 0:S); default: the registry's range."),
    bounce: bool = typer.Option(True, "--bounce/--no-bounce", help="Sweep: A -> B -> A (default) or just A -> B."),
    pca: Optional[str] = typer.Option(None, "--pca", help="GANSpace PCA for ganspace:... directions (file or registered name)."),
    force: bool = typer.Option(False, "--force", help="Apply a registered direction even if it was found for another domain than the model's."),
    checkpoint: str = typer.Option(DEFAULT_CHECKPOINT, "--checkpoint", "-c", help="e4e/pSp checkpoint or bare StyleGAN2 generator: zoo name or file path."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    precision: str = typer.Option("fp32", help="fp32 (exact, the default), or for speed fp16 (GPUs) / bf16 (GPUs, and CPUs with native bf16: AVX512-BF16 or AMX)."),
    batch_size: int = typer.Option(4, "--batch-size", "-b", min=1, help="Frames per forward pass."),
    size: Optional[int] = typer.Option(None, min=1, max=MAX_SIZE, help=f"Frame width, by area averaging (default: the native size; at most {MAX_SIZE})."),
    overwrite: bool = typer.Option(False, help="Replace an existing output video (default: leave it and exit)."),
    styleflow_weights: Optional[Path] = StyleflowWeights,
    attribute: List[str] = Attribute,
) -> None:
    """Render a video: linear interpolation in W+ through the latents, or one latent with an edit swept."""
    import numpy as np
    import torch
    from e4ecli.cli.common import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from e4ecli.cli.common import device_or_die, load_model, out_file_or_die, precision_or_die, visible
    from e4ecli.edits.ops import EASINGS
    from e4ecli.files.latents import LatentError, load_latent
    from e4ecli.hub.directions import DirectionError
    from e4ecli.pipelines.video import VideoError, interpolation_latents, output_for, render_frames, sweep_latents, write_video

    import math

    precision_or_die(precision)
    if not math.isfinite(fps):
        die(f"--fps {fps}: give a number from 0.1 to {MAX_FPS:g}")
    if easing not in EASINGS:
        die(f"--easing {easing}: use one of {', '.join(EASINGS)}")
    try:
        target, fallback = output_for(out)
    except VideoError as e:
        die(str(e))
    if fallback:
        console.print(f"[yellow]note:[/] ffmpeg (the imageio-ffmpeg package) is not installed; writing {escape(str(target))} instead "
                      "(pip install imageio-ffmpeg for MP4)")
    out_file_or_die(target, inputs)
    if target.exists() and not overwrite:
        console.print(f"{escape(str(target))} already exists; nothing to do (--overwrite replaces it)")
        raise typer.Exit(0)
    if direction is None and (strength is not None or not bounce):
        die("--strength and --no-bounce sweep an edit; give --direction too")
    if direction is not None and len(inputs) != 1:
        die(f"--direction sweeps one latent; got {len(inputs)} (run once per latent, or drop --direction to interpolate)")
    from e4ecli.cli.styleflow import overrides_or_die

    overrides = overrides_or_die(attribute, styleflow_weights, [direction] if direction else [])
    dev = device_or_die(device)
    ckpt, ident = load_model(checkpoint)
    gen = ckpt.generator

    keys = []
    for path in inputs:
        try:
            keys.append(load_latent(path, gen.n_latent, gen.style_dim))
        except LatentError as e:
            console.print(f"[red]✗[/] {escape(str(path))}: {escape(str(e))}")
            raise typer.Exit(EXIT_FAILED) from None
        except OSError as e:
            console.print(f"[red]✗[/] {escape(str(path))}: {escape(str(e))}")
            raise typer.Exit(EXIT_FAILED) from None
    keyframes = torch.from_numpy(np.stack(keys)).to(dev)

    if direction is not None:
        from e4ecli.cli.edit import resolve_edits
        from e4ecli.edits.specs import parse_range

        (edit,) = resolve_edits([direction], ckpt, ident, pca, force=force)
        try:
            low, high = parse_range(strength) if strength is not None else (edit.default_range or (None, None))
        except DirectionError as e:
            die(str(e))
        if low is None:
            die(f"--direction {edit.label} has no default range; give --strength A:B")
        if edit.kind == "styleflow":
            from e4ecli.cli.styleflow import bind_or_die

            edit = bind_or_die(edit, inputs[0], keys[0], styleflow_weights, overrides)
        latents = sweep_latents(keyframes[0], edit, low, high, frames, easing, bounce)
        what = f"{edit.label} {low:g} -> {high:g}" + (f" -> {low:g}" if bounce else "")
    else:
        latents = interpolation_latents(keyframes, frames, easing, loop)
        what = f"{len(inputs)} keyframe(s)" + (" (loop)" if loop else "")

    gen.to(dev).eval()
    with Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(), TextColumn("•"),
                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task(visible(f"video: {what}"), total=frames)

        def counted():
            for frame in render_frames(gen, ckpt.domain, latents, batch_size, size, precision):
                yield frame
                progress.advance(task)

        try:
            written = write_video(target, counted(), fps)
        except (VideoError, OSError) as e:
            die(f"cannot write {target}: {e}", EXIT_FAILED)
    console.print(f"wrote {escape(str(written))}: {frames} frames at {fps:g} fps ({frames / fps:.2f} s)")
