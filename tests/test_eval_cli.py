"""`e4e eval` from the command line: JSON layout, per-image values, a bad image failing alone (exit 1),
an unobtainable metric reported with its reason while the others run, usage errors (exit 2)."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from conftest import run





@pytest.mark.slow
def test_eval_writes_json_and_reports_failures_and_unavailable_metrics(e4e_64, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (80, 72, 3), dtype=np.uint8)).save(photos / f"{name}.png")
    (photos / "broken.png").write_bytes(b"not a png")
    direction = tmp_path / "dir.npy"
    np.save(direction, rng.normal(size=512).astype(np.float32))
    out = tmp_path / "res" / "eval.json"
    res = run("eval", photos, "--checkpoint", e4e_64, "--metrics", "l2,id,swd,swd_edit,lec", "--direction", direction,
              "--strength", 2, "--json", out, "--device", "cpu")
    assert res.exit_code == 1, res.output  # broken.png failed; the others were evaluated
    assert "broken.png" in res.output
    report = json.loads(out.read_text())
    assert report["n_images"] == 2 and sorted(report["per_image"]) == ["a", "b"]
    dlib = importlib.util.find_spec("dlib") is not None
    assert list(report)[:6] == ["l2", "id", *(["id_dlib"] if dlib else []), "swd", "swd_edit", "lec"][:6]
    assert "lpips" not in report and "fid" not in report  # not requested
    assert report["checkpoint"].startswith("e4e_64.pt:")
    assert report["edit"] == {"direction": "dir.npy", "strength": 2.0}
    assert "broken" in next(iter(report["failed"]))
    for name in ("l2", "swd", "swd_edit", "lec"):
        assert isinstance(report[name], float) and report[name] > 0, name
    mean_l2 = np.mean([report["per_image"][k]["l2"] for k in ("a", "b")])
    assert report["l2"] == pytest.approx(mean_l2)
    assert len(report["swd_levels"]["swd"]) == 5  # 256 -> ... -> 16 px pyramid of the 256 px model inputs
    # the default ArcFace weights are not cached (offline): id is unavailable, saying why; dlib's descriptor is
    # reported under its own name (a file named with --arcface that cannot be used is exit 2: test_reliability_hostile)
    assert report["id"] is None and "id" in report["unavailable"]
    assert "--arcface FILE" in res.output  # the CLI's hint
    if dlib:
        assert -1 <= report["id_dlib"] <= 1 and report["metric_backends"]["id_dlib"].startswith("dlib_resnet_v1")
        assert "dlib, not ArcFace" in res.output and "not comparable with id" in res.output
    assert "LEC" in res.output and "SWD" in res.output


def test_eval_usage_errors_exit_2(tmp_path):
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    res = run("eval", img, "--metrics", "lec", "--json", tmp_path / "e.json")
    assert res.exit_code == 2 and "--direction" in res.output
    res = run("eval", img, "--metrics", "l2,psnr", "--json", tmp_path / "e.json")
    assert res.exit_code == 2 and "psnr" in res.output
    res = run("eval", tmp_path / "nothing_here", "--metrics", "l2", "--json", tmp_path / "e.json")
    assert res.exit_code == 2
    assert not (tmp_path / "e.json").exists()
