"""Align faces in photos the FFHQ way: OUT/<key>.png plus the sidecar OUT/<key>.json.

With `all_faces`, every face is written as OUT/<key>_<k>.png / .json, k = 0, 1, ... from left to
right; otherwise only the largest face (by quad size) as OUT/<key>.png / .json.

The sidecar (JSON) holds what is needed to paste an edited face back into the photo: the source
path and size, its EXIF orientation (coordinates refer to the photo after that orientation is
applied), the detector, the 68 landmarks, the quad, the shrink/crop/pad parameters, the output
and transform sizes and `source_from_output`, the (2, 3) affine map from output continuous
coordinates to source continuous coordinates (see e4ecli.alignment).
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image

from e4ecli.alignment import AlignError, AlignPlan, apply_alignment, plan_alignment
from e4ecli.files.batch import Item, output_path, save_image, write_text
from e4ecli.files.images import ImageError, load_rgb
from e4ecli.landmarks import Face, LandmarkBackend
from e4ecli.pipelines.common import Finished, Result

SIDECAR_VERSION = 1


class NoFaceError(AlignError):
    """The detector found no face in the photo."""


@dataclass
class AlignedFace:
    """One aligned face: image is output_size x output_size RGB; info is its sidecar."""

    image: Image.Image
    info: dict[str, Any]


def exif_orientation(path: Path) -> int:
    """The EXIF orientation tag of an image file (1: none or unreadable)."""
    try:
        with Image.open(path) as im:
            value = int(im.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 -- the pixels were decoded already; the tag is informational
        return 1
    return value if 1 <= value <= 8 else 1


def choose_faces(faces: Sequence[Face], source_size: tuple[int, int], size: int, supersample: int,
                 all_faces: bool) -> list[tuple[Face, AlignPlan]]:
    """The largest face (by quad size), or every face ordered left to right by quad centre.
    Faces whose landmarks give no usable quad (degenerate, outside the photo) are left out."""
    planned = []
    for f in faces:
        try:
            planned.append((f, plan_alignment(f.landmarks, source_size, size, supersample)))
        except AlignError:
            continue
    if not planned:
        return []
    if all_faces:
        return sorted(planned, key=lambda fp: float(fp[1].quad_source[:, 0].mean()))
    return [max(planned, key=lambda fp: fp[1].qsize)]


class FaceAligner:
    """Picklable callable: image file -> list of AlignedFace (raises ImageError / AlignError).

    size: output side; supersample: transform at size * supersample, then Lanczos down.
    """

    def __init__(self, backend: LandmarkBackend, size: int = 1024, supersample: int = 4, all_faces: bool = False,
                 video: dict | None = None):
        if size < 1 or supersample < 1:
            raise ValueError("size and supersample must be positive")
        self.backend, self.size, self.supersample, self.all_faces = backend, size, supersample, all_faces
        self.video = video or {}  # for video inputs: face, center_sigma, xy_sigma (pipelines.video_align)

    def __call__(self, path: Path) -> list[AlignedFace]:
        path = Path(path)
        image = load_rgb(path)
        faces = self.backend.detect(np.asarray(image), source=path)
        chosen = choose_faces(faces, image.size, self.size, self.supersample, self.all_faces)
        if not chosen:
            raise NoFaceError(f"no face found ({self.backend.name} detector, {image.width}x{image.height} image)")
        base = {"version": SIDECAR_VERSION, "source": os.path.abspath(path), "orientation": exif_orientation(path),
                "detector": self.backend.name, "faces_found": len(faces), "supersample": self.supersample}
        out = []
        for k, (face, plan) in enumerate(chosen):
            info = dict(base, face=k if self.all_faces else None, faces_written=len(chosen),
                        landmarks=face.landmarks.tolist(), box=list(face.box), score=face.score, **plan.to_json())
            out.append(AlignedFace(apply_alignment(image, plan), info))
        return out


def face_keys(key: str, n: int, all_faces: bool) -> list[str]:
    return [f"{key}_{k}" for k in range(n)] if all_faces else [key]


def face_key_clashes(items: Sequence[Item]) -> list[tuple[Item, Item]]:
    """With all_faces, pairs (a, b) where b's outputs <key>.* would overwrite a's face outputs <key>_<k>.*."""
    import re

    by_key = {it.key.casefold(): it for it in items}
    clashes = []
    for it in items:
        m = re.fullmatch(r"(.+)_\d+", it.key.casefold())
        if m and m.group(1) in by_key:
            clashes.append((by_key[m.group(1)], it))
    return clashes


def is_video(path: Path) -> bool:
    from e4ecli.files.video import is_video as _is_video

    return _is_video(path)


def clip_summary(item: Item, out_dir: Path) -> Path:
    """A video input's outputs go to OUT/<key>/<frame>.png|.json; OUT/<key>/clip.json marks it finished."""
    return out_dir / item.key / "clip.json"


def finished_outputs(item: Item, out_dir: Path, all_faces: bool) -> list[Path] | None:
    """The outputs of a finished earlier run for item, or None when it still has work to do."""
    if is_video(item.source):
        summary = clip_summary(item, out_dir)
        return [summary] if summary.exists() else None
    if not all_faces:
        outs = [output_path(out_dir, item.key, ".png"), output_path(out_dir, item.key, ".json")]
        return outs if all(p.exists() for p in outs) else None
    first = output_path(out_dir, item.key + "_0", ".json")
    try:
        n = int(json.loads(first.read_text(encoding="utf-8"))["faces_written"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    outs = [output_path(out_dir, k, s) for k in face_keys(item.key, n, True) for s in (".png", ".json")]
    return outs if n >= 1 and all(p.exists() for p in outs) else None


def sidecar_text(info: dict[str, Any]) -> str:
    """JSON with one top-level key per line (arrays kept on their line)."""
    body = ",\n".join(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in info.items())
    return "{\n" + body + "\n}\n"


def write_faces(item: Item, faces: Sequence[AlignedFace], out_dir: Path, all_faces: bool) -> list[Path]:
    """PNG then JSON per face, each atomically (the JSON marks a face as finished)."""
    outs: list[Path] = []
    for key, face in zip(face_keys(item.key, len(faces), all_faces), faces):
        png, side = output_path(out_dir, key, ".png"), output_path(out_dir, key, ".json")
        save_image(png, np.asarray(face.image))
        write_text(side, sidecar_text(dict(face.info, output=png.name)))
        outs += [png, side]
    return outs


def align_video_item(item: Item, aligner: FaceAligner, out_dir: Path) -> Result:
    """Align one clip (pipelines.video_align): OUT/<key>/<frame>.png|.json and OUT/<key>/clip.json."""
    from e4ecli.files.video import VideoError, probe
    from e4ecli.pipelines.video_align import align_clip

    try:
        info = probe(item.source)
        done = align_clip(item.source, info, aligner.backend, out_dir / item.key, size=aligner.size, supersample=aligner.supersample,
                          **aligner.video)
    except (VideoError, AlignError) as e:
        return Result(item, "failed", error=str(e).removeprefix(f"{item.source}: "))
    except OSError as e:
        return Result(item, "failed", error=f"cannot write output: {e}")
    extra = {"frames": done.frames, "with_face": len(done.with_face), "without_face": len(done.without_face)}
    if info.note:
        extra["note"] = info.note
    if done.stopped:
        return Result(item, "failed", [clip_summary(item, out_dir)], error=f"{done.stopped.removeprefix(f'{item.source}: ')}; "
                      f"{len(done.with_face)} aligned", extra=extra)
    return Result(item, "ok", [clip_summary(item, out_dir)], extra=extra)


def align_item(item: Item, aligner: FaceAligner, out_dir: Path) -> Result:
    """Align one photo (or clip) and write its outputs; every problem becomes a failed Result."""
    if is_video(item.source):
        return align_video_item(item, aligner, out_dir)
    try:
        faces = aligner(item.source)
    except (ImageError, AlignError) as e:
        return Result(item, "failed", error=str(e))
    except Exception as e:  # noqa: BLE001 -- one bad file must never stop the batch
        return Result(item, "failed", error=f"{type(e).__name__}: {e}")
    try:
        outs = write_faces(item, faces, out_dir, aligner.all_faces)
    except OSError as e:
        return Result(item, "failed", error=f"cannot write output: {e}")
    return Result(item, "ok", outs)


_WORKER: dict[str, Any] = {}


def _init_worker(aligner: FaceAligner, out_dir: Path) -> None:
    _WORKER["aligner"], _WORKER["out_dir"] = aligner, out_dir


def _work(item: Item) -> Result:
    return align_item(item, _WORKER["aligner"], _WORKER["out_dir"])


def align(items: Sequence[Item], aligner: FaceAligner, out_dir: Path, *, workers: int = 0,
          finished: Finished | None = None) -> Iterator[Result]:
    """Yield one Result per item: skipped ones first, then in order of completion.

    workers > 0: that many processes (spawned, each loading its own landmark model).
    finished: see pipelines.common.Finished (None: redo every item)."""
    todo: list[Item] = []
    for it in items:
        done = finished_outputs(it, out_dir, aligner.all_faces) if finished is not None else None
        if done is not None and finished(it, done):
            yield Result(it, "skipped", done)
        else:
            todo.append(it)
    if workers <= 0 or len(todo) <= 1:
        for it in todo:
            yield align_item(it, aligner, out_dir)
        return
    pool = ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=get_context("spawn"),
                               initializer=_init_worker, initargs=(aligner, out_dir))
    try:
        futures = {pool.submit(_work, it): it for it in todo}
        for fut in as_completed(futures):
            try:
                yield fut.result()
            except Exception as e:  # noqa: BLE001 -- a worker that died (e.g. killed for memory)
                yield Result(futures[fut], "failed", error=f"worker process failed: {type(e).__name__}: {e}")
    finally:  # interrupted or done: never start queued items after the consumer stopped
        pool.shutdown(wait=True, cancel_futures=True)
