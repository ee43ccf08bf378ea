"""Reliability and security across commands (issue 8): hostile inputs, kill -9 mid-run, untrusted
files, output paths. Real files made here, real subprocesses killed with SIGKILL; no mocks.

What is already covered elsewhere is not repeated: load_rgb per image kind (test_images), safe
checkpoint loading (test_loader), ADA pickles (test_ada), zoo/direction sha256 (test_zoo,
test_directions_*), naming helpers (test_files), fuzzing of the loaders (test_fuzz).
"""
from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run

ROOT = Path(__file__).resolve().parents[1]



def manifest(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def dlib_or_skip():
    from e4ecli.landmarks import dlib_problem

    problem = dlib_problem()
    if problem:
        pytest.skip(f"dlib backend unavailable: {problem}")


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def head() -> np.ndarray:
    """A real face (scikit-image's astronaut, cropped as in test_align)."""
    data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(data.astronaut()[0:280, 80:360])



@pytest.fixture(scope="module")
def gen(tmp_path_factory) -> Path:
    """A tiny 64 px generator checkpoint (16 channels, rosinality layout): renders in milliseconds, so the
    tests below spend their time on what they test, not on convolutions. Numbers are checked elsewhere."""
    import torch

    from e4ecli.models.stylegan2 import Generator

    torch.manual_seed(0)
    g = Generator(64, 512, n_mlp=2, channels={r: 16 for r in (4, 8, 16, 32, 64)})
    path = tmp_path_factory.mktemp("tiny") / "tiny_g64.pt"
    torch.save({"g_ema": g.state_dict(), "latent_avg": torch.zeros(512)}, path)
    return path


@pytest.fixture(scope="module")
def wplus() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((3, 10, 512)).astype(np.float32)  # (3, n_styles, 512)


INVALID = {  # name -> words the reason must contain
    "empty.jpg": "empty",
    "trunc.jpg": "truncated",
    "text.png": "not an image",
    "bomb.png": "decompression bomb",
}
ODD_VALID = ("g16.png", "cmyk.jpg", "rgba.png", "la.png", "ptrans.png", "exif.jpg", "one.png", "wide.png", "tall.png")


def make_images(folder: Path, head: np.ndarray, names=None) -> Path:
    """Every kind of hostile or odd image the issue lists, made for real in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    face = Image.fromarray(head)
    buf = io.BytesIO()
    face.save(buf, "JPEG")
    makers = {
        "face.png": lambda p: face.save(p),
        "empty.jpg": lambda p: p.write_bytes(b""),
        "trunc.jpg": lambda p: p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2]),
        "text.png": lambda p: p.write_text("hello, I am not a PNG"),
        "bomb.png": lambda p: Image.new("1", (10_000, 9_500)).save(p),  # 95 Mpx in a few kB
        "g16.png": lambda p: Image.fromarray(np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)).save(p),
        "cmyk.jpg": lambda p: face.convert("CMYK").save(p),
        "rgba.png": lambda p: (lambda im: (im.putalpha(128), im.save(p)))(face.convert("RGBA")),
        "la.png": lambda p: face.convert("LA").save(p),
        "ptrans.png": lambda p: face.convert("P").save(p, transparency=0),
        "exif.jpg": lambda p: face.rotate(90, expand=True).save(p, exif=_orientation(6)),
        "one.png": lambda p: Image.new("RGB", (1, 1), (1, 2, 3)).save(p),
        "wide.png": lambda p: Image.new("RGB", (4000, 2), (1, 2, 3)).save(p),
        "tall.png": lambda p: Image.new("RGB", (2, 4000), (1, 2, 3)).save(p),
    }
    for name in names or makers:
        makers[name](folder / name)
    return folder


def _orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


def assert_failures_reported(res, out: Path, expected: dict[str, str]) -> None:
    """Exit 1, one ✗ line per failed file naming it and the reason, listed in the summary and manifest."""
    assert res.exit_code == 1, res.output
    lines = res.output.splitlines()
    for name, reason in expected.items():
        hits = [ln for ln in lines if ln.startswith("✗") and name in ln]
        assert len(hits) == 1 and reason in hits[0], (name, hits)
    summary = res.output[res.output.index("failed inputs"):]
    assert all(name in summary for name in expected)
    failed = {Path(r["source"]).name: r["error"] for r in manifest(out) if r["status"] == "failed"}
    assert set(failed) == set(expected) and all(expected[n] in failed[n] for n in expected)


# -- bad images: align and invert ---------------------------------------------------------------------
def test_align_decides_each_hostile_image_alone(head, tmp_path):
    """Invalid files fail with their reason, valid faceless ones with 'no face found'; the faces are aligned."""
    dlib_or_skip()
    photos = make_images(tmp_path / "photos", head)
    res = run("align", photos, "-o", tmp_path / "out", "--size", 64, "--supersample", 1, "--detector", "dlib")
    faceless = {n: "no face found" for n in ("g16.png", "one.png", "wide.png", "tall.png")}
    assert_failures_reported(res, tmp_path / "out", {**INVALID, **faceless})
    aligned = {"face", "cmyk", "rgba", "la", "ptrans", "exif"}
    assert {p.stem for p in (tmp_path / "out").glob("*.png")} == aligned
    for stem in aligned:
        assert Image.open(tmp_path / "out" / f"{stem}.png").size == (64, 64)
        assert json.loads((tmp_path / "out" / f"{stem}.json").read_text())["output"] == f"{stem}.png"
    assert len(manifest(tmp_path / "out")) == 14


def test_every_odd_but_valid_image_becomes_an_encoder_input(head, tmp_path):
    """16-bit, CMYK, alpha, palette transparency, EXIF-rotated, 1-pixel and 4000:2 images all reach the
    encoder as finite (3, 256, 256) tensors in [-1, 1] (what invert feeds the model)."""
    import torch

    from e4ecli.domains import domain_for
    from e4ecli.pipelines.invert import _Preprocess

    make_images(tmp_path, head, ODD_VALID)
    pre = _Preprocess(domain_for("ffhq_encode"))
    for name in ODD_VALID:
        x, info, face = pre(tmp_path / name)
        assert x.shape == (3, 256, 256) and torch.isfinite(x).all() and x.abs().max() <= 1, name
        assert info is None and face is None


def test_invert_decides_each_hostile_image_alone(head, e4e_64, tmp_path):
    """Invalid images fail with their reason in the same batch as valid odd ones, which are inverted."""
    photos = make_images(tmp_path / "photos", head, [*INVALID, "ptrans.png", "one.png"])
    res = run("invert", photos, "-o", tmp_path / "out", "--checkpoint", e4e_64, "--device", "cpu", "--batch-size", 6)
    assert_failures_reported(res, tmp_path / "out", INVALID)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.npy")) == ["one.npy", "ptrans.npy"]
    assert np.load(tmp_path / "out" / "one.npy").shape == (10, 512)
    assert [r["status"] for r in manifest(tmp_path / "out")].count("ok") == 2


# -- bad latents and direction files: render, edit, video -----------------------------------------------
def make_bad_latents(folder: Path, wplus: np.ndarray) -> dict[str, str]:
    """Good latents plus every bad kind; returns bad file name -> words of its reason."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "good.npy", wplus[0])
    np.save(folder / "w.npy", wplus[1][0])  # a single W code is fine
    np.save(folder / "shape.npy", np.zeros((14, 512), np.float32))
    nan = wplus[0].copy()
    nan[3, 7] = np.nan
    np.save(folder / "nan.npy", nan)
    inf = wplus[0].astype(np.float64)
    inf[0, 0] = np.inf
    np.save(folder / "inf.npy", inf)
    np.save(folder / "huge.npy", np.full((10, 512), 1e300))  # finite float64, inf once float32
    np.save(folder / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    good = (folder / "good.npy").read_bytes()
    (folder / "trunc.npy").write_bytes(good[: len(good) // 2])
    (folder / "empty.npy").write_bytes(b"")
    (folder / "text.npy").write_text("0.1 0.2 0.3")
    np.savez(folder / "pack.npz", w=wplus[0])  # not .npy: only picked up when named directly
    return {"shape.npy": "(14, 512)", "nan.npy": "NaN", "inf.npy": "infinite", "huge.npy": "infinite",
            "obj.npy": "never unpickled", "trunc.npy": "cannot read", "empty.npy": "cannot read",
            "text.npy": "cannot read", "pack.npz": "not a .npy"}


def test_render_and_edit_decide_each_bad_latent_alone(gen, wplus, tmp_path):
    bad = make_bad_latents(tmp_path / "lat", wplus)
    direction = tmp_path / "dir.npy"
    np.save(direction, np.random.default_rng(0).standard_normal(512).astype(np.float32))
    for cmd, extra in (("render", []), ("edit", ["--direction", direction, "--strength", 2])):
        out = tmp_path / cmd
        res = run(cmd, tmp_path / "lat", tmp_path / "lat" / "pack.npz", "-o", out, "-c", gen, "--device", "cpu", *extra)
        assert_failures_reported(res, out, bad)
        assert sorted(p.name for p in out.glob("*.png")) == ["good.png", "w.png"], cmd
        assert len(manifest(out)) == 11


@pytest.mark.parametrize("bad", ["nan.npy", "obj.npy", "trunc.npy", "pack.npz"])
def test_video_refuses_a_bad_keyframe_in_one_line(gen, wplus, tmp_path, bad):
    reasons = make_bad_latents(tmp_path / "lat", wplus)
    out = tmp_path / "v.gif"
    res = run("video", tmp_path / "lat" / "good.npy", tmp_path / "lat" / bad, "-o", out, "-n", 2, "-c", gen, "--device", "cpu")
    assert res.exit_code == 1, res.output
    line = [ln for ln in res.output.splitlines() if bad in ln]
    assert len(line) == 1 and reasons[bad] in line[0] and "Traceback" not in res.output
    assert not out.exists() and not list(tmp_path.glob(".v.gif*"))


class _Evil:
    """Unpickling this runs `touch target`: what a malicious direction file would carry."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_direction_files_that_cannot_be_used_stop_edit_before_any_work(gen, wplus, tmp_path):
    """A direction carrying code is refused without running it; garbage, object arrays, NaN and wrong
    shapes each give one line naming the file; exit 2, no output folder."""
    import torch

    np.save(tmp_path / "a.npy", wplus[0])
    marker = tmp_path / "pwned"
    torch.save({"direction": torch.zeros(512), "payload": _Evil(marker)}, tmp_path / "evil.pt")
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 not really a zip")
    np.save(tmp_path / "obj.npy", np.array([_Evil(marker)], dtype=object), allow_pickle=True)
    np.save(tmp_path / "nan.npy", np.full(512, np.nan, np.float32))
    np.save(tmp_path / "short.npy", np.ones(7, np.float32))
    with open(tmp_path / "bomb.npy", "wb") as f:  # a header claiming 4 TB, and no data
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**9, 512)})
    (tmp_path / "torn.npz").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    cases = {"evil.pt": "refused", "junk.pt": "junk.pt", "obj.npy": "never unpickled", "nan.npy": "NaN",
             "short.npy": "short.npy", "missing.pt": "no such", "bomb.npy": "far too large", "torn.npz": "cannot read"}
    for name, reason in cases.items():
        out = tmp_path / f"out_{name}"
        res = run("edit", tmp_path / "a.npy", "-o", out, "--direction", tmp_path / name, "--strength", 1, "-c", gen)
        errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
        assert res.exit_code == 2 and len(errors) == 1, (name, res.output)
        assert name in errors[0] and reason in errors[0], (name, errors[0])
        assert not out.exists() and "Traceback" not in res.output
    assert not marker.exists()


def test_checkpoint_with_wrong_keys_or_shapes_is_one_line_exit_2(gen, wplus, tmp_path):
    """Through a real process (stderr not a terminal): one error line naming the file and the mismatch."""
    import torch

    np.save(tmp_path / "a.npy", wplus[0])
    ck = torch.load(gen, weights_only=True)
    shape = dict(ck["g_ema"], **{"conv1.activate.bias": torch.zeros(7)})
    extra = dict(ck["g_ema"], **{"surprise.weight": torch.zeros(3)})
    torch.save({"g_ema": shape}, tmp_path / "shape.pt")
    torch.save({"g_ema": extra}, tmp_path / "extra.pt")
    for name, mismatch in (("shape.pt", "conv1.activate.bias: file (7,) vs model (16,)"), ("extra.pt", "surprise.weight")):
        proc = subprocess.run([sys.executable, "-m", "e4ecli", "render", tmp_path / "a.npy", "-o", tmp_path / "o", "-c", tmp_path / name],
                              capture_output=True, text=True, env=_env(COLUMNS="60"), timeout=120)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 2, proc.stderr
        assert len(lines) == 1 and lines[0].startswith("error:") and str(tmp_path / name) in lines[0] and mismatch in lines[0], lines
        assert not (tmp_path / "o").exists()


# -- paths ----------------------------------------------------------------------------------------------
def test_output_names_stay_inside_out_and_unique(gen, wplus, tmp_path):
    """`..`, symlink loops, spaces, unicode, names of 254 bytes and names that are not UTF-8: every input
    gets its own output, all of them inside -o, and the manifest names each one."""
    lat = tmp_path / "lat"
    (lat / "sub").mkdir(parents=True)
    long_a, long_b = "ü" * 124 + "a.npy", "ü" * 124 + "b.npy"  # 254-byte names that differ only at the end
    names = ["plain.npy", "with space.npy", "été 😀.npy", long_a, long_b, "sub/deep.npy"]
    for i, name in enumerate(names):
        np.save(lat / name, wplus[i % 3])
    raw = os.fsencode(lat) + b"/bytes\xff\xfe.npy"  # a name that is not valid UTF-8
    with open(raw, "wb") as f:
        np.save(f, wplus[0])
    os.symlink(lat, lat / "sub" / "loop")  # a symlink loop back to the top
    os.symlink(lat / "sub", lat / "again")  # a second way into the same folder
    out = tmp_path / "out"
    dotdot = lat / "sub" / ".." / "plain.npy"  # also named directly, through `..`: the same file, counted once
    res = run("render", lat, dotdot, "-o", out, "-c", gen, "--device", "cpu", "--batch-size", 8)
    assert res.exit_code == 0, res.output
    base = os.path.realpath(out)
    made = [Path(root) / f for root, _, files in os.walk(out) for f in files if f.endswith(".png")]
    assert all(os.path.realpath(p).startswith(base + os.sep) for p in made)
    assert all(len(os.fsencode(part)) <= 255 for p in made for part in p.parts)
    records = manifest(out)
    # 7 files: the folder reached as sub/ and again/ is rendered once (under the name the sorted walk meets first)
    assert len(made) == len(records) == 7 and len({r["output"] for r in records}) == 7
    assert {os.path.realpath(r["source"]) for r in records} == {os.path.realpath(lat / n) for n in names} | {os.fsdecode(os.path.realpath(raw))}
    assert (out / "with space.png").is_file() and (out / "été 😀.png").is_file()
    assert len([r for r in records if r["output"] in ("sub/deep.png", "again/deep.png")]) == 1
    assert len({r["output"] for r in records if r["output"].startswith("ü")}) == 2  # shortened with a hash, still distinct
    res = run("render", lat, "-o", out, "-c", gen, "--device", "cpu")  # a rerun reads the manifest back and skips all
    assert res.exit_code == 0 and len(manifest(out)) == 7 and "Traceback" not in res.output


# -- kill -9 mid-run ----------------------------------------------------------------------------------
def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)
    env.setdefault("COLUMNS", "200")
    return env


def _visible_files(out: Path) -> list[Path]:
    return sorted(Path(r) / f for r, _, fs in os.walk(out) for f in fs if not f.startswith("."))


def _assert_complete(path: Path) -> None:
    """A visible output is whole: it loads, and it is no temp file under a final name."""
    assert ".tmp" not in path.name, path
    if path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
        assert arr.dtype == np.float32 and np.isfinite(arr).all()
    elif path.suffix == ".png":
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            im.load()
    elif path.suffix == ".json":
        json.loads(path.read_text(encoding="utf-8"))
    elif path.name.startswith("manifest"):
        lines = path.read_text(encoding="utf-8").splitlines()
        for line in lines[:-1]:  # only the last line may be torn by the kill
            json.loads(line)
    else:
        raise AssertionError(f"unexpected output {path}")


def kill_and_rerun(args: list, out: Path, expected: dict[str, list[Path]], moment: str, rng: random.Random) -> None:
    """Run `e4e ARGS`, SIGKILL it at `moment` ("first": as soon as an output appears; "random": after a
    random delay), check what it left, rerun, and check the rerun did exactly the missing work.

    expected: input key -> every output path of that input (the first is the one the manifest names).
    """
    cmd = [sys.executable, "-m", "e4ecli", *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    try:
        if moment == "first":
            deadline = time.monotonic() + 180
            first = [outs[0] for outs in expected.values()]
            while not any(p.exists() for p in first) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
        else:
            time.sleep(rng.uniform(2.0, 7.0))  # from start-up to well into the run
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    for path in _visible_files(out) if out.exists() else []:
        _assert_complete(path)
    # finished: every output exists and the manifest recorded it (an output the kill caught before its manifest
    # line was appended cannot be proven to be this command's, so the rerun redoes it)
    from e4ecli.files.provenance import manifest_paths, read_records

    recorded = {k for k, r in read_records(manifest_paths(out)).items() if r.get("status") == "ok"}
    finished = {k: {p: p.stat().st_mtime_ns for p in outs} for k, outs in expected.items()
                if all(p.exists() for p in outs) and outs[0].relative_to(out).as_posix() in recorded}
    if moment == "first":
        assert len(finished) < len(expected), "the kill came after the run had finished"
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for outs in expected.values():
        for p in outs:
            assert p.is_file(), p
            _assert_complete(p)
    for key, stamps in finished.items():  # finished work is never redone
        assert all(p.stat().st_mtime_ns == t for p, t in stamps.items()), key
    records = manifest(out)
    assert sorted(r["output"] for r in records) == sorted(str(outs[0].relative_to(out)) for outs in expected.values())
    assert all(r["status"] in ("ok", "skipped") for r in records)
    assert not [p for p in _visible_files(out) if all(p not in outs for outs in expected.values()) and p.name != "manifest.jsonl"]


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["first", "random"])
def test_render_killed_mid_run(gen, wplus, tmp_path, moment):
    lat = tmp_path / "lat"
    lat.mkdir()
    for i in range(40):
        np.save(lat / f"w{i:02d}.npy", wplus[i % 3] + 0.01 * i)
    out = tmp_path / "out"
    expected = {f"w{i:02d}": [out / f"w{i:02d}.png"] for i in range(40)}
    kill_and_rerun(["render", lat, "-o", out, "-c", gen, "--device", "cpu", "--batch-size", 1], out, expected, moment,
                   random.Random(moment))


@pytest.mark.slow
def test_edit_sweep_killed_mid_run(gen, wplus, tmp_path):
    """Several files per input (frames, strip, latents): an input counts as done only when all exist."""
    lat = tmp_path / "lat"
    lat.mkdir()
    for i in range(10):
        np.save(lat / f"w{i}.npy", wplus[i % 3])
    direction = tmp_path / "d.npy"
    np.save(direction, np.random.default_rng(1).standard_normal(512).astype(np.float32))
    out = tmp_path / "out"
    expected = {f"w{i}": [out / f"w{i}.png"] + [out / f"w{i}" / f"{j:02d}_s{s}{ext}" for j, s in enumerate(["-2", "+2"])
                                                  for ext in (".png", ".npy")] for i in range(10)}
    kill_and_rerun(["edit", lat, "-o", out, "-d", direction, "-s", "-2:2:2", "--save-latents", "-c", gen, "--device", "cpu",
                    "--batch-size", 1], out, expected, "first", random.Random(0))


@pytest.mark.slow
def test_invert_killed_mid_run(head, e4e_64, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(np.roll(head, 7 * i, axis=1)).save(photos / f"p{i}.png")
    out = tmp_path / "out"
    expected = {f"p{i}": [out / f"p{i}.npy", out / f"p{i}.png"] for i in range(2)}
    kill_and_rerun(["invert", photos, "-o", out, "-c", e4e_64, "--device", "cpu", "--batch-size", 1, "--save-reconstructions"],
                   out, expected, "first", random.Random(0))


@pytest.mark.slow
def test_align_killed_mid_run(head, tmp_path):
    dlib_or_skip()
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(16):
        Image.fromarray(np.roll(head, i, axis=0)).save(photos / f"f{i:02d}.png")
    out = tmp_path / "out"
    expected = {f"f{i:02d}": [out / f"f{i:02d}.png", out / f"f{i:02d}.json"] for i in range(16)}
    kill_and_rerun(["align", photos, "-o", out, "--size", 64, "--supersample", 1, "--detector", "dlib"], out, expected, "first",
                   random.Random(0))


def test_output_folder_inside_the_input_folder_is_not_read_back(gen, wplus, tmp_path):
    """`e4e edit lat/ -o lat/edited --save-latents` twice: the rerun skips, it does not edit its own outputs."""
    lat = tmp_path / "lat"
    lat.mkdir()
    np.save(lat / "a.npy", wplus[0])
    direction = tmp_path / "d.npy"
    np.save(direction, np.ones(512, np.float32))
    args = ["edit", lat, "-o", lat / "edited", "-d", direction, "-s", 1, "--save-latents", "-c", gen, "--device", "cpu"]
    assert run(*args).exit_code == 0
    res = run(*args)
    assert res.exit_code == 0, res.output
    assert [r["output"] for r in manifest(lat / "edited")] == ["a.png"] and not (lat / "edited" / "edited").exists()
    res = run("render", lat, "-o", lat, "-c", gen, "--device", "cpu")  # -o the input folder itself still works
    assert res.exit_code == 0 and (lat / "a.png").is_file()


@pytest.mark.slow
def test_video_killed_mid_run(gen, wplus, tmp_path):
    """A killed `e4e video` leaves no video under the final name (ffmpeg streams into a hidden temp file);
    the rerun writes the whole one."""
    imageio = pytest.importorskip("imageio.v2")

    keys = []
    for i in range(2):
        keys.append(tmp_path / f"k{i}.npy")
        np.save(keys[-1], wplus[i])
    out = tmp_path / "v" / "morph.mp4"
    cmd = [sys.executable, "-m", "e4ecli", "video", *map(str, keys), "-o", str(out), "-n", "60", "-b", "1", "-c", str(gen), "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    deadline = time.monotonic() + 120
    while not (out.parent.exists() and any(out.parent.iterdir())) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # the hidden temp file appears when ffmpeg starts taking frames
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not out.exists(), "the kill came after the video was finished"
    assert all(p.name.startswith(".") for p in out.parent.iterdir())  # leftovers are hidden temp files
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    reader = imageio.get_reader(out, format="FFMPEG")
    try:
        assert reader.count_frames() == 60
    finally:
        reader.close()


def test_manifest_keeps_a_line_for_every_missing_input(tmp_path):
    """Inputs that do not exist have no output name; each still gets its own manifest line, across reruns."""
    from e4ecli.files.batch import Manifest, Record

    for _ in range(2):
        with Manifest(tmp_path / "o") as m:
            for i in range(3):
                m.add(Record(str(tmp_path / f"gone{i}.npy"), "", "failed", "no such file or folder"))
    assert sorted(Path(r["source"]).name for r in manifest(tmp_path / "o")) == ["gone0.npy", "gone1.npy", "gone2.npy"]


def test_directions_fit_reports_a_latent_whose_header_claims_terabytes(tmp_path):
    """The first latent decides n_styles from its header alone; a bomb header is one ✗ line, not a MemoryError."""
    lat = tmp_path / "lat"
    lat.mkdir()
    with open(lat / "bomb.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 512)})
    (lat / "mangled.npy").write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'shape': \x0010, 512), }" + b" " * 60 + b"\n")
    rng = np.random.default_rng(0)
    rows = ["name,label", "bomb,1", "mangled,0"]
    for i in range(8):
        np.save(lat / f"c{i}.npy", (rng.standard_normal((1, 512)) + (2 if i % 2 else -2)).astype(np.float32))
        rows.append(f"c{i},{i % 2}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    res = run("directions", "fit", "--latents", lat, "--labels", tmp_path / "labels.csv", "-o", tmp_path / "d.npy")
    assert res.exit_code == 1, res.output
    for name in ("bomb.npy", "mangled.npy"):
        assert len([ln for ln in res.output.splitlines() if ln.startswith("✗") and name in ln]) == 1, (name, res.output)
    assert np.load(tmp_path / "d.npy").shape == (1, 512)
