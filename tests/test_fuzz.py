"""Fuzzing the two loaders every batch command trusts with user files (hypothesis, bounded time).

Protected behaviour: whatever bytes a file holds, `load_rgb` returns an 8-bit RGB image or raises
ImageError, and `load_latent` returns a finite float32 (n_styles, 512) array or raises LatentError;
nothing else escapes (no MemoryError, struct.error, IndexError, ... that would stop a batch or
bypass the one-line-per-file report). Each test is capped by max_examples (well under 30 s in all;
CI runs are derandomized; E4E_FUZZ_EXAMPLES=5000 runs a longer, random fuzzing session).
"""
from __future__ import annotations

import io
import itertools
import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from e4ecli.files.images import ImageError, load_rgb  # noqa: E402
from e4ecli.files.latents import LatentError, load_latent  # noqa: E402

N_STYLES, DIM = 10, 512
FUZZ = settings(max_examples=int(os.environ.get("E4E_FUZZ_EXAMPLES", 300)), deadline=None, database=None,
                derandomize="E4E_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
_counter = itertools.count()


def _seed_images() -> dict[str, bytes]:
    """Small valid files in the formats a user is likely to have, plus odd modes."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    out = {}
    for fmt, img in [("PNG", rgb), ("JPEG", rgb), ("GIF", rgb.convert("P")), ("BMP", rgb), ("WEBP", rgb),
                     ("TIFF", rgb.convert("CMYK")), ("PNG", rgb.convert("LA")), ("PPM", rgb)]:
        buf = io.BytesIO()
        img.save(buf, fmt)
        out[f"{fmt}-{img.mode}"] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 65535, (9, 7), dtype=np.uint16)).save(buf, "PNG")
    out["PNG-I16"] = buf.getvalue()
    return out


SEEDS = _seed_images()
EXTS = [".png", ".jpg", ".gif", ".bmp", ".webp", ".tif", ".ppm"]


@st.composite
def mutated(draw, seeds: dict[str, bytes]) -> bytes:
    """A valid file with a few bytes overwritten, a slice cut out, or truncated."""
    data = bytearray(seeds[draw(st.sampled_from(sorted(seeds)))])
    for _ in range(draw(st.integers(0, 6))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    action = draw(st.sampled_from(["keep", "truncate", "cut"]))
    if action == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif action == "cut":
        i = draw(st.integers(0, len(data)))
        data = data[:i] + data[i + draw(st.integers(0, 64)):]
    return bytes(data)


def _write(tmp_path, data: bytes, ext: str):
    p = tmp_path / f"f{next(_counter)}{ext}"
    p.write_bytes(data)
    return p


def _check_image(path) -> None:
    try:
        img = load_rgb(path)
    except ImageError as e:
        assert str(e), "an ImageError must carry a reason"
        return
    assert img.mode == "RGB" and img.width >= 1 and img.height >= 1
    arr = np.asarray(img)
    assert arr.dtype == np.uint8 and arr.shape == (img.height, img.width, 3)


@FUZZ
@given(data=st.binary(max_size=2048), ext=st.sampled_from(EXTS))
def test_load_rgb_random_bytes_give_rgb_or_image_error(tmp_path, data, ext):
    _check_image(_write(tmp_path, data, ext))


@FUZZ
@given(data=mutated(SEEDS), ext=st.sampled_from(EXTS))
def test_load_rgb_mutated_valid_files_give_rgb_or_image_error(tmp_path, data, ext):
    _check_image(_write(tmp_path, data, ext))


# -- latents ------------------------------------------------------------------------------------
def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def _header(shape, descr: str, fortran: bool = False, version=(1, 0)) -> bytes:
    buf = io.BytesIO()
    write = np.lib.format.write_array_header_1_0 if version == (1, 0) else np.lib.format.write_array_header_2_0
    write(buf, {"descr": descr, "fortran_order": fortran, "shape": shape})
    return buf.getvalue()


shapes = st.one_of(
    st.sampled_from([(N_STYLES, DIM), (1, N_STYLES, DIM), (DIM,), (1, DIM), (N_STYLES, DIM + 1), (DIM, N_STYLES), ()]),
    st.lists(st.integers(0, 2**40), min_size=0, max_size=4).map(tuple),
)
descrs = st.sampled_from(["<f4", ">f8", "<f2", "<i8", "|u1", "|b1", "<c8", "|O", "<U3", "|V8", "<M8[s]"])


@st.composite
def latent_files(draw) -> bytes:
    kind = draw(st.sampled_from(["header", "array", "mutated", "bytes"]))
    if kind == "header":  # any header, followed by a little (usually too little) data
        body = draw(st.binary(max_size=256))
        return _header(draw(shapes), draw(descrs), draw(st.booleans()), draw(st.sampled_from([(1, 0), (2, 0)]))) + body
    if kind == "array":  # real arrays of sometimes-right shapes, with special values
        shape = draw(st.sampled_from([(N_STYLES, DIM), (DIM,), (1, N_STYLES, DIM), (3, DIM), (0,)]))
        dtype = draw(st.sampled_from([np.float32, np.float64, np.float16, np.int16, np.uint8]))
        arr = np.zeros(shape, dtype)
        if arr.size and np.issubdtype(dtype, np.floating):
            special = draw(st.sampled_from([0.0, np.nan, np.inf, -np.inf, 1e300, -1e300, 65504.0]))
            with np.errstate(over="ignore"):
                arr.flat[draw(st.integers(0, arr.size - 1))] = special
        if draw(st.booleans()):
            arr = np.asfortranarray(arr)
        return _npy(arr)
    if kind == "mutated":
        data = bytearray(_npy(np.zeros((N_STYLES, DIM), np.float32)))
        for _ in range(draw(st.integers(1, 6))):
            data[draw(st.integers(0, 127))] = draw(st.integers(0, 255))  # inside the header
        return bytes(data[: draw(st.integers(0, len(data)))])
    return draw(st.binary(max_size=512))


@FUZZ
@given(data=latent_files())
def test_load_latent_gives_finite_wplus_or_latent_error(tmp_path, data):
    path = _write(tmp_path, data, ".npy")
    try:
        w = load_latent(path, N_STYLES, DIM)
    except LatentError as e:
        assert str(e)
        return
    assert w.dtype == np.float32 and w.shape == (N_STYLES, DIM) and np.isfinite(w).all()


def test_object_arrays_are_never_unpickled(tmp_path):
    """An object .npy whose pickle would run code is refused from its header; the code never runs."""
    import os

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = _write(tmp_path, _npy(np.array([Evil()], dtype=object)), ".npy")
    with pytest.raises(LatentError, match="object arrays are never unpickled"):
        load_latent(path, N_STYLES, DIM)
    assert not marker.exists()
