"""Face masks of aligned crops, for stitching tuning (`refine.stitch`).

Two kinds, and every result says which it is:
  parsing    the BiSeNet face parser (face-parsing.PyTorch's `79999_iter.pth`, zoo name `face_parsing`), as STIT:
             the crop resized to 512 px, ImageNet-normalised; every pixel whose class is not background, cloth or
             hat is face (skin, brows, eyes, glasses, ears, earrings, nose, mouth, lips, neck, hair)
  landmarks  the convex hull of the 68 landmarks (dlib / FAN, from the alignment sidecar) mapped into the crop,
             filled and dilated by `LANDMARK_DILATION` pixels of a 1024 px crop (the hull stops at the brows;
             the dilation reaches into the forehead)

`FaceMasker("auto")` uses the parser when its weights are there or can be fetched, else the landmark hull
(with a note saying why); "parsing" insists on the parser, "landmarks" never loads it.
Masks are float32 (S, S) in {0, 1} at the crop's resolution.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

MASK_KINDS = ("auto", "parsing", "landmarks")
DEFAULT_PARSER = "face_parsing"  # the zoo name of 79999_iter.pth
LANDMARK_DILATION = 40  # pixels at 1024 px


@dataclass
class FaceMask:
    mask: np.ndarray  # float32 (S, S), 1 on the face
    kind: str  # "parsing" or "landmarks"


def landmarks_in_crop(landmarks, source_from_output) -> np.ndarray:
    """(68, 2) photo pixel-index landmarks -> crop pixel-index coordinates, through the sidecar's
    `source_from_output` (2, 3) affine (photo continuous = A @ [u, v, 1])."""
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    a = np.asarray(source_from_output, dtype=np.float64).reshape(2, 3)
    uv = np.linalg.solve(a[:, :2], (pts + 0.5 - a[:, 2]).T).T
    return uv - 0.5


def convex_hull(points) -> np.ndarray:
    """Andrew's monotone chain: (N, 2) -> the hull's vertices in order, (K, 2)."""
    pts = sorted({(float(x), float(y)) for x, y in np.asarray(points, dtype=np.float64)})
    if len(pts) < 3:
        return np.asarray(pts)

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def half(seq):
        out: list = []
        for p in seq:
            while len(out) >= 2 and cross(out[-2], out[-1], p) <= 0:
                out.pop()
            out.append(p)
        return out[:-1]

    return np.asarray(half(pts) + half(pts[::-1]))


def hull_mask(points, size: int | tuple[int, int], dilation: float = LANDMARK_DILATION, *, radius: float | None = None) -> np.ndarray:
    """Points in pixel-index coordinates -> their convex hull filled and dilated by a disc, float32 (H, W).

    size: S for an S x S crop, or (H, W); the disc's radius is `dilation` pixels of a 1024 px crop scaled to S
    (`radius` in pixels overrides it)."""
    from PIL import Image, ImageDraw

    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    hull = convex_hull(points)
    img = Image.new("L", (w, h), 0)
    if len(hull) >= 3:
        ImageDraw.Draw(img).polygon([(float(x) + 0.5, float(y) + 0.5) for x, y in hull], fill=1)
    mask = np.asarray(img, dtype=np.float32)
    radius = dilation * w / 1024 if radius is None else radius
    if radius >= 0.5 and mask.any():
        import torch
        import torch.nn.functional as F

        r = int(np.ceil(radius))
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = max(0, ys.min() - r), min(h, ys.max() + r + 1), max(0, xs.min() - r), min(w, xs.max() + r + 1)
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        disc = torch.from_numpy(((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float32))[None, None]
        m = F.conv2d(torch.from_numpy(np.ascontiguousarray(mask[y0:y1, x0:x1]))[None, None], disc, padding=r)
        mask[y0:y1, x0:x1] = (m[0, 0].numpy() > 0.5).astype(np.float32)
    return mask


def parsing_mask(parser, crop: np.ndarray) -> np.ndarray:
    """BiSeNet face region of an aligned crop uint8 (H, W, 3) -> float32 (H, W) (STIT's classes)."""
    import torch
    import torch.nn.functional as F

    from e4ecli.models.bisenet import face_region, normalise

    device = next(parser.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(crop)).to(device).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        face = face_region(parser(normalise(x))).float()[:, None]
    face = F.interpolate(face, size=crop.shape[:2], mode="nearest")
    return face[0, 0].cpu().numpy().astype(np.float32)


class FaceMasker:
    """kind: auto | parsing | landmarks; parser: a file or zoo name of the BiSeNet weights.

    `note` says in one line why "auto" fell back to landmarks (None when it did not); `reason` is the full message. Calling it with a crop and the
    crop's landmarks (crop coordinates, see `landmarks_in_crop`) gives a FaceMask."""

    def __init__(self, kind: str = "auto", parser: str = DEFAULT_PARSER, device=None):
        if kind not in MASK_KINDS:
            raise ValueError(f"unknown mask kind {kind!r}; choose from {', '.join(MASK_KINDS)}")
        self.kind, self.note, self.net, self.reason = kind, None, None, None
        if kind == "landmarks":
            return
        from e4ecli.hub.checkpoints import CheckpointError
        from e4ecli.hub.networks import load_face_parser, resolve_weights

        try:
            self.net = load_face_parser(resolve_weights(parser, "the BiSeNet face parser of the stitching masks"))
        except CheckpointError as e:
            if kind == "parsing":
                raise
            first = str(e).strip().splitlines()[0].rstrip(":")
            self.kind, self.note = "landmarks", (f"face parser unavailable ({first}); using the landmark hull "
                                                 f"(`e4e weights path {DEFAULT_PARSER}` says where 79999_iter.pth goes)")
            self.reason = str(e)
            return
        if device is not None:
            self.net = self.net.to(device)
        self.kind = "parsing"

    def __call__(self, crop: np.ndarray, landmarks_crop: Sequence | None = None) -> FaceMask:
        if self.net is not None:
            return FaceMask(parsing_mask(self.net, crop), "parsing")
        if landmarks_crop is None:
            raise ValueError("the landmark mask needs the crop's 68 landmarks")
        return FaceMask(hull_mask(landmarks_crop, crop.shape[0]), "landmarks")
