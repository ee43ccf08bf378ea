"""`e4e edit-video`: edit the face in a clip (STIT): smoothed alignment, e4e, optional PTI on all frames, edit,
optional stitching tuning, paste-back; the clip back at its frame rate with its sound."""
from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from e4ecli.cli.align import DETECTOR_HELP, Detector
from e4ecli.cli.app import app
from e4ecli.cli.batch import EXIT_INTERRUPTED, checkpoint_option, checkpoint_problem, device_option, usage_or_die
from e4ecli.cli.common import EXIT_FAILED, console, die, escape
from e4ecli.cli.edit import beta_option, clip_weights_option, neutral_option, relevance_option, text_options

STRENGTH_HELP = ("How much, one per --direction in the same order (default: the registry's strength): a number, or A:B to ramp "
                 "the strength linearly from A on the first frame to B on the last.")


class Refine(str, Enum):
    none = "none"
    pti = "pti"


class MaskKind(str, Enum):
    auto = "auto"
    parsing = "parsing"
    landmarks = "landmarks"


def same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def check_files(clip: Path, out: Path, work: Path) -> list[str]:
    """The clip, -o and --work, checked without torch: problems."""
    from e4ecli.files.guard import out_file_problem
    from e4ecli.files.kinds import VIDEO_SUFFIXES

    problems: list[str] = []
    if not clip.exists():
        problems.append(f"{clip}: no such file")
    elif not clip.is_file():
        problems.append(f"{clip}: not a file")
    elif clip.suffix.lower() not in VIDEO_SUFFIXES:
        problems.append(f"{clip}: not a video file name (expected {', '.join(VIDEO_SUFFIXES)})")
    if out.suffix.lower() not in VIDEO_SUFFIXES:
        problems.append(f"-o {out}: the output must be a video file ({', '.join(VIDEO_SUFFIXES)}), e.g. -o edited.mp4")
    elif same_file(clip, out):
        problems.append(f"-o {out} is the input clip; writing it would destroy the input (choose another name)")
    else:
        problem = out_file_problem(out)
        if problem:
            problems.append(f"-o {problem}")
    if same_file(work, clip) or same_file(work, out) or (work.exists() and not work.is_dir()):
        problems.append(f"--work {work}: must be a folder (not the input or the output)")
    return problems


def check_edits(direction: List[str], strength: List[str], pca: Optional[str], text=None) -> tuple[list, list[str]]:
    """-d / -s / --pca without a model: (ramps, problems)."""
    from e4ecli.cli.edit import check_directions
    from e4ecli.edits.ramps import parse_ramp
    from e4ecli.edits.syntax import direction_kind

    def refuse(spec: str) -> str | None:
        if direction_kind(spec) == "styleflow":
            return (f"--direction {spec}: StyleFlow edits are not supported for videos yet (they need each frame's attributes); "
                    "use an InterFaceGAN, GANSpace or SeFa direction")
        return None

    return check_directions(direction, strength, parse_ramp, pca, text, count_hint="(in the same order)", example="-s 3 or -s 0:3",
                            refuse=refuse)


@app.command(
    "edit-video",
    epilog=(
        "Examples:\n\n"
        "  e4e edit-video talk.mp4 -o older.mp4 -d age -s 3                    # e4e pivots, edit, paste back, with the sound\n\n"
        "  e4e edit-video talk.mp4 -o smile.mp4 -d smile -s 0:2 --side-by-side  # ramp the strength over the clip; source | edit\n\n"
        "  e4e edit-video talk.mp4 -o out.mp4 -d age -s -3 --refine pti --refine-steps 20 --stitch   # STIT: PTI on all frames + stitching\n\n"
        "  e4e edit-video talk.mp4 -o out.mp4 -d age -s 3 --face 1 --center-sigma 0 --xy-sigma 0     # the 2nd face from the left, no smoothing\n\n"
        "Per-frame work goes to OUT.frames/ (or --work): a killed run resumes there, and a rerun with the same settings does nothing."
    ),
)
def edit_video_cmd(
    clip: Path = typer.Argument(..., help="The video (mp4, mov, mkv, webm, avi, gif).", show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="The edited video (same frame rate and frame count; the source's audio copied unchanged)."),
    direction: List[str] = typer.Option(..., "--direction", "-d", help="What to change, as `e4e edit -d` (age, smile, a file, ganspace:..., sefa:...); "
                                                                    "repeat to compose edits in order.", show_default=False),
    strength: List[str] = typer.Option([], "--strength", "-s", help=STRENGTH_HELP, show_default=False),
    pca: Optional[str] = typer.Option(None, "--pca", help="GANSpace PCA for ganspace:... directions (file or registered name)."),
    force: bool = typer.Option(False, "--force", help="Apply a registered direction even if it was found for another domain than the model's."),
    checkpoint: str = checkpoint_option("e4e checkpoint (encoder + generator): zoo name or file path."),
    refine: Refine = typer.Option(Refine.none, "--refine", help="pti: tune ONE generator on all frames at their e4e pivots (STIT; recommended)."),
    refine_steps: int = typer.Option(10, "--refine-steps", min=1, max=10000, help="PTI epochs: passes over every frame, one Adam step per batch."),
    stitch: bool = typer.Option(False, "--stitch/--no-stitch", help="Stitching tuning per frame (STIT): the band around the face matches the frame, "
                                                                   "so the edit blends without a seam."),
    stitch_steps: int = typer.Option(100, "--stitch-steps", min=0, max=10000, help="Most stitching steps per frame (stops early under the border threshold)."),
    mask: MaskKind = typer.Option(MaskKind.auto, "--mask", help="Stitching face mask: auto (the face parser when its weights are there, "
                                                               "else the landmark hull), parsing, landmarks."),
    side_by_side: bool = typer.Option(False, "--side-by-side", help="Write source | edit side by side."),
    work: Optional[Path] = typer.Option(None, "--work", help="Work folder for the per-frame files (default: OUT.frames/ beside OUT)."),
    face: Optional[int] = typer.Option(None, "--face", min=0, help="Follow the N-th face from the left in the first frame with faces "
                                                                  "(default: the largest)."),
    center_sigma: float = typer.Option(1.0, "--center-sigma", min=0.0, max=100.0, help="Smooth the crop centre over time: Gaussian sigma, frames (0: off)."),
    xy_sigma: float = typer.Option(3.0, "--xy-sigma", min=0.0, max=100.0, help="Smooth crop size + rotation: Gaussian sigma, frames (0: off)."),
    detector: Detector = typer.Option(Detector.face_alignment, "--detector", "-L", help=DETECTOR_HELP),
    feather: float = typer.Option(0.1, min=0.0, max=0.5, help="Paste-back: width of the soft edge, as a fraction of the aligned square's side."),
    batch_size: int = typer.Option(4, "--batch-size", "-b", min=1, help="Frames per forward pass."),
    device: str = device_option(),
    neutral: Optional[str] = neutral_option(),
    beta: float = beta_option(),
    clip_weights: Optional[Path] = clip_weights_option(),
    relevance: Optional[Path] = relevance_option(),
) -> None:
    """Edit the face in a video clip: smoothed alignment, e4e, PTI on all frames, edit, stitching, paste-back, with the sound.

    Frames where the face is not found pass through unedited (counted in the summary). Exit 0 when the clip was
    written, 1 when it was written from a damaged clip's first frames or nothing could be edited, 2 for bad options.
    """
    work = work if work is not None else out.with_name(out.name + ".frames")
    usage_or_die(check_files(clip, out, work))  # first, and without torch: a wrong file fails in a fraction of a second

    text = text_options(neutral, beta, clip_weights, relevance)
    ramps, problems = check_edits(direction, strength, pca, text)
    usage_or_die(problems)
    usage_or_die([checkpoint_problem(checkpoint)])  # the typos before the clip is probed (ffmpeg, a tenth of a second)
    from e4ecli.files.video import VideoError, probe

    try:
        info = probe(clip)
    except VideoError as e:
        die(str(e))
    from e4ecli.cli.common import locked_message
    from e4ecli.runs import OutputLocked, RunError, video_edit as clip_run

    try:
        job = clip_run.prepare(clip, out, work, lock=main_rank())  # the record: WORK/manifest.jsonl; the work folder locked by rank 0
    except OutputLocked as e:
        die(locked_message(e))
    except RunError as e:
        die(str(e))
    opts = dict(face=face, center_sigma=center_sigma, xy_sigma=xy_sigma, pti_steps=refine_steps if refine == Refine.pti else 0, stitch=stitch,
                stitch_steps=stitch_steps, mask=mask.value, feather=feather, side_by_side=side_by_side, batch_size=batch_size)
    settings = clip_run.request_settings(checkpoint, direction, [r.to_json() for r in ramps], pca=pca, detector=detector.value, out=out,
                                         **opts)
    if info.note and main_rank():
        console.print(f"[yellow]note:[/] {escape(info.note)}")
    if not info.has_audio and main_rank():
        console.print(f"[yellow]note:[/] {escape(str(clip))} has no audio stream: the output will be silent")
    if settings is not None and job.start(settings):  # up to date: answered before any model or detector loads
        record = job.record or {}
        job.close()
        if not main_rank():
            raise typer.Exit(EXIT_FAILED if record.get("stopped") else 0)
        report(out, info, clip, skipped=True, without_face=record.get("without_face") or [], stopped=record.get("stopped"))
    try:
        _run(job, settings, clip, info, out, work, direction, ramps, pca, force, checkpoint, refine_steps if refine == Refine.pti else 0, stitch,
             stitch_steps, mask.value, side_by_side, face, center_sigma, xy_sigma, detector.value, feather, batch_size, device, text=text)
    except KeyboardInterrupt:
        from e4ecli.files.guard import release_all

        release_all()
        console.print(f"interrupted: the finished frames are kept in {escape(str(work))}; rerun the same command to resume")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def main_rank() -> bool:
    """Rank 0, or no torchrun (read before the process group is joined)."""
    return os.environ.get("RANK", "0") == "0"


def report(out: Path, info, clip: Path, *, skipped: bool, without_face: list, stopped: str | None, frames: int = 0, edited: int = 0,
           notes: tuple = ()) -> None:
    """The end of a run: what was written (or that nothing had to be), the frames without the face; exits 1 when the clip was
    damaged part way, else 0."""
    if skipped:
        console.print(f"{escape(str(out))} is up to date (made with these settings); nothing to do")
    else:
        for note in notes:
            console.print(f"[yellow]note:[/] {escape(note)}")
        console.print(f"[green]wrote[/] {escape(str(out))}: {frames} frames at {float(info.fps):.4g} fps, {edited} edited, "
                      f"{len(without_face)} without the face (passed through unedited)"
                      + ("" if info.has_audio else ", no sound (the source has none)"))
    if without_face:
        shown = ", ".join(str(i) for i in without_face[:10]) + (" ..." if len(without_face) > 10 else "")
        console.print(f"frames without the face: {shown}")
    if stopped:
        console.print(f"[bold red]error:[/] {escape(stopped)}")
        raise typer.Exit(EXIT_FAILED)
    raise typer.Exit(0)


def _run(job, settings, clip, info, out, work, direction, ramps, pca, force, checkpoint, pti_steps, stitch, stitch_steps, mask_kind, side_by_side,
         face, center_sigma, xy_sigma, detector, feather, batch_size, device, text=None) -> None:
    from dataclasses import replace

    from rich.progress import Progress

    from e4ecli.cli.align import open_detector_or_die
    from e4ecli.cli.batch import ident_hash
    from e4ecli.cli.common import distributed_or_die, load_model, locked_message, progress_columns
    from e4ecli.cli.edit import resolve_edits
    from e4ecli.files.provenance import Settings
    from e4ecli.pipelines.video_align import FaceIndexOutOfRange, NoFaceInClip
    from e4ecli.pipelines.video_edit import Ramp, VideoEditOptions, edit_video
    from e4ecli.runs import Finished, OutputLocked, video_edit as clip_run

    dist, dev = distributed_or_die(device)  # under torchrun the frames are shared across the processes
    ckpt, ident = load_model(checkpoint)
    if ckpt.encoder is None:
        die(f"--checkpoint {checkpoint} holds only a generator; editing a video needs an e4e checkpoint with an encoder")
    if not ckpt.domain.is_face:
        die(f"edit-video aligns human faces; {checkpoint} is a {ckpt.domain.name} model")
    edits = resolve_edits(direction, ckpt, ident, pca, force=force, text=replace(text, device=str(dev)) if text else None)
    steps = []
    for i, edit in enumerate(edits):
        if ramps:
            steps.append((edit, ramps[i]))
        elif edit.default_strength is not None:
            steps.append((edit, Ramp(edit.default_strength, edit.default_strength)))
        else:
            die(f"--direction {edit.label} has no default strength; give --strength")
    opts = VideoEditOptions(face=face, center_sigma=center_sigma, xy_sigma=xy_sigma, pti_steps=pti_steps, stitch=stitch, stitch_steps=stitch_steps,
                            mask=mask_kind, feather=feather, side_by_side=side_by_side, batch_size=batch_size)
    nets = None
    if opts.pti_steps:
        from e4ecli.pipelines.refine import RefineOptions, describe_missing, load_loss_nets

        nets = load_loss_nets(RefineOptions("pti", steps=pti_steps, shared=True), dev, face=True)
        for line in describe_missing(nets):
            console.print(f"[yellow]note:[/] {escape(line)}")
    stitch_config = masker = None
    if stitch:
        from e4ecli.hub.checkpoints import CheckpointError
        from e4ecli.refine.masks import FaceMasker
        from e4ecli.refine.stitch import StitchConfig

        stitch_config = StitchConfig(steps=stitch_steps)
        try:
            masker = FaceMasker(mask_kind, device=dev)
        except CheckpointError as e:
            die(str(e))
        for k, line in enumerate((masker.note or "").splitlines()):
            console.print(("[yellow]note:[/] " if k == 0 else "  ") + escape(line))
        console.print(f"stitching with the {masker.kind} face mask")
    backend = open_detector_or_die(detector, device)
    if settings is None:  # not known before loading (e.g. a zoo checkpoint fetched just now): the pipeline's stages decide
        settings = clip_run.request_settings(checkpoint, direction, [r.to_json() for r in ramps], pca=pca, detector=detector, out=out,
                                             face=face, center_sigma=center_sigma, xy_sigma=xy_sigma, pti_steps=pti_steps, stitch=stitch,
                                             stitch_steps=stitch_steps, mask=mask_kind, feather=feather, side_by_side=side_by_side,
                                             batch_size=batch_size) or Settings("edit-video", decided_by="the pipeline's stages")
        job.start(settings)

    labels = {"track": "finding the face", "align": "aligning", "invert": "inverting", "pti": "tuning (PTI epochs)",
              "edit": "editing", "stitch": "editing + stitching", "encode": "encoding"}
    made: dict = {}
    with Progress(*progress_columns(), console=console, transient=False, disable=not dist.is_main) as bar:
        tasks: dict = {}

        def progress(stage: str, done: int, total):
            if stage not in tasks:
                tasks[stage] = bar.add_task(labels.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done)

        def make(_target: Path) -> dict:
            made["result"] = result = edit_video(clip, info, out, work, backend=backend, ckpt=ckpt, ckpt_id=ident_hash(ident), steps=steps,
                                                 opts=opts, device=dev, nets=nets, stitch_config=stitch_config, masker=masker,
                                                 progress=progress, dist=dist)
            return clip_run.result_fields(result)

        try:
            if dist.is_main:
                for ev in job.execute(make, atomic=False, errors=()):  # the pipeline writes the clip atomically itself
                    if isinstance(ev, Finished) and ev.stopped:  # the clip is written; only its record is missing
                        console.print(f"[yellow]warning:[/] {escape(ev.stopped)}")
            else:  # the other ranks edit their share of the frames; rank 0 writes the clip and its record
                make(out)
        except FaceIndexOutOfRange as e:
            die(f"--face {e.face}: the first frame with faces has only {e.found} (--face 0 to {e.found - 1}, numbered from the left)", EXIT_FAILED)
        except NoFaceInClip as e:
            die(str(e), EXIT_FAILED)
        except OutputLocked as e:
            die(locked_message(e))
    dist.close()
    result = made["result"]
    if not dist.is_main:
        raise typer.Exit(EXIT_FAILED if result.stopped else 0)
    if result.shares:
        console.print(f"frames shared by {len(result.shares)} processes: {', '.join(map(str, result.shares))} frames")
    report(out, info, clip, skipped=result.skipped, without_face=result.without_face, stopped=result.stopped, frames=result.frames,
           edited=result.edited, notes=tuple(result.notes))
