"""`e4e align`: photos -> FFHQ-aligned face crops (.png) with a JSON sidecar each."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from e4ecli.cli.app import app
from e4ecli.cli.common import DEVICE_HELP, die

MAX_TRANSFORM_SIZE = 16384


class Detector(str, Enum):
    face_alignment = "face-alignment"
    dlib = "dlib"


DETECTOR_HELP = ("Landmark detector: face-alignment (FAN; weights download once into the torch hub cache) or "
                 "dlib (offline; pip install 'e4ecli[dlib]'). face-alignment falls back to dlib when its "
                 "weights cannot be fetched.")


def open_detector_or_die(detector: str, device: str, workers: int = 0):
    """Start a landmark backend, printing the fallback note if any; exit 2 when none can run."""
    import os

    from e4ecli.cli.common import console, device_or_die, landmark_note
    from e4ecli.landmarks import LandmarkError, open_landmarks

    dev = str(device_or_die(device)) if detector == Detector.face_alignment.value else "cpu"
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    try:
        with console.status(f"starting the {detector} landmark detector"):
            return open_landmarks(detector, dev, threads=threads,
                                  notify=landmark_note)
    except LandmarkError as e:
        die(e)


def _numbered_outputs_or_die(items, out: Path) -> None:
    """--all-faces writes OUT/<key>_<k>.png/.json for an unknown number of faces k: refuse when an input
    inside OUT has such a name (it would be overwritten)."""
    import os
    import re

    keys = {it.key.casefold() for it in items}
    base = os.path.realpath(out)
    for it in items:
        real = os.path.realpath(it.source)
        if os.path.commonpath([base, real]) != base:
            continue
        m = re.fullmatch(r"(.+)_\d+\.(png|json)", Path(os.path.relpath(real, base)).as_posix(), re.IGNORECASE)
        if m and m.group(1).casefold() in keys:
            die(f"the output would overwrite the input {it.source}; choose an -o folder that does not hold the inputs")


@app.command(
    "align",
    epilog=(
        "Examples:\n\n"
        "  e4e align ./photos -o aligned/                       # FFHQ crops, 1024 px, 4x supersampled\n\n"
        "  e4e align group.jpg -o aligned/ --all-faces          # aligned/group_0.png, group_1.png, ... left to right\n\n"
        "  e4e align ./photos -o aligned/ --size 256 --supersample 1 --detector dlib   # the e4e repository's align_face\n\n"
        "  e4e align ./photos -o aligned/ --workers 4           # 4 processes detecting landmarks in parallel"
    ),
)
def align_cmd(
    inputs: List[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively).", show_default=False),
    out: Path = typer.Option(..., "-o", "--out",
                           help="Output folder: <name>.png + <name>.json (sidecar) per photo, mirroring the input tree, plus manifest.jsonl."),
    size: int = typer.Option(1024, min=8, help="Side of the aligned square, in pixels."),
    supersample: int = typer.Option(4, min=1, max=16,
                                   help="Resample the face at SUPERSAMPLE x size, then Lanczos down (4: the FFHQ dataset; 1: e4e's align_face)."),
    detector: Detector = typer.Option(Detector.face_alignment, "--detector", "-L", help=DETECTOR_HELP),
    all_faces: bool = typer.Option(False, "--all-faces", help="Write every face as <name>_<k>.png (k = 0, 1, ... left to right) instead of only the largest."),
    workers: int = typer.Option(0, min=0, help="Processes aligning in parallel (0: align in this process). Landmark detection on CPU is the bottleneck. "
                                             "At most one per CPU."),
    device: str = typer.Option("auto", help="For face-alignment: " + DEVICE_HELP),
    overwrite: bool = typer.Option(False, help="Redo every photo, even those an earlier run already aligned with the same settings "
                                               "(default: skip those; outputs made with other settings are always redone)."),
    face: Optional[int] = typer.Option(None, "--face", min=0, help="Videos: follow the N-th face from the left in the first frame with faces "
                                                                  "(default: the largest)."),
    center_sigma: float = typer.Option(1.0, "--center-sigma", min=0.0, max=100.0, help="Videos: smooth the crop centre over time, Gaussian sigma in "
                                                                                        "frames (0: off)."),
    xy_sigma: float = typer.Option(3.0, "--xy-sigma", min=0.0, max=100.0, help="Videos: smooth crop size + rotation over time, sigma in frames (0: off)."),
) -> None:
    """Crop and rotate faces the way FFHQ was made (eyes and mouth at fixed places), for inversion with FFHQ models.

    No face in a photo is reported for that file; the batch goes on and exits with code 1. A video (mp4, mov, mkv,
    webm, avi, gif) is read frame by frame and ONE face is followed through it: OUT/<clip>/<frame>.png + .json per frame
    with the face, the quad smoothed over time (--center-sigma, --xy-sigma; the sidecar keeps quad_raw too).
    """
    from e4ecli.cli.batch import Job, run_batch
    from e4ecli.cli.common import capped_workers, outputs_or_die, planned
    from e4ecli.files.kinds import IMAGE_EXTENSIONS, VIDEO_SUFFIXES

    extensions = set(IMAGE_EXTENSIONS) | set(VIDEO_SUFFIXES)
    workers = capped_workers(workers)
    problems = []
    if size * supersample > MAX_TRANSFORM_SIZE:
        problems.append(f"--size {size} x --supersample {supersample} = {size * supersample} px per side; keep it at most {MAX_TRANSFORM_SIZE}")

    def check_items(items) -> list[str]:
        from e4ecli.files.kinds import is_video
        from e4ecli.pipelines.align import face_key_clashes

        videos["any"] = any(is_video(it.source) for it in items)
        if videos["any"] and all_faces:
            return ["--all-faces is for photos; in a video one face is followed (--face N picks which)"]

        if not all_faces:
            outputs_or_die(items, planned(items, out, [".png", ".json"]))
            return []
        _numbered_outputs_or_die(items, out)
        found = face_key_clashes(items)
        lines = [f"{b.source} would overwrite the faces of {a.source} ({b.key}.png)" for a, b in found[:20]]
        if found:
            lines.append("with --all-faces, <name>_<k> outputs would collide with other inputs; rename them or use separate -o folders")
        return lines

    def work(job: Job):
        from e4ecli.files.provenance import Settings
        from e4ecli.pipelines.align import FaceAligner, align

        backend = open_detector_or_die(detector.value, device, workers)
        video = {"face": face, "center_sigma": center_sigma, "xy_sigma": xy_sigma}
        aligner = FaceAligner(backend, size=size, supersample=supersample, all_faces=all_faces, video=video)
        settings = Settings("align", detector=backend.name, size=size, supersample=supersample, all_faces=all_faces,
                            video=video if videos["any"] else None)
        return align(job.items, aligner, out, workers=workers, finished=job.start(settings, f"detector:{backend.name}"))

    videos = {"any": False}
    run_batch("align", inputs, out, extensions, work, device="cpu", precision="fp32", overwrite=overwrite,
              suffix="_0.png" if all_faces else ".png", usage=problems, check_items=check_items, distributed=False,
              empty="no images or videos found in the given inputs (looked for " + ", ".join(sorted(extensions)) + ")")
