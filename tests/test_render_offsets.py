"""`e4e render` renders a latent with the StyleSpace offsets `e4e edit --save-latents` saved beside it (K.s.npz):
the same image `e4e edit` rendered; the offsets file is recorded per output and a rerun redoes the output when it
changes or goes; an offsets file of another generator fails that latent alone, naming the file."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
from PIL import Image

from conftest import run


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_render_uses_the_offsets_beside_the_latent(e4e_64, tmp_path):
    lat = tmp_path / "lat"
    lat.mkdir()
    np.save(lat / "a.npy", 0.5 * np.random.RandomState(0).randn(10, 512).astype(np.float32))
    edited = tmp_path / "edited"
    r = run("edit", lat, "-o", edited, "-d", "stylespace:3:10", "-s", "8", "--save-latents", "--checkpoint", e4e_64, "--device", "cpu")
    assert r.exit_code == 0 and (edited / "a.s.npz").is_file(), r.output
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(edited / "a.npy", plain / "c.npy")  # the same W+ latent without its offsets
    (edited / "b.npy").write_bytes((edited / "a.npy").read_bytes())
    np.savez(edited / "b.s.npz", offsets=np.zeros(7, np.float32), channels=np.array([7]))  # another generator's layout

    out = tmp_path / "out"
    args = ["render", edited / "a.npy", edited / "b.npy", plain / "c.npy", "-o", out, "--checkpoint", e4e_64, "--device", "cpu"]
    r = run(*args)
    assert r.exit_code == 1, r.output  # b fails alone, with one line naming its offsets file
    assert "b.s.npz: StyleSpace offsets of 1 layers" in r.output
    np.testing.assert_array_equal(pixels(out / "a.png"), pixels(edited / "a.png"))  # as e4e edit rendered it
    assert not np.array_equal(pixels(out / "c.png"), pixels(edited / "a.png"))  # the offsets change the image
    lines = {json.loads(x)["output"]: json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()}
    assert lines["a.png"]["style_offsets"]["size"] == (edited / "a.s.npz").stat().st_size
    assert "style_offsets" not in lines["c.png"] and lines["b.png"]["status"] == "failed"

    os.remove(edited / "b.s.npz")
    first = {p: (out / p).stat().st_mtime_ns for p in ("a.png", "c.png")}
    assert run(*args).exit_code == 0
    assert all((out / p).stat().st_mtime_ns == t for p, t in first.items())  # unchanged: skipped
    os.remove(edited / "a.s.npz")  # the offsets went: the output is redone, now without them
    assert run(*args).exit_code == 0
    assert (out / "a.png").stat().st_mtime_ns != first["a.png"]
    np.testing.assert_array_equal(pixels(out / "a.png"), pixels(out / "c.png"))
