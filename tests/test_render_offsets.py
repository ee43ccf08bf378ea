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


def test_a_library_edit_through_the_run_layer_writes_what_e4e_edit_writes(e4e_64, tmp_path):
    """EditPipeline.from_checkpoint with (spec, strength) pairs, run by runs.BatchRun: the same files, pixels and
    manifest settings as `e4e edit`, and a second run skips (the CLI's behaviour, for a library user)."""
    from e4ecli.files.latents import LATENT_EXTENSIONS
    from e4ecli.hub.checkpoints import file_id
    from e4ecli.pipelines.edit import EditConfig, EditPipeline, read_offsets
    from e4ecli.runs import BatchRun

    lat = tmp_path / "lat"
    lat.mkdir()
    np.save(lat / "a.npy", 0.5 * np.random.RandomState(2).randn(10, 512).astype(np.float32))
    cli = tmp_path / "cli"
    r = run("edit", lat, "-o", cli, "-d", "stylespace:3:10", "-s", "-2:2:3", "--save-latents", "--checkpoint", e4e_64, "--device", "cpu")
    assert r.exit_code == 0, r.output

    pipe = EditPipeline.from_checkpoint(e4e_64, EditConfig(save_latents=True), steps=[("stylespace:3:10", "-2:2:3")], device="cpu")
    lib = tmp_path / "lib"
    for done in (1, 0):
        with BatchRun.prepare("edit", [lat], lib, LATENT_EXTENSIONS) as batch:
            finished = batch.run(pipe(batch.items, batch.out, finished=batch.start(pipe.settings(file_id(e4e_64)))))
        assert (finished.done, finished.skipped, finished.ok) == (done, 1 - done, True)
    files = sorted(p.relative_to(cli).as_posix() for p in cli.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(lib).as_posix() for p in lib.rglob("*") if p.is_file())
    for name in files:
        if name.endswith(".png"):
            np.testing.assert_array_equal(pixels(cli / name), pixels(lib / name))
        elif name.endswith(".s.npz"):
            for a, b in zip(read_offsets(cli / name), read_offsets(lib / name)):
                np.testing.assert_array_equal(a, b)
        elif name.endswith(".npy"):
            np.testing.assert_array_equal(np.load(cli / name), np.load(lib / name))
    settings = [json.loads(x)["settings"] for d in (cli, lib) for x in (d / "manifest.jsonl").read_text().splitlines()[:1]]
    assert settings[0] == settings[1]
