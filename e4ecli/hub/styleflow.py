"""StyleFlow's published files: the flow weights and the released samples, read safely.

* `load_flow(path)`: `flow_weight/modellarge10k.pt` (a plain state dict) -> StyleFlow in eval mode;
  a file whose keys or shapes differ is refused, naming the file and the first mismatch.
* `read_samples(attributes, light, latents)`: StyleFlow's `data/attributes.npy` (1000 faces x 8
  attributes), `data/light.npy` (x 9 lighting coefficients) and `data/sg2latents.pickle` (a dict
  whose 'Latent' holds the W latents, each (1, 18, 512)). The pickle is read by `NumpyUnpickler`,
  which admits numpy arrays of numeric dtypes and plain containers only and never runs code.
* Zoo names of these files (`FLOW`, `SAMPLE_FILES`), fetched through `e4ecli.hub.zoo`.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e4ecli.hub.checkpoints import safe_load
from e4ecli.hub.types import CheckpointError
from e4ecli.models.styleflow import CONDITION_DIM, N_ATTRIBUTES, N_LIGHTING, StyleFlow

FLOW = "styleflow_flow"  # zoo names
ATTRIBUTES_FILE, LIGHT_FILE, LATENTS_FILE = "styleflow_attributes", "styleflow_light", "styleflow_latents"
SAMPLE_FILES = (ATTRIBUTES_FILE, LIGHT_FILE, LATENTS_FILE)
MAX_PICKLE_BYTES = 1 << 30


class StyleflowFileError(CheckpointError):
    """A StyleFlow file that cannot be used; the message names the file and says why."""


# -- the flow weights -------------------------------------------------------------------------
def load_flow(path: str | Path) -> StyleFlow:
    """modellarge10k.pt (or a file in its layout) -> StyleFlow (CPU, eval mode)."""
    data = safe_load(path)
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise StyleflowFileError(f"{path}: not a StyleFlow flow: expected a plain state dict of tensors "
                                 "(the layout of StyleFlow's flow_weight/modellarge10k.pt)")
    flow = StyleFlow()
    expected = flow.state_dict()
    for key, tensor in expected.items():
        if key not in data:
            raise StyleflowFileError(f"{path}: not a StyleFlow flow in the layout of modellarge10k.pt: missing key '{key}'")
        if tuple(data[key].shape) != tuple(tensor.shape):
            raise StyleflowFileError(f"{path}: not a StyleFlow flow in the layout of modellarge10k.pt: '{key}' has shape "
                                     f"{tuple(data[key].shape)}, expected {tuple(tensor.shape)}")
        if not data[key].is_floating_point():
            raise StyleflowFileError(f"{path}: '{key}' holds {data[key].dtype} numbers, expected floating point")
    extra = [k for k in data if k not in expected]
    if extra:
        raise StyleflowFileError(f"{path}: not a StyleFlow flow in the layout of modellarge10k.pt: unexpected key '{extra[0]}'")
    flow.load_state_dict({k: v.float() for k, v in data.items()}, strict=True)
    bad = [k for k, v in flow.state_dict().items() if not torch.isfinite(v).all()]
    if bad:
        raise StyleflowFileError(f"{path}: '{bad[0]}' holds NaN or infinite numbers")
    return flow.eval()


# -- a pickle of numpy arrays, read without running code ----------------------------------------
def _ndarray_reconstruct(cls: Any, shape: Any, dtype: Any) -> np.ndarray:
    """Replacement for numpy's multiarray._reconstruct: a plain ndarray, filled by its __setstate__."""
    if cls is not np.ndarray:
        raise pickle.UnpicklingError("an array subclass (only plain numpy arrays are read)")
    return np.ndarray(shape, dtype=_dtype(dtype))


def _dtype(spec: Any, *args: Any) -> np.dtype:
    dtype = np.dtype(spec.decode("latin1") if isinstance(spec, bytes) else spec)
    if dtype.kind not in "biufc":
        raise pickle.UnpicklingError(f"an array of dtype {dtype} (only numeric arrays are read)")
    return dtype


def _scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"a numpy scalar of dtype {dtype!r} (only numeric scalars are read)")
    return np.frombuffer(bytes(data), dtype=dtype, count=1)[0]


def _latin1_bytes(text: Any, encoding: str = "utf-8") -> bytes:
    """Replacement for _codecs.encode, which protocol-2 pickles use to spell bytes: text only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode of something other than latin1 text")
    return text.encode("latin1")


_ALLOWED = {
    ("_codecs", "encode"): _latin1_bytes,
    **{(m, "_reconstruct"): _ndarray_reconstruct for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "scalar"): _scalar for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("collections", "OrderedDict"): dict,
}


class NumpyUnpickler(pickle.Unpickler):
    """Resolves only numpy's array/dtype/scalar rebuilders (numeric dtypes) and OrderedDict."""

    def __init__(self, file, where: str):
        super().__init__(file, encoding="latin1")  # latin1: numpy arrays pickled by Python 2 too
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise StyleflowFileError(f"{self.where}: refused to load: the pickle references the global {module}.{name}; "
                                     "only numpy arrays and plain containers are read (e4ecli never runs code from a pickle)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise StyleflowFileError(f"{self.where}: refused to load: the pickle uses persistent ids")


def read_numpy_pickle(path: str | Path) -> Any:
    """Unpickle a file of numpy arrays and plain containers (dict, list, tuple, str, numbers)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise StyleflowFileError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(data) > MAX_PICKLE_BYTES:
        raise StyleflowFileError(f"{path}: {len(data)} bytes is far larger than StyleFlow's sample latents")
    from e4ecli.hub.picklescan import PickleBomb, check_bytes

    try:
        check_bytes(data, str(path))  # memory and nesting bombs, before anything is built
    except PickleBomb as e:
        raise StyleflowFileError(f"{path}: refused to load: {e}") from None
    try:
        return NumpyUnpickler(io.BytesIO(data), str(path)).load()
    except StyleflowFileError:
        raise
    except Exception as e:  # noqa: BLE001 -- any malformed pickle is one clear error
        raise StyleflowFileError(f"{path}: not a readable pickle of numpy arrays ({type(e).__name__}: {e})") from None


# -- the released samples ---------------------------------------------------------------------
def _numeric(array: Any, path: Path, what: str, per_row: int, rows: int | None = None) -> np.ndarray:
    a = np.asarray(array)
    if a.dtype.kind not in "biuf" or a.ndim < 1:
        raise StyleflowFileError(f"{path}: {what} must be numeric arrays, got dtype {a.dtype}")
    if a.size % per_row or (rows is not None and a.size != rows * per_row):
        raise StyleflowFileError(f"{path}: {what} of shape {a.shape} is not {rows or 'N'} rows of {per_row} numbers")
    a = a.reshape(-1, per_row).astype(np.float64)
    if not np.isfinite(a).all():
        raise StyleflowFileError(f"{path}: {what} hold NaN or infinite numbers")
    return a


def read_lighting(path: str | Path) -> np.ndarray:
    """light.npy -> (N, 9) float64."""
    path = Path(path)
    try:
        raw = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise StyleflowFileError(f"{path}: not a readable .npy file ({e})") from None
    return _numeric(raw, path, "lighting coefficients", N_LIGHTING)


def read_samples(attributes: str | Path, light: str | Path, latents: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """-> (W codes (N, 512): each latent's mean over its styles, conditions (N, 17) = [lighting, attributes])."""
    attributes, latents = Path(attributes), Path(latents)
    try:
        attrs = _numeric(np.load(attributes, allow_pickle=False), attributes, "attributes", N_ATTRIBUTES)
    except (OSError, ValueError) as e:
        raise StyleflowFileError(f"{attributes}: not a readable .npy file ({e})") from None
    lights = read_lighting(light)
    data = read_numpy_pickle(latents)
    raw = data.get("Latent") if isinstance(data, dict) else data
    if raw is None:
        raise StyleflowFileError(f"{latents}: expected a dict with the W latents under 'Latent' (StyleFlow's sg2latents.pickle)")
    try:
        w = np.stack([np.asarray(x, dtype=np.float64).reshape(-1, 512).mean(0) for x in raw])
    except (ValueError, TypeError) as e:
        raise StyleflowFileError(f"{latents}: the latents are not arrays of 512-d codes ({e})") from None
    n = len(w)
    if len(attrs) != n or len(lights) != n:
        raise StyleflowFileError(f"{latents}: {n} latents but {len(attrs)} attribute rows and {len(lights)} lighting rows; "
                                 "the three files must describe the same faces")
    if not np.isfinite(w).all():
        raise StyleflowFileError(f"{latents}: latents hold NaN or infinite numbers")
    return w, np.concatenate([lights, attrs], axis=1).reshape(n, CONDITION_DIM)


def fetch(name: str, download: bool = True) -> Path:
    """A StyleFlow zoo file's cached path (downloaded when missing)."""
    from e4ecli.hub import zoo

    return zoo.resolve(name, download=download)
