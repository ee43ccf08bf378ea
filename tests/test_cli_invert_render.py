"""`e4e invert` and `e4e render` through the CLI: conformance numbers, naming, bad inputs, reruns."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run
from e4ecli.files.images import to_uint8




@pytest.fixture(scope="module")
def e4e_inverted(case_checkpoint, case_arrays, tmp_path_factory):
    """Invert case e4e_256's two inputs once (with reconstructions) for several tests."""
    z = case_arrays("e4e_256")
    root = tmp_path_factory.mktemp("inv")
    photos = root / "photos"
    (photos / "sub").mkdir(parents=True)
    Image.fromarray(z["input_0"]).save(photos / "a.png")
    Image.fromarray(z["input_1"]).save(photos / "sub" / "b.png")
    res = run("invert", photos, "-o", root / "out", "--checkpoint", case_checkpoint("e4e_256"), "--save-reconstructions",
              "--device", "cpu", "--batch-size", "3")
    return root, res


def test_invert_reproduces_case_latents_and_reconstructions(e4e_inverted, case_arrays):
    root, res = e4e_inverted
    assert res.exit_code == 0, res.output
    z = case_arrays("e4e_256")
    for i, key in enumerate(["a", "sub/b"]):
        lat = np.load(root / "out" / f"{key}.npy")
        assert lat.dtype == np.float32 and lat.shape == (14, 512)
        assert np.abs(lat - z["latents"][i]).max() <= 1e-3
        png = np.asarray(Image.open(root / "out" / f"{key}.png"))
        expected = to_uint8(torch.from_numpy(z["images"][i]))
        assert png.shape == (256, 256, 3)
        assert np.abs(png.astype(int) - expected.astype(int)).max() <= 1  # float rounding at truncation edges
    lines = [json.loads(x) for x in (root / "out" / "manifest.jsonl").read_text().splitlines()]
    assert {r["output"] for r in lines} == {"a.npy", "sub/b.npy"} and all(r["status"] == "ok" for r in lines)
    assert all(r["checkpoint"].startswith("e4e_256.pt:") for r in lines)


def test_rerun_skips_finished_work(e4e_inverted, case_checkpoint):
    root, _ = e4e_inverted
    before = (root / "out" / "a.npy").stat().st_mtime_ns
    res = run("invert", root / "photos", "-o", root / "out", "--checkpoint", case_checkpoint("e4e_256"), "--save-reconstructions", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert (root / "out" / "a.npy").stat().st_mtime_ns == before
    assert "skipped" in res.output


def test_render_reproduces_case_images(e4e_inverted, case_checkpoint, case_arrays):
    root, _ = e4e_inverted
    res = run("render", root / "out", "-o", root / "renders", "--checkpoint", case_checkpoint("e4e_256"), "--device", "cpu")
    assert res.exit_code == 0, res.output
    z = case_arrays("e4e_256")
    for i, key in enumerate(["a", "sub/b"]):
        png = np.asarray(Image.open(root / "renders" / f"{key}.png"))
        assert np.abs(png.astype(int) - to_uint8(torch.from_numpy(z["images"][i])).astype(int)).max() <= 1
    res = run("render", root / "out" / "a.npy", "-o", root / "small", "--checkpoint", case_checkpoint("e4e_256"), "--size", "64")
    assert res.exit_code == 0 and Image.open(root / "small" / "a.png").size == (64, 64)


def test_render_bare_generator_and_bad_latents(tmp_path, case_checkpoint, case_arrays):
    z = case_arrays("stylegan2_64_cm1")
    lat = tmp_path / "lat"
    lat.mkdir()
    np.save(lat / "good.npy", z["wplus"][0])
    np.save(lat / "wrong.npy", np.zeros((14, 512), np.float32))
    np.save(lat / "nan.npy", np.full((10, 512), np.nan, np.float32))
    np.save(lat / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (lat / "notes.txt").write_text("not a latent and not picked up")
    res = run("render", lat, "-o", tmp_path / "r", "--checkpoint", case_checkpoint("stylegan2_64_cm1"))
    assert res.exit_code == 1, res.output
    out = res.output
    assert "wrong.npy" in out and "(14, 512)" in out and "(10, 512)" in out
    assert "nan.npy" in out and "NaN" in out and "obj.npy" in out
    assert "notes.txt" not in out
    png = np.asarray(Image.open(tmp_path / "r" / "good.png"))
    assert np.abs(png.astype(int) - to_uint8(torch.from_numpy(z["images_wplus"][0])).astype(int)).max() <= 1


def test_cars_domain_inputs_and_crop(tmp_path, case_checkpoint, case_arrays):
    z = case_arrays("e4e_cars_512")
    Image.fromarray(z["input_0"]).save(tmp_path / "car.png")
    res = run("invert", tmp_path / "car.png", "-o", tmp_path / "o", "--checkpoint", case_checkpoint("e4e_cars_512"), "--save-reconstructions")
    assert res.exit_code == 0, res.output
    assert np.abs(np.load(tmp_path / "o" / "car.npy") - z["latents"][0]).max() <= 1e-3
    png = np.asarray(Image.open(tmp_path / "o" / "car.png"))
    assert png.shape == (384, 512, 3)
    assert np.abs(png.astype(int) - to_uint8(torch.from_numpy(z["images_cropped"][0])).astype(int)).max() <= 1


def test_bad_inputs_fail_alone_and_exit_1(tmp_path, case_checkpoint, case_arrays):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(case_arrays("single_256")["input_1"]).save(photos / "ok.jpg")
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "text.png").write_text("nope")
    good = (photos / "ok.jpg").read_bytes()
    (photos / "trunc.jpg").write_bytes(good[: len(good) // 3])
    Image.new("RGBA", (40, 30), (200, 10, 10, 128)).save(photos / "rgba.png")
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)).save(photos / "g16.png")
    res = run("invert", photos, tmp_path / "missing.jpg", "-o", tmp_path / "o", "--checkpoint", case_checkpoint("single_256"), "--batch-size", "2")
    assert res.exit_code == 1, res.output
    for name, reason in [("empty.jpg", "empty"), ("text.png", "not an image"), ("trunc.jpg", "truncated"), ("missing.jpg", "no such file")]:
        assert name in res.output and reason in res.output, name
    assert sorted(p.name for p in (tmp_path / "o").glob("*.npy")) == ["g16.npy", "ok.npy", "rgba.npy"]
    lines = [json.loads(x) for x in (tmp_path / "o" / "manifest.jsonl").read_text().splitlines()]
    assert sum(r["status"] == "failed" for r in lines) == 4 and sum(r["status"] == "ok" for r in lines) == 3


def test_colliding_output_names_stop_before_any_work(tmp_path, case_checkpoint):
    photos = tmp_path / "p"
    photos.mkdir()
    Image.new("RGB", (8, 8)).save(photos / "a.jpg")
    Image.new("RGB", (8, 8)).save(photos / "a.png")
    res = run("invert", photos, "-o", tmp_path / "o", "--checkpoint", case_checkpoint("single_256"))
    assert res.exit_code == 2 and "a.jpg" in res.output and "a.png" in res.output
    assert not (tmp_path / "o").exists()


def test_generator_only_checkpoint_cannot_invert(tmp_path, case_checkpoint):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    res = run("invert", tmp_path / "a.png", "-o", tmp_path / "o", "--checkpoint", case_checkpoint("stylegan2_64_cm1"))
    assert res.exit_code == 2 and "only a generator" in res.output


def test_unusable_checkpoint_and_device_errors_are_one_line(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nope")
    res = run("invert", tmp_path / "a.png", "-o", tmp_path / "o", "--checkpoint", bad)
    assert res.exit_code == 2 and "bad.pt" in res.output and "Traceback" not in res.output
    if not torch.cuda.is_available():
        res = run("invert", tmp_path / "a.png", "-o", tmp_path / "o", "--checkpoint", bad, "--device", "cuda")
        assert res.exit_code == 2 and "CUDA is not available" in res.output


@pytest.mark.parametrize("command", ["invert", "render"])
def test_help_has_examples(command):
    res = run(command, "--help")
    assert res.exit_code == 0 and "Examples" in res.output and f"e4e {command}" in res.output


def test_cli_import_is_light():
    code = "import sys, e4ecli.cli; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, "importing the CLI must not import torch"
    out = subprocess.run([sys.executable, "-m", "e4ecli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "invert" in out.stdout
