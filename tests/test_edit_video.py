"""`e4e edit-video` and the video alignment: a clip made here (the kit's face moving over a background, a sine
tone), the kit's 64 px e4e and the dlib detector (offline)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run, write_e4e_64
from e4ecli.files import video as V
from editing_kit import KIT_DIRECTIONS, kit_module
from video_kit import FPS, background, make_clip

N = 12


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pytest.importorskip("dlib")
    weights = kit_module()
    root = tmp_path_factory.mktemp("edit_video")
    ckpt = write_e4e_64(weights, root / "e4e_64.pt", input_size=64)
    clip = make_clip(root / "clip.mp4", N)
    dirs = root / "dirs"
    dirs.mkdir()
    (dirs / "age.pt").write_bytes((KIT_DIRECTIONS / "age.pt").read_bytes())
    return root, ckpt, clip, dirs


@pytest.fixture
def env(setup, monkeypatch, tmp_path):
    root, ckpt, clip, dirs = setup
    monkeypatch.setenv("E4E_DIRECTIONS", str(dirs))
    return root, ckpt, clip


def args(clip, out, ckpt, *extra):
    return ["edit-video", clip, "-o", out, "-d", "age", "-s", "-3", "-c", ckpt, "-L", "dlib", "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def edited(setup):
    """One full run (module-scoped: the checks below read it)."""
    root, ckpt, clip, dirs = setup
    mp = pytest.MonkeyPatch()
    mp.setenv("E4E_DIRECTIONS", str(dirs))
    try:
        out = root / "out.mp4"
        r = run(*args(clip, out, ckpt))
        assert r.exit_code == 0, r.output
        mtime = out.stat().st_mtime_ns
        again = run(*args(clip, out, ckpt))
    finally:
        mp.undo()
    return out, r, again, mtime


def frames_of(path) -> np.ndarray:
    return np.stack(list(V.iter_frames(path))).astype(np.int16)


def test_frames_rate_and_audio_are_kept(setup, edited):
    _, _, clip, _ = setup
    out, r, _, _ = edited
    src, dst = V.probe(clip), V.probe(out)
    assert (dst.frame_count, dst.fps, dst.width, dst.height) == (N, src.fps, src.width, src.height) and dst.fps == FPS
    assert dst.has_audio and V.audio_packets(out) == V.audio_packets(clip) != []
    assert f"{N} frames at 12 fps, {N} edited, 0 without the face" in r.output


def test_pixels_outside_the_pasted_square_are_unchanged(setup, edited):
    from e4ecli.pasteback import paste_back

    _, _, clip, _ = setup
    out = edited[0]
    src, dst = frames_of(clip), frames_of(out)
    for i in range(N):
        side = json.loads((Path(str(out) + ".frames") / "aligned" / f"{i:06d}.json").read_text())
        square = paste_back(np.zeros(src[i].shape, np.uint8), np.full((8, 8, 3), 255, np.uint8), np.array(side["source_from_output"]),
                            side["output_size"], 0.1)[..., 0] > 0
        outside = np.abs(dst[i] - src[i])[~square]
        assert outside.mean() < 3 and np.percentile(outside, 99) < 20  # H.264 noise only
        assert np.abs(dst[i] - src[i])[square].mean() > 10  # the face was replaced


def test_sidecars_hold_the_raw_and_smoothed_quads(edited):
    folder = Path(str(edited[0]) + ".frames") / "aligned"
    sides = [json.loads((folder / f"{i:06d}.json").read_text()) for i in range(N)]
    assert [s["frame"] for s in sides] == list(range(N)) and {s["fps"] for s in sides} == {12.0}
    assert all(np.array(s["quad"]).shape == (4, 2) and np.array(s["quad_raw"]).shape == (4, 2) for s in sides)
    assert any(not np.allclose(s["quad"], s["quad_raw"]) for s in sides)


def test_identical_rerun_is_a_no_op(edited):
    out, _, again, mtime = edited
    assert again.exit_code == 0 and "up to date" in again.output and out.stat().st_mtime_ns == mtime


def test_an_identical_rerun_is_answered_before_torch_or_any_model_loads(setup, edited):
    """The edited clip's line in WORK/manifest.jsonl (e4ecli.runs.OutputRun) names what was asked; a fresh process
    with the same command says 'up to date' without importing torch (no checkpoint, no direction, no detector)."""
    root, ckpt, clip, dirs = setup
    out = edited[0]
    line = json.loads((Path(str(out) + ".frames") / "manifest.jsonl").read_text().splitlines()[-1])
    assert line["output"] == "../out.mp4" and line["status"] == "ok" and line["frames"] == N and line["settings"]["strengths"] == [[-3, -3]]
    code = ("import sys\nfrom e4ecli.cli import app\ntry:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    print('torch' in sys.modules, e.code)")
    r = subprocess.run([sys.executable, "-c", code, *map(str, args(clip, out, ckpt))], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT), E4E_DIRECTIONS=str(dirs)))
    assert r.stdout.split()[-2:] == ["False", "0"] and "up to date" in r.stderr, (r.stdout, r.stderr)


@pytest.mark.slow
def test_under_torchrun_the_frames_are_shared_and_the_clip_is_the_same(setup, edited, tmp_path):
    """2 gloo processes: each inverts and edits half of the frames into the shared work folder, rank 0 tracks, encodes
    and records; the latents and the clip match the one-process run's."""
    root, ckpt, clip, dirs = setup
    out, work = tmp_path / "d.mp4", tmp_path / "dwork"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", "-m", "e4ecli",
           *map(str, args(clip, out, ckpt, "--work", work))]
    env = dict(os.environ, PYTHONPATH=str(ROOT), E4E_DIRECTIONS=str(dirs), OMP_NUM_THREADS="1", COLUMNS="200")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    said = r.stdout + r.stderr
    assert said.count("wrote ") == 1 and f"frames shared by 2 processes: {N // 2}, {N // 2} frames" in said, said
    ref = Path(str(edited[0]) + ".frames") / "latents"
    for i in range(N):
        assert np.allclose(np.load(work / "latents" / f"{i:06d}.npy"), np.load(ref / f"{i:06d}.npy"), atol=1e-4)
    assert np.abs(frames_of(out) - frames_of(edited[0])).mean() < 1.0
    assert json.loads((work / "manifest.jsonl").read_text().splitlines()[-1])["status"] == "ok"


def test_smoothing_lowers_the_jitter_of_the_quads(edited):
    """Landmarks of the clip (dlib) plus a per-frame shake: the smoothed quads' second-difference energy is >= 3x
    below the raw ones'; with both sigmas 0 the quads are the raw ones."""
    from e4ecli.pipelines.video_align import second_difference_energy, smooth_quads

    track = json.loads((Path(str(edited[0]) + ".frames") / "aligned" / "track.json").read_text())
    rng = np.random.default_rng(0)
    shaken = [np.array(lm) + rng.normal(0, 2.0, 2) + rng.normal(0, 0.5, (68, 2)) for lm in track["landmarks"]]
    raw, smooth = smooth_quads(shaken, 1.0, 3.0)
    assert second_difference_energy(smooth) * 3 <= second_difference_energy(raw)
    raw0, same = smooth_quads(shaken, 0, 0)
    assert all(np.allclose(a, b) for a, b in zip(raw0, same))


def test_resume_after_kill_and_other_settings_redo_only_their_stage(env, tmp_path):
    root, ckpt, clip = env
    out, work = tmp_path / "k.mp4", tmp_path / "work"
    cmd = [sys.executable, "-m", "e4ecli", *map(str, args(clip, out, ckpt, "--work", work, "-b", "1"))]
    envs = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=envs, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    first = work / "latents" / "000002.npy"
    deadline = time.time() + 240
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first.exists() and not out.exists()
    kept = {p.name: p.stat().st_mtime_ns for p in (work / "aligned").glob("*.png")}
    kept_latent = first.stat().st_mtime_ns
    r = run(*args(clip, out, ckpt, "--work", work))
    assert r.exit_code == 0, r.output
    assert V.probe(out).frame_count == N
    assert first.stat().st_mtime_ns == kept_latent  # resumed, not redone
    assert {p.name: p.stat().st_mtime_ns for p in (work / "aligned").glob("*.png")} == kept
    # another strength: the edits and the output are redone, the alignment and the latents are kept
    r = run(*["edit-video", clip, "-o", out, "-d", "age", "-s", "0:2", "-c", ckpt, "-L", "dlib", "--device", "cpu", "--work", work])
    assert r.exit_code == 0, r.output
    assert first.stat().st_mtime_ns == kept_latent


def test_options_and_inputs_are_checked_before_anything_loads(env, tmp_path):
    root, ckpt, clip = env
    text = tmp_path / "notes.mp4"
    text.write_text("hello\n")
    png = tmp_path / "still.mp4"
    from PIL import Image

    Image.fromarray(background(32, 32)).save(png, format="PNG")
    audio_only = tmp_path / "sound.mp4"
    subprocess.run([V.ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:duration=0.5", "-c:a", "aac", str(audio_only)],
                   check=True)
    cases = [
        (text, tmp_path / "o1.mp4", "not a readable video"),
        (png, tmp_path / "o2.mp4", "is a PNG image, not a video"),
        (audio_only, tmp_path / "o3.mp4", "has no video stream (0 frames)"),
        (clip, clip, "is the input clip"),
        (clip, tmp_path / "o4.txt", "must be a video file"),
    ]
    for src, out, words in cases:
        r = run(*args(src, out, ckpt))
        assert r.exit_code == 2 and words in r.output, r.output
        assert r.output.count("error:") == 1
        assert not Path(str(out) + ".frames").exists() and (out == clip or not out.exists())
    # and in a fresh process: the same line and exit 2, without torch ever imported
    code = ("import sys\nfrom e4ecli.cli import app\ntry:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    print('torch' in sys.modules, e.code)")
    r = subprocess.run([sys.executable, "-c", code, *map(str, args(text, tmp_path / "o5.mp4", ckpt))], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.stdout.split() == ["False", "2"] and "not a readable video" in r.stderr, (r.stdout, r.stderr)


def test_huge_frames_are_refused(env, tmp_path, monkeypatch):
    root, ckpt, clip = env
    monkeypatch.setattr(V, "MAX_PIXELS", 100 * 100)
    r = run(*args(clip, tmp_path / "o.mp4", ckpt))
    assert r.exit_code == 2 and "200x160 are larger than the limit" in r.output


def test_truncated_clip_keeps_the_frames_before_the_damage(env, tmp_path):
    root, ckpt, clip = env
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "cut_out.mp4"
    r = run(*args(cut, out, ckpt))
    assert r.exit_code == 1 and "stopped at frame" in r.output, r.output
    k = int(r.output.split("stopped at frame ")[1].split()[0])
    assert 0 < k < N and V.probe(out).frame_count == k and V.probe(out).has_audio


def test_a_clip_without_a_face_or_sound(env, tmp_path):
    root, ckpt, clip = env
    empty = tmp_path / "wall.mp4"
    V.write_video(empty, [background(160, 128)] * 4, FPS)
    r = run(*args(empty, tmp_path / "o.mp4", ckpt))
    assert r.exit_code == 1 and "no face found in any of its 4 frames" in r.output and not (tmp_path / "o.mp4").exists()
    silent = make_clip(tmp_path / "silent.mp4", 4, audio=False)
    out = tmp_path / "s.mp4"
    r = run(*args(silent, out, ckpt, "--side-by-side"))
    assert r.exit_code == 0 and "no audio stream" in r.output, r.output
    info = V.probe(out)
    assert not info.has_audio and info.frame_count == 4 and info.width == 2 * V.probe(silent).width


def test_align_reads_videos_frame_by_frame(env, tmp_path):
    """`e4e align` on a clip: OUT/<clip>/<frame>.png + .json per frame (quad_raw, smoothed quad, frame, fps) and
    OUT/<clip>/clip.json; a rerun skips the clip; --all-faces is refused for videos before anything loads."""
    root, ckpt, clip = env
    out = tmp_path / "aligned"
    r = run("align", clip, "-o", out, "-L", "dlib", "--size", "32", "--supersample", "1", "--xy-sigma", "2")
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "clip" / "clip.json").read_text())
    assert summary["frames"] == N and summary["with_face"] == list(range(N)) and summary["xy_sigma"] == 2
    side = json.loads((out / "clip" / "000005.json").read_text())
    assert side["frame"] == 5 and side["fps"] == FPS and side["output_size"] == 32 and len(side["quad_raw"]) == 4
    r = run("align", clip, "-o", out, "-L", "dlib", "--size", "32", "--supersample", "1", "--xy-sigma", "2")
    assert r.exit_code == 0 and "│    0 │                      1 │" in r.output
    r = run("align", clip, "-o", tmp_path / "x", "-L", "dlib", "--all-faces")
    assert r.exit_code == 2 and "--all-faces is for photos" in r.output


def test_invert_points_a_video_to_align(env, tmp_path):
    root, ckpt, clip = env
    r = run("invert", clip, "-o", tmp_path / "inv", "--align", "-c", ckpt)
    assert r.exit_code == 2 and "is a video: align its frames first" in r.output and not (tmp_path / "inv").exists()
