"""Paste an edited face back into the photo it was aligned from.

Alignment (`e4e align`) writes a sidecar `<name>.json` beside each aligned `<name>.png`. The fields
read here (everything else in the file is ignored):

  source              path of the original photo (absolute, or relative to the sidecar's folder)
  output_size         side of the aligned image in pixels (S)
  quad                [[x, y] x 4]: the corners of the aligned square in the photo, pixel-index
                      coordinates (pixel (i, j) covers [i, i+1) x [j, j+1)), in the order the
                      aligned image's top-left, bottom-left, bottom-right, top-right corners come from
  source_from_output  optional (2, 3) affine: photo continuous coordinates = A @ [u, v, 1] for
                      aligned continuous coordinates (u, v) in [0, S]; when absent it is derived
                      from `quad` (the corners + 0.5, as the alignment hands them to PIL)
  source_size         optional [width, height] of the photo (after EXIF orientation), checked

Paste-back inverts that map: every photo pixel inside the quad samples the edited render
(bilinear; the render is first area-downscaled when the quad is smaller than it), and is blended
over the photo with a mask that is 1 inside the square and falls smoothly to 0 over the outer
`feather` fraction of its side. Pixels outside the quad are the photo's own, untouched.

With `mask` (a soft mask in the face's own pixel grid, e.g. the blend mask of video stitching) the weight is
that mask, sampled like the face, instead of the feathered square; still nothing changes outside the quad.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

SIDECAR_SUFFIX = ".json"
DEFAULT_FEATHER = 0.1
MAX_SIDECAR_BYTES = 1 << 20  # an `e4e align` sidecar is < 2 kB
MAX_OUTPUT_SIZE = 16384  # the largest aligned square `e4e align` makes
MAX_COORDINATE = 1e6  # photo coordinates in pixels (a 1e307 affine is not a placement)


class PasteBackError(ValueError):
    """A sidecar or photo that cannot be used for paste-back; str() is the reason."""


@dataclass(frozen=True)
class Sidecar:
    path: Path
    source: Path
    output_size: int
    source_from_output: np.ndarray  # (2, 3)
    source_size: tuple[int, int] | None = None


def affine_from_quad(quad: Sequence[Sequence[float]], output_size: int) -> np.ndarray:
    """quad (4, 2) pixel-index corners (TL, BL, BR, TR) -> (2, 3) map aligned -> photo continuous coords."""
    q = np.asarray(quad, dtype=np.float64) + 0.5
    s = float(output_size)
    return np.stack([(q[3] - q[0]) / s, (q[1] - q[0]) / s, q[0]], axis=1)


def read_sidecar(path: str | Path) -> Sidecar:
    """Parse and check an alignment sidecar (fields in the module docstring)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_SIDECAR_BYTES:
            raise PasteBackError(f"alignment sidecar {path}: {path.stat().st_size:,} bytes, far larger than a sidecar")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise PasteBackError(f"alignment sidecar {path}: cannot read it ({e})") from None
    except RecursionError:
        raise PasteBackError(f"alignment sidecar {path}: cannot read it (JSON nested too deeply)") from None
    if not isinstance(data, dict):
        raise PasteBackError(f"alignment sidecar {path}: expected a JSON object")
    try:
        source = Path(str(data["source"]))
        if "\0" in str(source):
            raise ValueError("the source path holds a NUL byte")
        size = int(data["output_size"])
        if "source_from_output" in data:
            affine = np.asarray(data["source_from_output"], dtype=np.float64)
        else:
            quad = np.asarray(data["quad"], dtype=np.float64)
            if quad.shape != (4, 2):
                raise ValueError(f"quad must be 4 (x, y) points, got shape {quad.shape}")
            affine = affine_from_quad(quad, size)
        src_size = data.get("source_size")
        src_size = (int(src_size[0]), int(src_size[1])) if isinstance(src_size, (list, tuple)) and len(src_size) == 2 else None
    except KeyError as e:
        raise PasteBackError(f"alignment sidecar {path}: missing field {e}") from None
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        raise PasteBackError(f"alignment sidecar {path}: {type(e).__name__}: {str(e)[:200]}") from None
    if not 1 <= size <= MAX_OUTPUT_SIZE:
        raise PasteBackError(f"alignment sidecar {path}: output_size {size} is outside 1..{MAX_OUTPUT_SIZE}")
    if affine.shape == (2, 3) and np.isfinite(affine).all() and np.abs(affine).max() > MAX_COORDINATE:
        raise PasteBackError(f"alignment sidecar {path}: the aligned square's placement lies beyond {MAX_COORDINATE:g} pixels")
    if affine.shape != (2, 3) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:, :2])) < 1e-12:
        raise PasteBackError(f"alignment sidecar {path}: the aligned square's placement is degenerate")
    if not source.is_absolute():
        beside = path.parent / source
        try:
            source = beside if beside.exists() or not source.exists() else source
        except (OSError, ValueError) as e:  # a NUL byte, a name too long for the file system
            raise PasteBackError(f"alignment sidecar {path}: unusable source path ({e})") from None
    return Sidecar(path, source, size, affine, src_size)


def find_sidecar(latent: Path, key: str, folders: Sequence[Path] = ()) -> Path | None:
    """The sidecar for a latent: `<folder>/<key>.json` in the given alignment folders, else
    `<latent without .npy>.json` beside the latent file."""
    for folder in folders:
        candidate = Path(folder) / (key + SIDECAR_SUFFIX)
        if candidate.is_file():
            return candidate
    beside = latent.with_suffix(SIDECAR_SUFFIX)
    return beside if beside.is_file() else None


def load_photo(sidecar: Sidecar) -> np.ndarray:
    """The original photo of a sidecar as uint8 (H, W, 3), EXIF orientation applied."""
    from e4ecli.files.images import ImageError, load_rgb

    try:
        img = load_rgb(sidecar.source)
    except ImageError as e:
        raise PasteBackError(f"original photo {sidecar.source} (from {sidecar.path}): {e}") from None
    if sidecar.source_size is not None and img.size != sidecar.source_size:
        raise PasteBackError(f"original photo {sidecar.source} is {img.size[0]}x{img.size[1]} but {sidecar.path} was made "
                             f"for a {sidecar.source_size[0]}x{sidecar.source_size[1]} photo")
    return np.asarray(img, dtype=np.uint8)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def feather_mask(u: np.ndarray, v: np.ndarray, size: float, feather: float = DEFAULT_FEATHER) -> np.ndarray:
    """Blend weight at aligned coordinates (u, v): 1 inside, smooth fall to 0 over the outer
    `feather` fraction of the side, 0 outside [0, size]^2."""
    edge = np.minimum(np.minimum(u, size - u), np.minimum(v, size - v))
    if feather <= 0:
        return (edge >= 0).astype(np.float64)
    return _smoothstep(edge / (feather * size))


def paste_back(photo: np.ndarray, face: np.ndarray, source_from_output: np.ndarray, output_size: int,
               feather: float = DEFAULT_FEATHER, mask: np.ndarray | None = None) -> np.ndarray:
    """photo uint8 (H, W, 3), face uint8 (h, w, 3) covering the aligned square -> uint8 (H, W, 3).

    source_from_output: (2, 3) affine, aligned continuous coords (u, v in [0, output_size]) ->
    photo continuous coords. Only the quad's bounding box is computed. mask: optional float (h, w) in
    [0, 1] over the face's pixels, the blend weight in place of the feathered square (`feather` unused).
    """
    import torch
    import torch.nn.functional as F

    photo = np.asarray(photo)
    height, width = photo.shape[:2]
    a = np.asarray(source_from_output, dtype=np.float64)
    s = float(output_size)
    corners = a @ np.array([[0, s, 0, s], [0, 0, s, s], [1, 1, 1, 1]], dtype=np.float64)
    x0, y0 = (max(0, int(np.floor(corners[i].min())) - 1) for i in (0, 1))
    x1, y1 = min(width, int(np.ceil(corners[0].max())) + 1), min(height, int(np.ceil(corners[1].max())) + 1)
    out = photo.copy()
    if x1 <= x0 or y1 <= y0:
        return out  # the square lies outside the photo
    xs, ys = np.meshgrid(np.arange(x0, x1) + 0.5, np.arange(y0, y1) + 0.5)
    inv = np.linalg.inv(a[:, :2])
    du, dv = xs - a[0, 2], ys - a[1, 2]
    u = inv[0, 0] * du + inv[0, 1] * dv
    v = inv[1, 0] * du + inv[1, 1] * dv

    tile = torch.from_numpy(np.array(face, dtype=np.float64)).permute(2, 0, 1)[None]
    if mask is not None:
        mask = np.asarray(mask, dtype=np.float64)
        if mask.shape != tile.shape[-2:]:
            raise ValueError(f"the paste mask must cover the face's pixels, {tuple(tile.shape[-2:])}; got {mask.shape}")
        tile = torch.cat([tile, torch.from_numpy(np.clip(mask, 0.0, 1.0))[None, None]], 1)  # sampled with the face
    side = s * float(np.hypot(a[0, 0], a[1, 0]))  # the square's side in photo pixels
    if side < tile.shape[-1]:  # shrink by area first so the bilinear lookup does not alias
        new_w = max(1, int(round(side)))
        new_h = max(1, int(round(side * tile.shape[-2] / tile.shape[-1])))
        tile = F.adaptive_avg_pool2d(tile, (new_h, new_w))
    grid = torch.from_numpy(np.stack([2 * u / s - 1, 2 * v / s - 1], axis=-1))[None]
    warped = F.grid_sample(tile, grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    warped_np = warped.permute(1, 2, 0).numpy()
    if mask is None:
        m = feather_mask(u, v, s, feather)[..., None]
    else:
        warped_np, m = warped_np[..., :3], warped_np[..., 3:] * feather_mask(u, v, s, 0.0)[..., None]
    region = photo[y0:y1, x0:x1].astype(np.float64)
    out[y0:y1, x0:x1] = np.clip(np.rint(region * (1 - m) + warped_np * m), 0, 255).astype(np.uint8)
    return out
