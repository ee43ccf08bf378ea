"""`e4e video`: interpolation and edit sweeps written as MP4 (imageio-ffmpeg) or GIF, read back."""
from __future__ import annotations

import sys

import imageio.v2 as imageio
import imageio.v3 as iio
import numpy as np
import pytest
import torch

from e4ecli.files.images import to_uint8
from editing_kit import g64, g64_path, run_cli, says, wplus64  # noqa: F401


@pytest.fixture
def keyframes(tmp_path, wplus64):
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"k{i}.npy")
        np.save(paths[-1], wplus64[i])
    return paths


def test_mp4_has_the_frames_fps_and_duration_asked_for(tmp_path, keyframes, g64, g64_path):
    out = tmp_path / "morph.mp4"
    r = run_cli(["video", *keyframes, "-o", out, "--frames", 5, "--fps", 5, "--easing", "smooth", "-b", 3,
                 "-c", g64_path, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    reader = imageio.get_reader(out, format="FFMPEG")
    try:
        meta = reader.get_meta_data()
        assert reader.count_frames() == 5
        assert meta["fps"] == pytest.approx(5) and meta["duration"] == pytest.approx(1.0, abs=0.05)
        first, last = reader.get_data(0).astype(float), reader.get_data(4).astype(float)
    finally:
        reader.close()
    with torch.inference_mode():
        renders = to_uint8(g64.generator.synthesis(torch.from_numpy(np.stack([np.load(p) for p in keyframes])))).astype(float)
    # H.264 is lossy on the kit's noise-like renders, but in 4x4 block averages each end frame is
    # its own keyframe's render, and clearly not the other one
    def blocks(a):
        return a.reshape(16, 4, 16, 4, 3).mean(axis=(1, 3))

    for frame, own, other in ((first, renders[0], renders[1]), (last, renders[1], renders[0])):
        err = np.abs(blocks(frame) - blocks(own)).mean()
        assert err < 3 and np.abs(blocks(frame) - blocks(other)).mean() > 3 * err
    assert not list(tmp_path.glob(".*.tmp*"))  # written atomically, no temp file left


def test_gif_sweep_goes_there_and_back(tmp_path, keyframes, g64_path):
    direction = np.random.default_rng(3).standard_normal(512).astype(np.float32)
    np.save(tmp_path / "d.npy", direction)
    out = tmp_path / "sweep.gif"
    r = run_cli(["video", keyframes[0], "-d", tmp_path / "d.npy", "-s", "-2:2", "--frames", 3, "--fps", 4, "-o", out,
                 "-c", g64_path, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    frames = iio.imread(out, index=None)
    assert frames.shape[:3] == (3, 64, 64)
    assert np.array_equal(frames[0], frames[2]) and not np.array_equal(frames[0], frames[1])  # -2, +2, -2
    assert iio.immeta(out, index=0)["duration"] == pytest.approx(250, abs=10)  # ms per frame at 4 fps


def test_without_ffmpeg_an_mp4_request_writes_a_gif(tmp_path, keyframes, g64_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # as if imageio-ffmpeg were not installed
    r = run_cli(["video", *keyframes, "-o", tmp_path / "v.mp4", "--frames", 2, "-c", g64_path, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert says(r.output, "pip install imageio-ffmpeg")
    assert not (tmp_path / "v.mp4").exists() and iio.imread(tmp_path / "v.gif", index=None).shape[0] == 2


@pytest.mark.parametrize("args, message", [
    (["-o", "v.avi2"], "unsupported video type"),
    (["-o", "v.mp4", "--easing", "bouncy"], "use one of linear, smooth, cosine"),
    (["-o", "v.mp4", "-s", "1:2"], "give --direction too"),
    (["-o", "v.mp4", "-d", "age"], "--direction sweeps one latent; got 2"),
])
def test_video_usage_errors(tmp_path, keyframes, g64_path, args, message):
    args = [str(tmp_path / a) if a.startswith("v.") else a for a in args]
    r = run_cli(["video", *keyframes, *args, "-c", g64_path, "--device", "cpu"])
    assert r.exit_code == 2 and says(r.output, message), r.output


def test_an_existing_video_of_unknown_making_is_kept_unless_overwrite(tmp_path, keyframes, g64_path):
    out = tmp_path / "v.gif"
    out.write_bytes(b"previous")
    r = run_cli(["video", *keyframes, "-o", out, "--frames", 2, "-c", g64_path, "--device", "cpu"])
    assert r.exit_code == 2 and out.read_bytes() == b"previous" and says(r.output, "no record of how it was made; --overwrite")
    assert not (tmp_path / "manifest.jsonl").exists()
    r = run_cli(["video", *keyframes, "-o", out, "--frames", 2, "-c", g64_path, "--device", "cpu", "--overwrite"])
    assert r.exit_code == 0 and iio.imread(out, index=None).shape[0] == 2


def test_a_video_is_redone_when_its_settings_change_and_kept_when_not(tmp_path, keyframes, g64_path):
    out = tmp_path / "v.gif"
    base = ["video", *keyframes, "-o", out, "-c", g64_path, "--device", "cpu"]
    assert run_cli([*base, "--frames", 2]).exit_code == 0
    before = out.stat().st_mtime_ns
    r = run_cli([*base, "--frames", 2])
    assert r.exit_code == 0 and says(r.output, "nothing to do") and out.stat().st_mtime_ns == before
    r = run_cli([*base, "--frames", 3])
    assert r.exit_code == 0 and says(r.output, "made differently (frames")
    assert iio.imread(out, index=None).shape[0] == 3
    np.save(keyframes[1], np.load(keyframes[1]) + 0.5)  # another keyframe: another video
    r = run_cli([*base, "--frames", 3])
    assert r.exit_code == 0 and says(r.output, "made differently (keyframes")


def test_a_folder_gives_its_latents_as_keyframes_in_name_order(tmp_path, keyframes, g64_path):
    folder = tmp_path / "keys"
    folder.mkdir()
    for i, k in enumerate(reversed(keyframes)):  # written in reverse: the names decide the order, not the writes
        np.save(folder / f"{1 - i:02d}.npy", np.load(k))
    out = tmp_path / "v.gif"
    r = run_cli(["video", folder, "-o", out, "--frames", 2, "-c", g64_path, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    by_files = tmp_path / "f.gif"
    assert run_cli(["video", *keyframes, "-o", by_files, "--frames", 2, "-c", g64_path, "--device", "cpu"]).exit_code == 0
    assert np.array_equal(iio.imread(out, index=None), iio.imread(by_files, index=None))
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_cli(["video", empty, "-o", tmp_path / "e.gif", "-c", g64_path, "--device", "cpu"])
    assert r.exit_code == 2 and says(r.output, "empty: no .npy latents in this folder"), r.output
    r = run_cli(["video", folder, "-o", tmp_path / "d.gif", "-d", "age", "-c", g64_path, "--device", "cpu"])
    assert r.exit_code == 2 and says(r.output, "--direction sweeps one latent; got 2"), r.output
