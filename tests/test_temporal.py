"""Temporal metrics of clips (metrics.temporal, `e4e eval OUT.mp4 --source CLIP.mp4`): STIT's TL-ID / TG-ID and
flicker, hand-computed small cases and a clip of identical frames."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run
from e4ecli.metrics.temporal import FlickerMeter, flicker_ratio, relative_similarity, tg_id, tl_id


def unit(*rows):
    a = np.asarray(rows, dtype=np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_identical_frames_give_one():
    f = unit([1, 2, 3], [1, 2, 3], [1, 2, 3], [1, 2, 3])
    assert tl_id(f, f) == pytest.approx(1) and tg_id(f, f) == pytest.approx(1)


def test_tl_and_tg_id_by_hand():
    """Source: one face throughout (similarity 1). Output: the middle frame turns to a face 0.6 away."""
    src = unit([1, 0], [1, 0], [1, 0])
    out = unit([1, 0], [0.6, 0.8], [1, 0])
    assert tl_id(out, src) == pytest.approx((0.6 + 0.6) / 2)
    # ordered pairs i != j: (0,1) (1,0) 0.6, (0,2) (2,0) 1, (1,2) (2,1) 0.6
    assert tg_id(out, src) == pytest.approx((4 * 0.6 + 2 * 1.0) / 6)
    # the ratio is taken pair by pair: a source whose frames differ (similarity 0.8) scales each pair
    src2 = unit([1, 0], [0.8, 0.6], [1, 0])
    rel = relative_similarity(out, src2)
    assert rel[0, 1] == pytest.approx(0.6 / 0.8) and rel[1, 2] == pytest.approx(0.6 / 0.8) and rel[0, 2] == pytest.approx(1.0)
    assert tl_id(out, src2) == pytest.approx(0.75)
    # a frame without a face (NaN) leaves its pairs out
    gap = np.vstack([out[:1], np.full((1, 2), np.nan), out[2:]])
    assert tl_id(gap, np.vstack([src[:1], np.full((1, 2), np.nan), src[2:]])) is None
    assert tg_id(gap, np.vstack([src[:1], np.full((1, 2), np.nan), src[2:]])) == pytest.approx(1.0)


def test_flicker_by_hand():
    """2x2 frames, one channel pixel changes: output by 10 then 0, source by 5 then 5, inside a 2-pixel region."""
    region = np.array([[True, True], [False, False]])
    frames = np.zeros((3, 2, 2, 1), np.uint8)
    out, src = frames.copy(), frames.copy()
    out[1, 0, 0], out[2, 0, 0] = 10, 10
    src[1, 0, 1], src[2, 0, 1] = 5, 10
    out[:, 1, 1, 0] = [0, 200, 0]  # outside the region: ignored
    meter = FlickerMeter()
    for t in range(3):
        meter.add(out[t], src[t], region)
    r = meter.report()
    assert r["flicker_output"] == pytest.approx((10 + 0) / 4) and r["flicker_source"] == pytest.approx((5 + 5) / 4)
    assert r["flicker"] == pytest.approx(1.0) and r["flicker_pairs"] == 2
    assert flicker_ratio(0.0, 0.0) == 1.0 and flicker_ratio(1.0, 0.0) is None and flicker_ratio(3.0, 1.5) == 2.0


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """The kit's face on a background, 4 identical frames (mp4), and an identical copy as the 'edit'."""
    from conftest import kit_or_skip
    from PIL import Image

    from e4ecli.files.video import write_video

    kit = kit_or_skip()
    pytest.importorskip("dlib")
    root = tmp_path_factory.mktemp("clips")
    face = np.asarray(Image.open(kit / "photos" / "face.jpg").convert("RGB").resize((320, 320)))
    frame = np.full((360, 480, 3), 40, np.uint8)
    frame[20:340, 80:400] = face
    src = root / "clip.mp4"
    write_video(src, [frame] * 4, 25)
    out = root / "edit.mp4"
    out.write_bytes(src.read_bytes())
    weights = __import__("weights")
    arcface = weights.write_network("arcface_ir_se50", "model", 61, root / "arcface.pth")
    return src, out, arcface, root


def test_eval_of_a_clip_of_identical_frames(clips):
    src, out, arcface, root = clips
    res = run("eval", out, "--source", src, "--json", root / "m.json", "--arcface", arcface, "--detector", "dlib", "--device", "cpu")
    assert res.exit_code == 0, res.output
    m = json.loads((root / "m.json").read_text())
    assert m["n_frames"] == 4 and m["frames_without_face"] == []
    assert m["tl_id"] == pytest.approx(1, abs=1e-6) and m["tg_id"] == pytest.approx(1, abs=1e-6)
    # no change between frames in either clip: 0 / 0, as steady as the source
    assert m["flicker_output"] == m["flicker_source"] and m["flicker"] == 1.0 and m["flicker_pairs"] == 3
    assert "TL-ID" in res.output and "TG-ID" in res.output and "flicker" in res.output


def test_clip_eval_options_are_checked_before_work(clips, tmp_path):
    src, out, arcface, root = clips
    res = run("eval", out, "--json", tmp_path / "m.json")
    assert res.exit_code == 2 and "--source" in res.output
    res = run("eval", out, "--source", out, "--json", tmp_path / "m.json")
    assert res.exit_code == 2 and "its own --source" in res.output
    bad = tmp_path / "fake.mp4"
    bad.write_text("not a video")
    res = run("eval", out, "--source", bad, "--json", tmp_path / "m.json")
    assert res.exit_code == 2 and "fake.mp4" in res.output
    res = run("eval", out, "--source", src, "--json", tmp_path / "m.json", "-d", "age")
    assert res.exit_code == 2 and "TL-ID" in res.output
    assert not (tmp_path / "m.json").exists()
