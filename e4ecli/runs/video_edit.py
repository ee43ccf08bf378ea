"""`e4e edit-video` as a single-output run (e4ecli.runs.output.OutputRun): what makes the edited clip is known
before any model loads, so an identical rerun is answered from the record without opening the checkpoint or the
face detector.

    job = prepare(clip, out, work)                                  # RunError / OutputLocked: nothing created
    settings = request_settings(checkpoint_path, ["age"], [(-3, -3)], detector="dlib", ...)
    if settings is None or not job.start(settings, ident):          # None: cannot be told without the models
        ckpt = load_checkpoint(...)                                  # ... then the pipeline, inside job.run(make)
        job.run(lambda _: result_fields(edit_video(clip, info, out, work, ...)), atomic=False, errors=())

The record is a line of WORK/manifest.jsonl keyed by the clip's path relative to WORK, with the clip's size and
mtime and the output file's own (a replaced output is redone). Inside, pipelines.video_edit keeps its per-stage
fingerprints (a changed strength redoes the edits, not the alignment or the latents).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

from e4ecli.runs.output import OutputRun


def prepare(clip: Path, out: Path, work: Path, lock: bool = True) -> OutputRun:
    """The run of one edited clip; its record in WORK/manifest.jsonl (RunError / OutputLocked as OutputRun.prepare)."""
    return OutputRun.prepare("edit-video", out, [clip], records=work, require_record=False, stamp_input=True, stamp_output=True, lock=lock)


def _file(path: str | Path | None) -> dict | None:
    from e4ecli.files.provenance import input_stamp

    if path is None:
        return None
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError):
        return None
    return {"path": real, "stamp": input_stamp(real)}


def _is_file(path: str | Path) -> bool:
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def spec_settings(spec: str, pca: str | None) -> dict | None:
    """What a --direction spec reads, without reading it: the spec, the files it names (path, size, mtime) and a
    registered entry's published checksum and local copy. None when that cannot be told without a model or a
    download (a registered file not on disk, a text: prompt's CLIP weights)."""
    from e4ecli.hub import directions as hub

    spec = spec.strip()
    head = spec.partition(":")[0]
    out: dict[str, Any] = {"spec": spec}
    if head == "text" and not _is_file(spec):
        return None
    if _is_file(spec):
        out["file"] = _file(spec)
    elif (row := re.fullmatch(r"(.+\.npz):(\d+)", spec, re.IGNORECASE)) and _is_file(row.group(1)):
        out["file"] = _file(row.group(1))
    elif head not in ("ganspace", "sefa", "stylespace", "styleflow"):
        try:
            entry = hub.lookup(spec)
        except hub.DirectionError:
            return None
        local = hub.local_copy(entry) if entry.has_file else None
        if entry.has_file and local is None:
            return None
        out["registered"] = {"sha256": entry.sha256, "styles": entry.styles, "strength": entry.strength, "file": _file(local)}
    if head == "ganspace" and pca is not None:
        if _is_file(pca):
            out["pca"] = _file(pca)
        else:
            try:
                entry = hub.lookup(str(pca))
            except hub.DirectionError:
                return None
            local = hub.local_copy(entry) if entry.has_file else None
            if local is None:
                return None
            out["pca"] = {"sha256": entry.sha256, "file": _file(local)}
    return out


def local_checkpoint(spec: str | Path) -> Path | None:
    """A checkpoint file or a zoo name already on disk, without fetching or opening it (None: not here)."""
    from e4ecli.hub import zoo

    if _is_file(Path(spec).expanduser()):
        return Path(spec).expanduser()
    try:
        entry = zoo.lookup(str(spec))
    except zoo.ZooError:
        return None
    return Path(entry.path) if _is_file(entry.path) else None


def request_settings(checkpoint: str | Path, directions: Sequence[str], ramps: Sequence[tuple[float, float]], *, pca: str | None,
                     detector: str, out: Path, face: int | None, center_sigma: float, xy_sigma: float, pti_steps: int, stitch: bool,
                     stitch_steps: int, mask: str, feather: float, side_by_side: bool, batch_size: int) -> Any:
    """The Settings (e4ecli.files.provenance) of an edited clip, from what was asked -- no model, no detector
    loaded; None when they cannot be told that way (then the run decides after loading, from the pipeline's own
    fingerprints). `checkpoint`: a file or a zoo name on disk (its content id is remembered per file)."""
    from e4ecli.files.provenance import Settings
    from e4ecli.hub.file_ids import file_id

    path = local_checkpoint(checkpoint)
    if path is None:
        return None
    if stitch and mask == "auto":  # the face parser's weights being there or not decides the mask
        return None
    specs = [spec_settings(s, pca) for s in directions]
    if any(s is None for s in specs):
        return None
    return Settings("edit-video", checkpoint=file_id(path), directions=specs, strengths=[list(r) for r in ramps] or None,
                    detector=detector, out=os.path.abspath(out), face=face, center_sigma=float(center_sigma), xy_sigma=float(xy_sigma),
                    pti_steps=pti_steps or None, stitch={"steps": stitch_steps, "mask": mask} if stitch else None, feather=float(feather),
                    side_by_side=side_by_side, batch_size=batch_size)


def result_fields(result) -> dict:
    """The manifest fields of a pipelines.video_edit.VideoEditResult (shown again by a rerun that skips)."""
    return {"frames": result.frames, "edited": result.edited, "without_face": list(result.without_face), "stopped": result.stopped}


__all__ = ["local_checkpoint", "prepare", "request_settings", "result_fields", "spec_settings"]
