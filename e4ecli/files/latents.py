"""Reading W+ latents (.npy) safely and checking them against a generator."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from e4ecli.files.kinds import LATENT_EXTENSIONS  # noqa: F401  (re-exported)


class LatentError(ValueError):
    """A latents file that cannot be used; str() is the reason (the caller names the file)."""


def read_header(path: str | Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from a .npy header, without reading (or allocating) the array; LatentError if unreadable."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise LatentError(f"cannot read latents: not a .npy file this program reads (format version {version})")
    except LatentError:
        raise
    except Exception as e:  # noqa: BLE001 -- numpy's header parser raises ValueError, SyntaxError, tokenize.TokenError, ...
        raise LatentError(f"cannot read latents: not a valid .npy file ({type(e).__name__}: {e})") from None
    return tuple(shape), dtype


def _check_header(path: Path, n_styles: int, style_dim: int) -> None:
    """Refuse from the .npy header alone what cannot be a latent, before any array is allocated
    (a few bytes can claim a shape of terabytes)."""
    shape, dtype = read_header(path)
    if dtype.hasobject or dtype.kind not in "fiu" or dtype.subdtype is not None:
        raise LatentError(f"latents must be a numeric array, got dtype {dtype} (object arrays are never unpickled)")
    size = int(np.prod(shape, dtype=np.float64)) if shape else 1
    if size not in (n_styles * style_dim, style_dim):
        raise LatentError(f"latents shape {shape} does not fit the generator, which needs ({n_styles}, {style_dim}) W+ codes (or a ({style_dim},) W code)")


def load_latent(path: str | Path, n_styles: int, style_dim: int = 512) -> np.ndarray:
    """.npy -> float32 (n_styles, style_dim). Accepts (n_styles, d), (1, n_styles, d), and a single
    W code (d,) / (1, d), which is repeated for every style. Never unpickles."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        raise LatentError(f"not a .npy file (got {path.suffix or 'no extension'})")
    _check_header(path, n_styles, style_dim)
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise LatentError(f"cannot read latents: {e} (object arrays are never unpickled)") from None
    except (OSError, EOFError) as e:
        raise LatentError(f"cannot read latents: {e}") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        raise LatentError(f"latents must be a numeric array, got dtype {getattr(arr, 'dtype', type(arr).__name__)}")
    shape = arr.shape
    if arr.ndim == 3 and shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2 and arr.shape[0] == 1 and arr.shape[1] == style_dim:
        arr = arr[0]
    if arr.ndim == 1 and arr.shape[0] == style_dim:
        arr = np.repeat(arr[None], n_styles, axis=0)
    if arr.shape != (n_styles, style_dim):
        raise LatentError(f"latents shape {shape} does not fit the generator, which needs ({n_styles}, {style_dim}) W+ codes (or a ({style_dim},) W code)")
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values become inf, refused just below
        arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise LatentError("latents contain NaN or infinite values")
    return arr


class LatentReader:
    """Picklable decode function for DataLoader workers: .npy path -> float32 (n_styles, style_dim)."""

    def __init__(self, n_styles: int, style_dim: int = 512):
        self.n_styles, self.style_dim = n_styles, style_dim

    def __call__(self, path: str | Path) -> np.ndarray:
        return load_latent(path, self.n_styles, self.style_dim)


def load_style_offsets(path: str | Path, channels: list[int] | tuple[int, ...]) -> list[np.ndarray]:
    """A latent's StyleSpace offsets file (OUT/K.s.npz from `e4e edit --save-latents`: `offsets`, the per-layer
    offsets concatenated, and `channels`, each layer's length) -> one float32 (C_l,) array per modulated layer of
    a generator whose StyleSpace layout is `channels`. LatentError naming the file otherwise. Never unpickles."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            flat, sizes = np.asarray(z["offsets"]), np.asarray(z["channels"])
    except (OSError, ValueError, KeyError, EOFError) as e:
        why = "no 'offsets' / 'channels' arrays" if isinstance(e, KeyError) else "not a readable .npz"
        raise LatentError(f"{path.name}: {why}") from None
    if sizes.ndim != 1 or flat.ndim != 1 or sizes.dtype.kind not in "iu" or [int(s) for s in sizes] != list(channels) \
            or flat.size != sum(channels):
        raise LatentError(f"{path.name}: StyleSpace offsets of {len(sizes)} layers ({flat.size} values) do not fit the generator, "
                          f"which has {len(channels)} layers ({sum(channels)} channels)")
    if flat.dtype.kind != "f" or not np.isfinite(flat).all():
        raise LatentError(f"{path.name}: the offsets are not finite numbers")
    return np.split(flat.astype(np.float32), np.cumsum(channels)[:-1])
