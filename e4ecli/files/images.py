"""Safe image decoding and PNG output written the way the original `tensor2im` writes it.

`load_rgb` turns every valid image into 8-bit RGB (EXIF orientation applied; 16-bit scaled;
CMYK, palette and grayscale converted; transparency composited over white) and raises
ImageError, with the reason, for anything else: empty, truncated, not an image, or beyond
PIL's decompression-bomb pixel limit.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from e4ecli.files.kinds import IMAGE_EXTENSIONS  # noqa: F401  (re-exported: where callers have always found it)

# Never decode partial files as if they were whole.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(ValueError):
    """An input that is not a usable image; str() is the reason (the caller names the file)."""


def _to_8bit(img: Image.Image) -> Image.Image:
    """High-bit-depth single-channel modes ('I;16*', 'I', 'F') -> 'L'."""
    arr = np.asarray(img)
    if img.mode.startswith("I;16") or (img.mode == "I" and arr.size and arr.max() <= 65535 and arr.min() >= 0):
        scaled = arr.astype(np.float64) / 257.0
    elif img.mode == "F":
        scaled = arr.astype(np.float64) * (255.0 if arr.size and np.nanmax(arr) <= 1.0 else 1.0)
    else:  # 32-bit integers with a wider range: min-max normalise
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr.astype(np.float64) - lo) * (255.0 / (hi - lo) if hi > lo else 0.0)
    return Image.fromarray(np.clip(np.nan_to_num(scaled), 0, 255).round().astype(np.uint8), "L")


def to_rgb(img: Image.Image, background=(255, 255, 255)) -> Image.Image:
    """Any PIL mode -> RGB; transparent areas are composited over `background`."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        img = _to_8bit(img)
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode in ("P", "L", "RGB") and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return img.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Decode one image file into 8-bit RGB, or raise ImageError with the reason."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ImageError(f"cannot read: {e.strerror or e}") from None
    if size == 0:
        raise ImageError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                img = ImageOps.exif_transpose(img) or img
                rgb = to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"refused: too many pixels, possible decompression bomb ({e})") from None
    except UnidentifiedImageError:
        raise ImageError("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e) or type(e).__name__
        if "truncated" in msg.lower():
            raise ImageError(f"truncated image ({msg})") from None
        raise ImageError(f"cannot decode image ({msg})") from None
    if rgb.width < 1 or rgb.height < 1:
        raise ImageError(f"image has no pixels ({rgb.width}x{rgb.height})")
    return rgb


def to_uint8(images) -> np.ndarray:
    """images: tensor (N, 3, H, W) or (3, H, W) in [-1, 1] -> uint8 (N, H, W, 3) / (H, W, 3),
    exactly like the original tensor2im: (x + 1) / 2 clipped to [0, 1], x255, truncated."""
    x = images.detach().float().cpu().numpy()
    x = np.clip((x + 1) / 2, 0, 1) * 255
    return np.moveaxis(x, -3, -1).astype(np.uint8)


def area_resize(images, size: int):
    """images: (N, C, H, W) tensor -> (N, C, size*H/W, size) by area averaging (adaptive average pooling)."""
    import torch.nn.functional as F

    h, w = images.shape[-2:]
    return F.adaptive_avg_pool2d(images, (max(1, round(size * h / w)), size))
