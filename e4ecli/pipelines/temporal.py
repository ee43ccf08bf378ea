"""Temporal metrics of an edited clip against its source (`e4e eval OUT.mp4 --source CLIP.mp4`).

Both clips are streamed frame by frame (files.video), in step; they must have the same frame count and size.
On every source frame the face is found (the largest in the first frame with a face, then the detection
nearest the previous one) and its 68 landmarks give:
  - the FFHQ alignment (256 px) applied to BOTH frames (the edit is judged where the source's face is), whose
    identity embeddings feed TL-ID and TG-ID;
  - the face region for flicker: the landmarks' convex hull dilated by a tenth of the face's width.
Definitions in metrics.temporal. Memory: two frames of each clip plus one embedding per frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from e4ecli.metrics.temporal import FlickerMeter, tg_id, tl_id

ALIGN_SIZE = 256
REGION_DILATION = 0.1  # of the landmark hull's width


class ClipMismatch(ValueError):
    """The output and the source cannot be compared frame by frame; str() says why."""


@dataclass
class ClipReport:
    frames: int = 0
    frames_without_face: list[int] = field(default_factory=list)
    values: dict = field(default_factory=dict)


def _nearest(faces, previous):
    if previous is None:
        return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    centre = np.asarray(previous).mean(0)
    return min(faces, key=lambda f: float(np.linalg.norm(f.landmarks.mean(0) - centre)))


def face_region(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Landmarks (68, 2) in frame coordinates -> bool (H, W): their hull dilated by REGION_DILATION of its width."""
    from e4ecli.refine.masks import hull_mask

    width = float(np.ptp(landmarks[:, 0]))
    return hull_mask(landmarks, shape, radius=REGION_DILATION * width) > 0


def _aligned(frame: np.ndarray, plan) -> torch.Tensor:
    from PIL import Image

    from e4ecli.alignment import apply_alignment

    img = np.asarray(apply_alignment(Image.fromarray(frame), plan), dtype=np.float32)
    return torch.from_numpy(img).permute(2, 0, 1)[None] / 127.5 - 1


def clip_metrics(output: Path, source: Path, detect: Callable[[np.ndarray], list], features: Callable[[torch.Tensor], torch.Tensor],
                 *, on_frame: Callable[[int], None] | None = None) -> ClipReport:
    """detect: uint8 frame -> faces (landmarks.Face); features: aligned (1, 3, 256, 256) in [-1, 1] -> unit (1, D).

    Raises ClipMismatch when the clips differ in frame count or size, files.video errors for unreadable clips."""
    from e4ecli.alignment import AlignError, plan_alignment
    from e4ecli.files.video import iter_frames, probe

    out_info, src_info = probe(output), probe(source)
    if (out_info.width, out_info.height) != (src_info.width, src_info.height):
        raise ClipMismatch(f"{output} is {out_info.width}x{out_info.height} but {source} is {src_info.width}x{src_info.height}: "
                           "compare an edit with the clip it was made from")
    report = ClipReport()
    meter = FlickerMeter()
    out_feats: list[np.ndarray] = []
    src_feats: list[np.ndarray] = []
    previous = None
    out_iter, src_iter = iter_frames(output, out_info), iter_frames(source, src_info)
    sentinel = object()
    while True:
        out_frame, src_frame = next(out_iter, sentinel), next(src_iter, sentinel)
        if out_frame is sentinel or src_frame is sentinel:
            if out_frame is not src_frame:
                longer, shorter = (output, source) if src_frame is sentinel else (source, output)
                raise ClipMismatch(f"{longer} has more frames than {shorter} ({report.frames}): compare an edit with the clip it was made from")
            break
        t = report.frames
        faces = detect(src_frame)
        plan = None
        if faces:
            face = _nearest(faces, previous)
            try:
                plan = plan_alignment(face.landmarks, (src_frame.shape[1], src_frame.shape[0]), ALIGN_SIZE, 1)
            except AlignError:
                plan = None
        if plan is None:
            report.frames_without_face.append(t)
            meter.add(out_frame, src_frame, None)
            out_feats.append(None)
            src_feats.append(None)
        else:
            previous = face.landmarks
            meter.add(out_frame, src_frame, face_region(face.landmarks, src_frame.shape[:2]))
            with torch.no_grad():
                src_feats.append(features(_aligned(src_frame, plan))[0].double().numpy())
                out_feats.append(features(_aligned(out_frame, plan))[0].double().numpy())
        report.frames += 1
        if on_frame is not None:
            on_frame(t)
    dim = next((f.shape[0] for f in src_feats if f is not None), 1)
    nan = np.full(dim, np.nan)
    out_arr = np.stack([nan if f is None else f for f in out_feats]) if out_feats else np.zeros((0, dim))
    src_arr = np.stack([nan if f is None else f for f in src_feats]) if src_feats else np.zeros((0, dim))
    report.values = {"tl_id": tl_id(out_arr, src_arr), "tg_id": tg_id(out_arr, src_arr), **meter.report()}
    return report
