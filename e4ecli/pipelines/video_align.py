"""Align the face of a video clip, frame by frame, with the quad smoothed over time (STIT's recipe).

Two streaming passes over the clip (memory flat in its length; only 68 landmarks per frame are kept):

1. track: landmarks on every frame; ONE face is followed through the clip: the largest in the first
   frame where a face is found (or the N-th from the left with `face=N`), then in each later frame the
   detection nearest the previous one (a detection further than half the face's size away is not it:
   the frame counts as one without the face). Written to FOLDER/track.json.
2. align: each frame's quad is parametrised as STIT does, centre c and half-side vectors x, y; c is
   smoothed with a Gaussian of `center_sigma` frames and x, y with one of `xy_sigma` frames (STIT's
   defaults 1.0 and 3.0; 0 turns each off), over each run of consecutive frames with the face. Frames
   with the face are written as FOLDER/<frame>.png (6 digits) with the sidecar FOLDER/<frame>.json, which
   holds `quad_raw` (that frame's own quad), `quad` (the smoothed one, the one used), `frame`, `fps`
   and everything paste-back needs (`source_from_output`, `output_size`, ...). FOLDER/clip.json, written
   last, sums the clip up (frames, frames without the face, where a damaged clip stopped).

Frames are only read, never changed; frames without the face have no outputs (a video edit passes them
through unedited). A rerun with the same settings skips frames already written.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from e4ecli.alignment import AlignError, apply_alignment, face_quad, plan_quad, quad_frame, quad_from_frame
from e4ecli.files.batch import read_json, save_image, write_text
from e4ecli.files.provenance import input_stamp, stable_hash
from e4ecli.files.video import TruncatedVideo, VideoInfo, iter_frames

SIDECAR_VERSION = 1  # the photo sidecar's (pipelines.align), plus the video fields
CENTER_SIGMA = 1.0
XY_SIGMA = 3.0
TRACK_FILE = "track.json"
CLIP_FILE = "clip.json"


class NoFaceInClip(AlignError):
    """No frame of the clip has a face (or not the one asked for)."""


class FaceIndexOutOfRange(NoFaceInClip):
    """The `face`-th face from the left was asked for and the first frame with faces has only `found`."""

    def __init__(self, face: int, found: int):
        self.face, self.found = face, found
        super().__init__(f"face {face} asked for: the first frame with faces has only {found} (0 to {found - 1}, numbered from the left)")


def sidecar_text(info: dict) -> str:
    """JSON with one top-level key per line, as pipelines.align writes photo sidecars."""
    return "{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in info.items()) + "\n}\n"


def frame_name(index: int) -> str:
    return f"{index:06d}"


@dataclass
class Track:
    """landmarks[i]: (68, 2) of the tracked face in frame i, or None; faces_found[i]: detections in frame i."""

    frames: int
    landmarks: list[np.ndarray | None]
    faces_found: list[int]
    stopped: str | None = None  # a damaged clip: where and why reading stopped
    first: int | None = None  # the first frame with the face

    def to_json(self) -> dict:
        return {"frames": self.frames, "stopped": self.stopped, "first": self.first, "faces_found": self.faces_found,
                "landmarks": [None if lm is None else np.round(lm, 3).tolist() for lm in self.landmarks]}

    @classmethod
    def from_json(cls, d: dict) -> "Track":
        return cls(int(d["frames"]), [None if lm is None else np.asarray(lm, dtype=np.float64) for lm in d["landmarks"]],
                   [int(n) for n in d["faces_found"]], d.get("stopped"), d.get("first"))


def _centre_and_size(landmarks) -> tuple[np.ndarray, float]:
    quad, qsize = face_quad(landmarks)
    return quad.mean(axis=0), qsize


def pick_first(faces: Sequence, face: int | None) -> Any:
    """The face to follow in the first frame with faces: the largest, or the face-th from the left."""
    usable = []
    for f in faces:
        try:
            usable.append((f, *_centre_and_size(f.landmarks)))
        except AlignError:
            continue
    if not usable:
        return None
    if face is None:
        return max(usable, key=lambda u: u[2])[0]
    ordered = sorted(usable, key=lambda u: float(u[1][0]))
    if face >= len(ordered):
        raise FaceIndexOutOfRange(face, len(ordered))
    return ordered[face][0]


def pick_next(faces: Sequence, previous: np.ndarray) -> Any:
    """The detection nearest the previous landmarks' centre, if it is within half the previous face's size."""
    c0, size0 = _centre_and_size(previous)
    best, best_d = None, None
    for f in faces:
        try:
            c, _ = _centre_and_size(f.landmarks)
        except AlignError:
            continue
        d = float(np.hypot(*(c - c0)))
        if best_d is None or d < best_d:
            best, best_d = f, d
    if best is None or best_d > 0.5 * size0:
        return None
    return best


def track_faces(path: Path, info: VideoInfo, backend, face: int | None = None, on_frame: Callable[[int], None] | None = None) -> Track:
    """Pass 1: detect landmarks on every frame and follow one face (module docstring)."""
    landmarks: list[np.ndarray | None] = []
    found: list[int] = []
    previous = None
    first = None
    stopped = None
    frames = iter_frames(path, info)
    try:
        for i, frame in enumerate(frames):
            faces = backend.detect(frame)
            found.append(len(faces))
            chosen = pick_first(faces, face) if previous is None else pick_next(faces, previous)
            if chosen is not None:
                previous = np.asarray(chosen.landmarks, dtype=np.float64)
                first = i if first is None else first
            landmarks.append(None if chosen is None else previous.copy())
            if on_frame is not None:
                on_frame(i)
    except TruncatedVideo as e:
        stopped = str(e)
    finally:
        frames.close()
    return Track(len(landmarks), landmarks, found, stopped, first)


def runs(present: Sequence[bool]) -> list[tuple[int, int]]:
    """[start, stop) of each run of consecutive True."""
    out, start = [], None
    for i, p in enumerate(list(present) + [False]):
        if p and start is None:
            start = i
        elif not p and start is not None:
            out.append((start, i))
            start = None
    return out


def smooth_quads(landmarks: Sequence[np.ndarray | None], center_sigma: float = CENTER_SIGMA, xy_sigma: float = XY_SIGMA
                 ) -> tuple[list[np.ndarray | None], list[np.ndarray | None]]:
    """-> (raw quads, smoothed quads), (4, 2) per frame (None without the face).

    Each frame's quad as centre c and half-side vectors x, y (alignment.quad_frame); c filtered over time
    with a Gaussian of center_sigma frames, x and y with one of xy_sigma frames (scipy's gaussian_filter1d,
    reflecting at the ends of each run of frames with the face); 0 leaves that part as it is."""
    from scipy.ndimage import gaussian_filter1d

    n = len(landmarks)
    raw: list[np.ndarray | None] = [None] * n
    smooth: list[np.ndarray | None] = [None] * n
    params: list[tuple | None] = [None] * n
    for i, lm in enumerate(landmarks):
        if lm is None:
            continue
        try:
            params[i] = quad_frame(lm)
        except AlignError:
            continue
        raw[i] = quad_from_frame(*params[i])
    for start, stop in runs([p is not None for p in params]):
        c = np.stack([params[i][0] for i in range(start, stop)])
        x = np.stack([params[i][1] for i in range(start, stop)])
        y = np.stack([params[i][2] for i in range(start, stop)])
        if center_sigma > 0:
            c = gaussian_filter1d(c, center_sigma, axis=0, mode="reflect")
        if xy_sigma > 0:
            x = gaussian_filter1d(x, xy_sigma, axis=0, mode="reflect")
            y = gaussian_filter1d(y, xy_sigma, axis=0, mode="reflect")
        for k, i in enumerate(range(start, stop)):
            smooth[i] = quad_from_frame(c[k], x[k], y[k])
    return raw, smooth


def second_difference_energy(quads: Sequence[np.ndarray | None]) -> float:
    """Mean squared second difference of the quads' corners over consecutive frames (jitter)."""
    q = [np.asarray(v) for v in quads if v is not None]
    if len(q) < 3:
        return 0.0
    a = np.stack(q)
    return float(np.mean((a[2:] - 2 * a[1:-1] + a[:-2]) ** 2))


@dataclass
class ClipAlignment:
    """What align_clip made: per frame with the face, its aligned image and sidecar paths."""

    folder: Path
    frames: int
    with_face: list[int]
    without_face: list[int]
    stopped: str | None
    written: int = 0
    skipped: int = 0
    summary: dict = field(default_factory=dict)

    def image(self, i: int) -> Path:
        return self.folder / f"{frame_name(i)}.png"

    def sidecar(self, i: int) -> Path:
        return self.folder / f"{frame_name(i)}.json"


def settings_id(info: VideoInfo, detector: str, face: int | None, size: int, supersample: int, center_sigma: float, xy_sigma: float) -> tuple[str, str]:
    """(the track's fingerprint, the aligned frames' fingerprint): what changes them."""
    track = stable_hash({"input": input_stamp(info.path), "detector": detector, "face": face})
    frames = stable_hash({"track": track, "size": size, "supersample": supersample, "center_sigma": float(center_sigma), "xy_sigma": float(xy_sigma)})
    return track, frames


def align_clip(path: Path, info: VideoInfo, backend, folder: Path, *, size: int = 256, supersample: int = 1, face: int | None = None,
               center_sigma: float = CENTER_SIGMA, xy_sigma: float = XY_SIGMA, on_frame: Callable[[str, int], None] | None = None,
               overwrite: bool = False) -> ClipAlignment:
    """Track, smooth and align the clip into `folder` (module docstring); resumes and skips finished work.

    Raises NoFaceInClip when no frame has the face (nothing is written but the track)."""
    folder = Path(folder)
    track_id, frames_id = settings_id(info, backend.name, face, size, supersample, center_sigma, xy_sigma)
    done = read_json(folder / CLIP_FILE)
    if not overwrite and done is not None and done.get("settings_id") == frames_id and all(
            (folder / f"{frame_name(i)}{s}").exists() for i in done.get("with_face", []) for s in (".png", ".json")):
        return ClipAlignment(folder, done["frames"], done["with_face"], done["without_face"], done.get("stopped"), 0, len(done["with_face"]), done)
    folder.mkdir(parents=True, exist_ok=True)
    saved = read_json(folder / TRACK_FILE)
    if not overwrite and saved is not None and saved.get("settings_id") == track_id:
        track = Track.from_json(saved)
    else:
        track = track_faces(path, info, backend, face, on_frame=(lambda i: on_frame("track", i)) if on_frame else None)
        write_text(folder / TRACK_FILE, json.dumps(dict(track.to_json(), settings_id=track_id)) + "\n")
    raw, smooth = smooth_quads(track.landmarks, center_sigma, xy_sigma)
    with_face = [i for i, q in enumerate(smooth) if q is not None]
    without = [i for i, q in enumerate(smooth) if q is None]
    if not with_face:
        raise NoFaceInClip(f"{path}: no face found in any of its {track.frames} frames ({backend.name} detector)"
                           + (f" ({track.stopped})" if track.stopped else ""))
    # frames from an earlier run with other settings are replaced; finished ones with these settings kept
    for p in folder.glob("[0-9]*.json"):
        d = read_json(p)
        if overwrite or d is None or d.get("settings_id") != frames_id:
            p.unlink(missing_ok=True)
            p.with_suffix(".png").unlink(missing_ok=True)
    base = {"version": SIDECAR_VERSION, "source": os.path.abspath(path), "source_kind": "video", "detector": backend.name,
            "fps": float(info.fps), "fps_exact": str(info.fps), "frames": track.frames, "supersample": supersample,
            "center_sigma": float(center_sigma), "xy_sigma": float(xy_sigma)}
    written = skipped = 0
    frames = iter_frames(path, info)
    try:
        for i, frame in enumerate(frames):
            if i >= track.frames:
                break
            q = smooth[i]
            if q is None:
                continue
            png, side = folder / f"{frame_name(i)}.png", folder / f"{frame_name(i)}.json"
            if png.exists() and side.exists():
                skipped += 1
                continue
            h, w = frame.shape[:2]
            try:
                plan = plan_quad(q, (w, h), size, supersample)
            except AlignError:
                continue
            from PIL import Image

            image = apply_alignment(Image.fromarray(frame), plan)
            save_image(png, np.asarray(image))
            sidecar = dict(base, frame=i, faces_found=track.faces_found[i], landmarks=np.round(track.landmarks[i], 3).tolist(),
                           quad_raw=raw[i].tolist(), **plan.to_json(), output=png.name, settings_id=frames_id)
            write_text(side, sidecar_text(sidecar))
            written += 1
            if on_frame is not None:
                on_frame("align", i)
    except TruncatedVideo:
        pass  # the track pass saw it too: track.stopped
    finally:
        frames.close()
    summary = {"source": os.path.abspath(path), "frames": track.frames, "fps": float(info.fps), "fps_exact": str(info.fps),
               "with_face": with_face, "without_face": without, "stopped": track.stopped, "first_face": track.first,
               "center_sigma": float(center_sigma), "xy_sigma": float(xy_sigma), "detector": backend.name, "size": size,
               "jitter_raw": second_difference_energy(raw), "jitter": second_difference_energy(smooth), "settings_id": frames_id}
    write_text(folder / CLIP_FILE, json.dumps(summary) + "\n")
    return ClipAlignment(folder, track.frames, with_face, without, track.stopped, written, skipped, summary)


