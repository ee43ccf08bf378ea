"""`e4e eval --sweep stage|refine`: one point per setting in the JSON and a PNG plot (64 px e4e, 64 px inputs)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import e4e_64_with_photos, run




@pytest.fixture(scope="module")
def setup(kit_weights, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    ckpt_path, photos = e4e_64_with_photos(kit_weights, root, seed=2)
    direction = root / "dir.npy"
    np.save(direction, np.random.default_rng(0).standard_normal(512).astype(np.float32))
    return ckpt_path, photos, direction


@pytest.mark.parametrize("dial,values", [("stage", "0,3,9"), ("refine", "0,3")])
def test_sweep_writes_one_point_per_setting_and_a_plot(setup, tmp_path, dial, values):
    ckpt, photos, direction = setup
    res = run("eval", photos, "-c", ckpt, "--sweep", dial, "--sweep-values", values, "-d", direction, "-s", 1, "--json", tmp_path / "s.json",
              "--device", "cpu")
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "s.json").read_text())
    settings = [int(v) for v in values.split(",")]
    assert data["sweep"] == dial and [p["setting"] for p in data["points"]] == settings
    assert all(p["n_images"] == 2 and p["l2"] is not None and p["lec"] is not None for p in data["points"])
    assert data["plot"] == {"x": data["plot"]["x"], "y": "lec"} and data["plot"]["x"] in ("l2", "lpips")
    png = Image.open(tmp_path / "s.png")
    assert png.format == "PNG" and png.size == (720, 520)
    l2 = [p["l2"] for p in data["points"]]
    assert len(set(l2)) == len(l2)  # the dial changes the reconstructions
    if dial == "refine":
        assert l2[-1] < l2[0]


def test_sweep_needs_a_direction_and_sane_values(setup, tmp_path):
    ckpt, photos, direction = setup
    res = run("eval", photos, "-c", ckpt, "--sweep", "stage", "--json", tmp_path / "s.json")
    assert res.exit_code == 2 and "give --direction" in res.output
    res = run("eval", photos, "-c", ckpt, "--sweep", "stage", "--sweep-values", "0,x", "-d", direction, "-s", 1, "--json", tmp_path / "s.json")
    assert res.exit_code == 2 and "whole numbers" in res.output
    res = run("eval", photos, "-c", ckpt, "--sweep", "stage", "--sweep-values", "0,10", "-d", direction, "-s", 1, "--json", tmp_path / "s.json",
              "--device", "cpu")
    assert res.exit_code == 2 and "stage 10 is out of range (stages 0 to 9)" in res.output
