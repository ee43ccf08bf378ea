"""`e4e video`: interpolate through latents, or sweep an edit there and back, into an MP4/GIF."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from e4ecli.cli.app import app
from e4ecli.cli.batch import batch_size_option, checkpoint_option, device_option, precision_option, size_option
from e4ecli.cli.common import EXIT_FAILED, console, die, escape
from e4ecli.cli.styleflow import Attribute, StyleflowWeights
from e4ecli.cli.edit import beta_option, clip_weights_option, neutral_option, relevance_option, text_options

MAX_FRAMES = 10_000  # 5.5 min at 30 fps; the latents of every frame are held in memory (~370 MB at 1024 px)
MAX_FPS = 240.0


@app.command(
    "video",
    epilog=(
        "Examples:\n\n"
        "  e4e video a.npy b.npy c.npy -o morph.mp4 --frames 90 --fps 30 --easing cosine\n\n"
        "  e4e video a.npy b.npy -o loop.gif --frames 48 --loop\n\n"
        "  e4e video keyframes/ -o morph.mp4                                  # its .npy latents in name order\n\n"
        "  e4e video face.npy --direction age --strength -3:3 -o age.mp4      # -3 -> +3 -> -3\n\n"
        "  e4e video face.npy -d smile -s 3 --no-bounce -o smile.mp4          # 0 -> +3\n\n"
        "  e4e video face.npy -d styleflow:age -s 20:70 -o age.mp4            # StyleFlow: age 20 -> 70 -> 20"
    ),
)
def video_cmd(
    inputs: List[Path] = typer.Argument(..., help="Latent .npy files: keyframes in order (one latent with --direction); a folder "
                                                    "gives its .npy latents in name order.", show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="Output video: .mp4 (also .mkv, .mov, .webm, .avi) or .gif; "
                                                      "manifest.jsonl beside it records how it was made."),
    frames: int = typer.Option(60, "--frames", "-n", min=1, max=MAX_FRAMES, help=f"Number of frames in the video (at most {MAX_FRAMES})."),
    fps: float = typer.Option(30.0, "--fps", min=0.1, max=MAX_FPS, help=f"Frames per second, 0.1 to {MAX_FPS:g} (duration = frames / fps)."),
    easing: str = typer.Option("linear", help="Motion between keyframes (and along a sweep): linear, smooth or cosine."),
    loop: bool = typer.Option(False, "--loop", help="Interpolation: come back to the first latent at the end (seamless loop)."),
    direction: Optional[str] = typer.Option(None, "--direction", "-d", help="Sweep this edit instead of interpolating (same specs as `e4e edit`)."),
    strength: Optional[str] = typer.Option(None, "--strength", "-s", help="Sweep range A:B (or S for 0:S); default: the registry's range."),
    bounce: bool = typer.Option(True, "--bounce/--no-bounce", help="Sweep: A -> B -> A (default) or just A -> B."),
    pca: Optional[str] = typer.Option(None, "--pca", help="GANSpace PCA for ganspace:... directions (file or registered name)."),
    force: bool = typer.Option(False, "--force", help="Apply a registered direction even if it was found for another domain than the model's."),
    checkpoint: str = checkpoint_option(),
    device: str = device_option(),
    precision: str = precision_option(),
    batch_size: int = batch_size_option("Frames"),
    size: Optional[int] = size_option("Frame width"),
    overwrite: bool = typer.Option(False, help="Replace an existing output video even when it was made with the same settings "
                                               "(default: leave it; a video made with other settings is always redone)."),
    styleflow_weights: Optional[Path] = StyleflowWeights,
    attribute: List[str] = Attribute,
    neutral: Optional[str] = neutral_option(),
    beta: float = beta_option(),
    clip_weights: Optional[Path] = clip_weights_option(),
    relevance: Optional[Path] = relevance_option(),
) -> None:
    """Render a video: linear interpolation in W+ through the latents, or one latent with an edit swept."""
    from e4ecli.cli.batch import checkpoint_problem, usage_or_die
    from e4ecli.cli.common import precision_or_die
    from e4ecli.edits.syntax import EASINGS
    from e4ecli.cli.common import worded
    from e4ecli.edits.specs import parse_range
    from e4ecli.hub.directions import DirectionError
    from e4ecli.pipelines.directions import check

    import math

    precision_or_die(precision)
    problems: list[str | None] = []
    if not math.isfinite(fps):
        problems.append(f"--fps {fps}: give a number from 0.1 to {MAX_FPS:g}")
    if easing not in EASINGS:
        problems.append(f"--easing {easing}: use one of {', '.join(EASINGS)}")
    if direction is None and (strength is not None or not bounce):
        problems.append("--strength and --no-bounce sweep an edit; give --direction too")
    if direction is not None:
        try:
            check(direction, pca, text_options(neutral, beta, clip_weights, relevance))
            if strength is not None:
                parse_range(strength)
        except DirectionError as e:
            problems.append(worded(e))
    inputs, missing = keyframe_files(inputs)
    problems += missing
    if direction is not None and len(inputs) > 1:
        problems.append(f"--direction sweeps one latent; got {len(inputs)} (run once per latent, or drop --direction to interpolate)")
    from e4ecli.files.kinds import VIDEO_SUFFIXES

    if out.suffix.lower() not in VIDEO_SUFFIXES:
        problems.append(f"{out}: unsupported video type '{out.suffix}'; use .mp4 or .gif "
                        f"(also {', '.join(s for s in VIDEO_SUFFIXES if s not in ('.mp4', '.gif'))})")
    usage_or_die(problems)  # the typos above are answered before the video pipeline (and torch) is imported
    from e4ecli.files.guard import OutputLocked
    from e4ecli.files.video import VideoError, output_for
    from e4ecli.runs import OutputRun, OutputUnusable, OverwritesInput, UnrecordedOutput

    target = fallback = job = None
    try:
        target, fallback = output_for(out)  # torch-free: whether ffmpeg is there decides the file written
    except VideoError as e:
        problems.append(str(e))
    if target is not None:
        try:
            job = OutputRun.prepare("video", target, inputs, overwrite=overwrite)
        except UnrecordedOutput as e:
            problems.append(f"{e}; --overwrite replaces it")
        except OutputUnusable as e:
            problems.append(f"-o {e.reason}")
        except OverwritesInput as e:
            problems.append(f"-o {target} is the input {e.hits[0][0]}; writing it would destroy the input (choose another name)")
        except OutputLocked as e:
            from e4ecli.cli.common import locked_message

            problems.append(locked_message(e))
    usage_or_die(problems)
    assert job is not None
    from e4ecli.cli.styleflow import overrides_or_die

    overrides = overrides_or_die(attribute, styleflow_weights, [direction] if direction else [])
    usage_or_die([checkpoint_problem(checkpoint)])  # last: the problems above are found without looking at it
    if fallback:
        console.print(f"[yellow]note:[/] ffmpeg (the imageio-ffmpeg package) is not installed; writing {escape(str(target))} instead "
                      "(pip install imageio-ffmpeg for MP4)")
    try:
        _render_video(inputs, job, frames=frames, fps=fps, easing=easing, loop=loop, direction=direction, strength=strength,
                      bounce=bounce, pca=pca, checkpoint=checkpoint, device=device, precision=precision, batch_size=batch_size,
                      size=size, overwrite=overwrite, styleflow_weights=styleflow_weights, overrides=overrides, force=force,
                      text=text_options(neutral, beta, clip_weights, relevance))
    except KeyboardInterrupt:
        from e4ecli.cli.batch import interrupted

        interrupted(0, 1)


def keyframe_files(inputs: List[Path]) -> tuple[List[Path], List[str]]:
    """The keyframes in order: files as given, a folder's .npy latents in name order (searched recursively, as
    the other commands read folders); (files, problems)."""
    from e4ecli.files.batch import discover
    from e4ecli.files.kinds import LATENT_EXTENSIONS

    files: List[Path] = []
    problems: List[str] = []
    for path in inputs:
        if path.is_dir():
            found, _ = discover([path], LATENT_EXTENSIONS)
            if not found:
                problems.append(f"{path}: no .npy latents in this folder")
            files += [it.source for it in found]
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: no such latent file or folder")
    return files, problems


def _render_video(inputs: List[Path], job, *, frames: int, fps: float, easing: str, loop: bool, direction: Optional[str],
                  strength: Optional[str], bounce: bool, pca: Optional[str], checkpoint: str, device: str, precision: str,
                  batch_size: int, size: Optional[int], overwrite: bool, styleflow_weights: Optional[Path], overrides: dict,
                  force: bool = False, text=None) -> None:
    import numpy as np
    import torch
    from rich.progress import Progress

    from e4ecli.cli.batch import ident_hash, progress_columns
    from e4ecli.cli.common import device_or_die, load_model, visible
    from e4ecli.files.latents import LatentError, load_latent
    from e4ecli.files.provenance import Settings, content_id
    from e4ecli.hub.directions import DirectionError
    from e4ecli.pipelines.video import VideoError, interpolation_latents, render_frames, sweep_latents, sweep_offsets, write_video
    from e4ecli.runs import Finished, ItemFailed, Note

    dev = device_or_die(device)
    ckpt, ident = load_model(checkpoint)
    gen = ckpt.generator

    keys = []
    for path in inputs:
        try:
            keys.append(load_latent(path, gen.n_latent, gen.style_dim))
        except (LatentError, OSError) as e:
            console.print(f"[red]✗[/] {escape(str(path))}: {escape(str(e))}")
            raise typer.Exit(EXIT_FAILED) from None
    keyframes = torch.from_numpy(np.stack(keys)).to(dev)
    settings = Settings("video", checkpoint=ident_hash(ident), precision=precision, size=size, frames=frames, fps=fps,
                        easing=easing, keyframes=[content_id(k) for k in keys])

    if direction is not None:
        from e4ecli.cli.edit import resolve_edits
        from e4ecli.edits.specs import parse_range

        from dataclasses import replace

        (edit,) = resolve_edits([direction], ckpt, ident, pca, force=force, text=replace(text, device=str(dev)) if text else None)
        try:
            low, high = parse_range(strength) if strength is not None else (edit.default_range or (None, None))
        except DirectionError as e:
            die(e)
        if low is None:
            die(f"--direction {edit.label} has no default range; give --strength A:B")
        if edit.kind == "styleflow":
            from e4ecli.cli.styleflow import bind_or_die

            edit, source_id = bind_or_die(edit, inputs[0], keys[0], styleflow_weights, overrides)
            # the flow's content, the overrides and <name>.attributes.json's bytes: a changed attributes file redoes the video
            settings = settings.with_(styleflow={"source_id": source_id})
        latents = sweep_latents(keyframes[0], edit, low, high, frames, easing, bounce)
        offsets = sweep_offsets(edit, low, high, frames, easing, bounce)
        what = f"{edit.label} {low:g} -> {high:g}" + (f" -> {low:g}" if bounce else "")
        settings = settings.with_(direction=edit.identity(), range=[low, high], bounce=bounce)
    else:
        latents = interpolation_latents(keyframes, frames, easing, loop)
        offsets = None
        what = f"{len(inputs)} keyframe(s)" + (" (loop)" if loop else "")
        settings = settings.with_(loop=loop)

    target = job.target
    if job.start(settings, ident):
        console.print(f"{escape(str(target))} already exists, made with these settings; nothing to do (--overwrite redoes it)")
        job.close()
        raise typer.Exit(0)

    def make(path: Path) -> None:
        gen.to(dev).eval()
        with Progress(*progress_columns(), console=console) as progress:
            task = progress.add_task(visible(f"video: {what}"), total=frames)

            def counted():
                for frame in render_frames(gen, ckpt.domain, latents, batch_size, size, precision, offsets):
                    yield frame
                    progress.advance(task)

            write_video(path, counted(), fps)  # atomic (temp + rename) on its own

    for ev in job.execute(make, atomic=False, errors=(VideoError, OSError)):
        if isinstance(ev, Note):
            console.print(f"[yellow]note:[/] {escape(ev.message)}")
        elif isinstance(ev, ItemFailed):
            die(ev.error, EXIT_FAILED)
        elif isinstance(ev, Finished) and ev.stopped:
            die(ev.stopped, EXIT_FAILED)
    console.print(f"wrote {escape(str(target))}: {frames} frames at {fps:g} fps ({frames / fps:.2f} s)")
