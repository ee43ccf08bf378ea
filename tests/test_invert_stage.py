"""`e4e invert --stage K`: e4e's progressive stages through the CLI, pinned by the kit's latents_stage0/3/8."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import run




@pytest.fixture(scope="module")
def photos(case_arrays, tmp_path_factory):
    z = case_arrays("e4e_256")
    folder = tmp_path_factory.mktemp("stage_photos")
    Image.fromarray(z["input_0"]).save(folder / "a.png")
    Image.fromarray(z["input_1"]).save(folder / "b.png")
    return folder


@pytest.mark.parametrize("stage", [0, 3, 8])
def test_stage_reproduces_kit_latents(stage, photos, case_checkpoint, case_arrays, tmp_path):
    res = run("invert", photos, "-o", tmp_path / "out", "-c", case_checkpoint("e4e_256"), "--stage", stage, "--device", "cpu")
    assert res.exit_code == 0, res.output
    expected = case_arrays("e4e_256")[f"latents_stage{stage}"]
    for i, key in enumerate("ab"):
        lat = np.load(tmp_path / "out" / f"{key}.npy")
        assert lat.shape == (14, 512)
        assert np.abs(lat - expected[i]).max() <= 1e-3
    if stage == 0:  # pure W: every style is the same code
        assert np.abs(lat - lat[:1]).max() <= 1e-6


def test_last_stage_is_the_full_code(photos, case_checkpoint, case_arrays, tmp_path):
    res = run("invert", photos / "a.png", "-o", tmp_path / "out", "-c", case_checkpoint("e4e_256"), "--stage", 13, "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert np.abs(np.load(tmp_path / "out" / "a.npy") - case_arrays("e4e_256")["latents"][0]).max() <= 1e-3


@pytest.mark.parametrize("case,stage,words", [
    ("psp_256", 0, "GradualStyleEncoder predicts every style independently"),
    ("single_256", 2, "SingleStyleCodeEncoder"),
    ("e4e_256", 14, "stages 0 (pure W) to 13"),
])
def test_stage_refused_clearly(case, stage, words, photos, case_checkpoint, tmp_path):
    res = run("invert", photos, "-o", tmp_path / "out", "-c", case_checkpoint(case), "--stage", stage, "--device", "cpu")
    assert res.exit_code == 2
    assert words in res.output and f"--stage {stage}" in res.output
    assert not (tmp_path / "out").exists()
