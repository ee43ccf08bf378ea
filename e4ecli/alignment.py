"""FFHQ face alignment geometry: 68 iBUG landmarks -> an oriented square crop of the photo.

The recipe is the one the FFHQ dataset and the e4e repository use (`recreate_aligned_images`,
`align_face`), re-derived here:

1. Eye centres and mouth corners give an oriented square ("quad"): its x axis follows the eye
   line corrected by the eye-to-mouth direction, its half side is the larger of 2x the eye
   distance and 1.8x the eye-to-mouth distance, its centre sits 10% of the way from the eye
   midpoint to the mouth midpoint.
2. Shrink: when the quad is at least 4x the output size, the photo is first downscaled by the
   integer factor floor(qsize / output / 2) (Lanczos), so the final resampling stays local.
3. Crop the quad's bounding box plus a border of 10% of the quad size.
4. Pad: when the quad still reaches outside the (cropped) photo, reflect-pad by at least 30% of
   the quad size and feather the padding: blend towards a Gaussian blur (sigma 2% of the quad size)
   and towards the median colour, increasingly with the distance into the padding.
5. Resample the quad onto a transform_size square (PIL QUAD transform, bilinear), then Lanczos
   down to output_size when transform_size is larger (supersampling).

Coordinates: landmarks and quads are in pixel-index coordinates of the source photo (after EXIF
orientation), x to the right, y down; pixel (i, j) covers [i, i+1) x [j, j+1), so its centre is
(i + 0.5, j + 0.5) in "continuous" coordinates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

N_LANDMARKS = 68
_EYE_LEFT = slice(36, 42)
_EYE_RIGHT = slice(42, 48)
_MOUTH_LEFT, _MOUTH_RIGHT = 48, 54


class AlignError(ValueError):
    """A face that cannot be aligned (bad landmarks); str() is the reason."""


@dataclass(frozen=True)
class AlignPlan:
    """Everything the alignment of one face does to its photo, computed from landmarks alone.

    quad_source: (4, 2) corners in source pixel-index coordinates, in the order the output's
        top-left, bottom-left, bottom-right, top-right corners come from.
    qsize: side of the quad in source pixels.
    shrink: integer downscale applied first (1: none); resized: the (w, h) after it.
    crop: (x0, y0, x1, y1) box cut from the (shrunk) photo.
    pad: (left, top, right, bottom) reflect padding added after the crop ((0, 0, 0, 0): none).
    quad: (4, 2) the corners in the cropped and padded working image, pixel-index coordinates.
    """

    source_size: tuple[int, int]
    output_size: int
    transform_size: int
    quad_source: np.ndarray
    qsize: float
    shrink: int
    resized: tuple[int, int]
    border: int
    crop: tuple[int, int, int, int]
    pad: tuple[int, int, int, int]
    quad: np.ndarray

    def source_from_output(self) -> np.ndarray:
        """(2, 3) affine map from output continuous coordinates (u, v in [0, output_size]) to
        source continuous coordinates: [x, y] = A @ [u, v, 1]. Exact: the quad is a square."""
        q = self.quad + 0.5  # working-image continuous coordinates, as handed to PIL
        s = float(self.output_size)
        ex, ey, origin = (q[3] - q[0]) / s, (q[1] - q[0]) / s, q[0].copy()
        # working image -> shrunk photo -> source photo
        shift = np.array([self.crop[0] - self.pad[0], self.crop[1] - self.pad[1]], dtype=np.float64)
        scale = np.array([self.source_size[0] / self.resized[0], self.source_size[1] / self.resized[1]])
        return np.stack([ex * scale, ey * scale, (origin + shift) * scale], axis=1)

    def to_json(self) -> dict[str, Any]:
        return {
            "source_size": list(self.source_size),
            "output_size": self.output_size,
            "transform_size": self.transform_size,
            "quad": self.quad_source.tolist(),
            "quad_order": "output top-left, bottom-left, bottom-right, top-right",
            "qsize": self.qsize,
            "shrink": self.shrink,
            "resized": list(self.resized),
            "border": self.border,
            "crop": list(self.crop),
            "pad": list(self.pad),
            "source_from_output": self.source_from_output().tolist(),
        }


def check_landmarks(landmarks) -> np.ndarray:
    """landmarks: (68, 2) x, y -> float64 array, or AlignError."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (N_LANDMARKS, 2):
        raise AlignError(f"expected 68 (x, y) landmarks, got an array of shape {lm.shape}")
    if not np.all(np.isfinite(lm)):
        raise AlignError("landmarks contain NaN or infinity")
    return lm


def face_quad(landmarks) -> tuple[np.ndarray, float]:
    """landmarks: (68, 2) -> (quad (4, 2) corners, qsize side length), source coordinates."""
    lm = check_landmarks(landmarks)
    eye_l, eye_r = lm[_EYE_LEFT].mean(axis=0), lm[_EYE_RIGHT].mean(axis=0)
    eyes = (eye_l + eye_r) * 0.5
    eye_to_eye = eye_r - eye_l
    mouth = (lm[_MOUTH_LEFT] + lm[_MOUTH_RIGHT]) * 0.5
    eye_to_mouth = mouth - eyes
    # x axis: the eye line, tilted by the eye-to-mouth direction turned by 90 degrees
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    norm = np.hypot(*x)
    if norm == 0:
        raise AlignError("degenerate landmarks (eyes and mouth coincide)")
    x = x / norm * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    c = eyes + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, float(np.hypot(*x) * 2)


def _bounds(quad: np.ndarray) -> tuple[int, int, int, int]:
    return (int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min())),
            int(np.ceil(quad[:, 0].max())), int(np.ceil(quad[:, 1].max())))


def plan_alignment(landmarks, source_size: tuple[int, int], output_size: int = 1024, supersample: int = 4,
                   enable_padding: bool = True) -> AlignPlan:
    """Geometry of the alignment of one face in a photo of source_size (w, h); no pixels touched.

    transform_size = output_size * supersample (e4e's `align_face`: 256, supersample 1;
    the FFHQ dataset: 1024, supersample 4).
    """
    quad_source, _ = face_quad(landmarks)
    return plan_quad(quad_source, source_size, output_size, supersample, enable_padding)


def quad_frame(landmarks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """landmarks (68, 2) -> the quad as (centre c, half-side vector x, half-side vector y), STIT's parametrisation:
    the corners are c - x - y, c - x + y, c + x + y, c + x - y (see face_quad)."""
    quad, _ = face_quad(landmarks)
    c = quad.mean(axis=0)
    x = (quad[3] - quad[0]) / 2
    y = (quad[1] - quad[0]) / 2
    return c, x, y


def quad_from_frame(c, x, y) -> np.ndarray:
    c, x, y = (np.asarray(v, dtype=np.float64) for v in (c, x, y))
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def plan_quad(quad_source, source_size: tuple[int, int], output_size: int = 1024, supersample: int = 4,
              enable_padding: bool = True) -> AlignPlan:
    """plan_alignment for a given quad (4, 2) (e.g. one smoothed over a video's frames); its side is the
    length of the top edge."""
    if output_size < 1 or supersample < 1:
        raise ValueError("output_size and supersample must be positive")
    quad_source = np.asarray(quad_source, dtype=np.float64)
    if quad_source.shape != (4, 2) or not np.all(np.isfinite(quad_source)):
        raise AlignError(f"a quad is 4 finite (x, y) corners, got an array of shape {quad_source.shape}")
    qsize_source = float(np.hypot(*(quad_source[3] - quad_source[0])))
    if qsize_source <= 0:
        raise AlignError("degenerate quad (zero size)")
    w, h = int(source_size[0]), int(source_size[1])
    quad, qsize = quad_source.copy(), qsize_source

    shrink = int(np.floor(qsize / output_size * 0.5))
    resized = (w, h)
    if shrink > 1:
        resized = (int(np.rint(w / shrink)), int(np.rint(h / shrink)))
        quad, qsize = quad / shrink, qsize / shrink
    else:
        shrink = 1

    border = max(int(np.rint(qsize * 0.1)), 3)
    x0, y0, x1, y1 = _bounds(quad)
    crop = (max(x0 - border, 0), max(y0 - border, 0), min(x1 + border, resized[0]), min(y1 + border, resized[1]))
    if crop[2] - crop[0] < resized[0] or crop[3] - crop[1] < resized[1]:
        quad = quad - np.array(crop[:2], dtype=np.float64)
    else:
        crop = (0, 0, resized[0], resized[1])
    cw, ch = crop[2] - crop[0], crop[3] - crop[1]
    if cw < 1 or ch < 1:
        raise AlignError("the face lies entirely outside the photo")

    x0, y0, x1, y1 = _bounds(quad)
    pad = (max(-x0 + border, 0), max(-y0 + border, 0), max(x1 - cw + border, 0), max(y1 - ch + border, 0))
    if enable_padding and max(pad) > border - 4:
        least = max(int(np.rint(qsize * 0.3)), 1)
        pad = tuple(max(p, least) for p in pad)
        quad = quad + np.array(pad[:2], dtype=np.float64)
    else:
        pad = (0, 0, 0, 0)
    return AlignPlan((w, h), int(output_size), int(output_size * supersample), quad_source, qsize_source, shrink,
                     resized, border, crop, pad, quad)  # type: ignore[arg-type]


def _feathered_pad(image: Image.Image, pad: tuple[int, int, int, int], qsize: float) -> Image.Image:
    """Reflect-pad (left, top, right, bottom) and fade the padding into blur and the median colour."""
    from scipy.ndimage import gaussian_filter

    left, top, right, bottom = pad
    arr = np.pad(np.asarray(image, dtype=np.float32), ((top, bottom), (left, right), (0, 0)), mode="reflect")
    h, w = arr.shape[:2]
    xs = np.arange(w, dtype=np.float32)[None, :, None]
    ys = np.arange(h, dtype=np.float32)[:, None, None]
    # 0 inside the photo, rising to 1 at the outer edge of the padding
    mask = np.maximum(1.0 - np.minimum(xs / left, (w - 1 - xs) / right),
                      1.0 - np.minimum(ys / top, (h - 1 - ys) / bottom))
    sigma = qsize * 0.02
    arr += (gaussian_filter(arr, [sigma, sigma, 0]) - arr) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


def apply_alignment(image: Image.Image, plan: AlignPlan) -> Image.Image:
    """Carry out `plan` on the RGB photo it was made for -> output_size x output_size RGB image."""
    if image.size != tuple(plan.source_size):
        raise ValueError(f"plan made for a {plan.source_size} photo, got {image.size}")
    img = image.convert("RGB")
    if plan.shrink > 1:
        img = img.resize(plan.resized, Image.Resampling.LANCZOS)
    if plan.crop != (0, 0, img.size[0], img.size[1]):
        img = img.crop(plan.crop)
    if any(plan.pad):
        img = _feathered_pad(img, plan.pad, plan.qsize / plan.shrink)
    t = plan.transform_size
    img = img.transform((t, t), Image.Transform.QUAD, tuple((plan.quad + 0.5).flatten()), Image.Resampling.BILINEAR)
    if plan.output_size < t:
        img = img.resize((plan.output_size, plan.output_size), Image.Resampling.LANCZOS)
    return img


def align_face(image: Image.Image, landmarks, output_size: int = 1024, supersample: int = 4) -> tuple[Image.Image, AlignPlan]:
    """RGB photo + (68, 2) landmarks -> (aligned output_size^2 RGB image, the plan used)."""
    plan = plan_alignment(landmarks, image.size, output_size, supersample)
    return apply_alignment(image, plan), plan
