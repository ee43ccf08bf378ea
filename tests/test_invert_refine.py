"""`e4e invert --refine w+|w|pti` through the CLI (64 px e4e, 64 px inputs): outputs, manifest, reruns,
tuned generators through render/edit, option errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import e4e_64_with_photos, run




def manifest(folder) -> dict:
    return {r["output"]: r for r in map(json.loads, (folder / "manifest.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def setup(kit_weights, tmp_path_factory):
    """A 64 px e4e reading 64 px inputs, and two photos its generator renders from random codes."""
    root = tmp_path_factory.mktemp("refine_cli")
    ckpt_path, photos = e4e_64_with_photos(kit_weights, root, seed=5)
    return ckpt_path, photos, root


@pytest.mark.slow
def test_refine_w_plus_replaces_the_latent_and_records_losses(setup, tmp_path):
    ckpt, photos, _ = setup
    plain = run("invert", photos, "-o", tmp_path / "plain", "-c", ckpt, "--device", "cpu")
    assert plain.exit_code == 0, plain.output
    res = run("invert", photos, "-o", tmp_path / "ref", "-c", ckpt, "--device", "cpu", "--refine", "w+", "--refine-steps", 3)
    assert res.exit_code == 0, res.output
    rows = manifest(tmp_path / "ref")
    for key in "ab":
        lat = np.load(tmp_path / "ref" / f"{key}.npy")
        assert lat.shape == (10, 512) and lat.dtype == np.float32
        assert not np.allclose(lat, np.load(tmp_path / "plain" / f"{key}.npy"))
        row = rows[f"{key}.npy"]
        assert row["refine"]["mode"] == "w+" and row["refine"]["latent"]["steps"] == 3
        assert row["losses_after"]["l2"] < row["losses_before"]["l2"]
    if "lpips" not in rows["a.npy"]["losses_before"]:  # torchvision's AlexNet file is not in this environment
        assert "lpips left out of the refinement" in res.output and "alexnet" in res.output
        assert "or refine without it: --lpips-weight 0" in res.output  # the hint reaches refinement users
    again = run("invert", photos, "-o", tmp_path / "ref", "-c", ckpt, "--device", "cpu", "--refine", "w+", "--refine-steps", 3)
    assert again.exit_code == 0 and "skipped" in again.output


def test_an_identity_network_that_cannot_be_had_is_left_out_with_the_clis_hint(setup, tmp_path):
    """The hub raises a typed WeightsNotFound (no option names); e4e invert words it with --arcface and --id-weight.
    A file that exists but is no ArcFace is left out too, saying why, without that hint."""
    ckpt, photos, _ = setup
    common = ["-c", ckpt, "--device", "cpu", "--refine", "w+", "--refine-steps", 1, "--id-weight", 0.1, "--lpips-weight", 0]
    res = run("invert", photos / "a.png", "-o", tmp_path / "o1", *common, "--arcface", tmp_path / "missing.pt")
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "id left out of the refinement: " in text and "missing.pt: no such file (the ArcFace network of the identity loss)." in text
    assert "Set another file with --arcface, or --id-weight 0 refines without it." in text
    res = run("invert", photos / "a.png", "-o", tmp_path / "o2", *common, "--arcface", photos / "b.png")
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "id left out of the refinement: " in text and "Set another file" not in text


@pytest.mark.slow
def test_pti_writes_a_tuned_generator_that_render_and_edit_use(setup, tmp_path):
    ckpt, photos, root = setup
    out = tmp_path / "pti"
    res = run("invert", photos / "a.png", "-o", out, "-c", ckpt, "--device", "cpu", "--refine", "pti", "--refine-steps", 2, "--save-reconstructions")
    assert res.exit_code == 0, res.output
    tuned = out / "a.pti.safetensors"
    assert tuned.is_file() and (out / "a.png").is_file()
    row = manifest(out)["a.npy"]
    assert row["refine"]["pti"]["shared"] is False and row["losses_after"]["l2"] < row["losses_before"]["l2"]
    # render through the tuned generator reproduces the saved reconstruction; through the base it does not
    r = run("render", out / "a.npy", "-o", tmp_path / "r_tuned", "-c", tuned, "--device", "cpu")
    assert r.exit_code == 0, r.output
    recon = np.asarray(Image.open(out / "a.png")).astype(int)
    assert np.abs(np.asarray(Image.open(tmp_path / "r_tuned" / "a.png")).astype(int) - recon).max() <= 2
    r = run("render", out / "a.npy", "-o", tmp_path / "r_base", "-c", ckpt, "--device", "cpu")
    assert np.abs(np.asarray(Image.open(tmp_path / "r_base" / "a.png")).astype(int) - recon).mean() > 0.5
    # edits of the PTI-refined image render through its tuned generator
    direction = tmp_path / "dir.npy"
    np.save(direction, np.random.default_rng(0).standard_normal(512).astype(np.float32))
    e = run("edit", out / "a.npy", "-o", tmp_path / "edit", "-c", tuned, "-d", direction, "-s", 1, "--device", "cpu")
    assert e.exit_code == 0, e.output
    edited = list((tmp_path / "edit").rglob("*.png"))
    assert edited and not np.array_equal(np.asarray(Image.open(edited[0])).astype(int), recon)


@pytest.mark.slow
def test_pti_shared_tunes_one_generator(setup, tmp_path):
    ckpt, photos, _ = setup
    out = tmp_path / "shared"
    res = run("invert", photos, "-o", out, "-c", ckpt, "--device", "cpu", "--refine", "pti", "--refine-steps", 1, "--pti-shared",
              "--pivot", "w+", "--pivot-steps", 1)
    assert res.exit_code == 0, res.output
    assert (out / "pti_shared.safetensors").is_file() and not list(out.glob("*.pti.safetensors"))
    rows = manifest(out)
    assert rows["a.npy"]["generator"] == "pti_shared.safetensors" and rows["b.npy"]["refine"]["latent"]["space"] == "w+"
    assert "pti_losses_after" in rows["a.npy"]
    r = run("render", out, "-o", tmp_path / "r", "-c", out / "pti_shared.safetensors", "--device", "cpu")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("extra,message", [
    (["--pti-shared"], "--pti-shared only apply with --refine"),
    (["--refine", "w+", "--pivot", "w"], "--pivot applies to --refine pti only"),
    (["--save-aligned"], "--save-aligned keeps the crops of --align"),
    (["--refine", "w", "--lpips-weight", "-1"], "--lpips-weight -1.0: must be >= 0"),
])
def test_bad_refine_options_stop_before_any_work(setup, tmp_path, extra, message):
    ckpt, photos, _ = setup
    res = run("invert", photos, "-o", tmp_path / "o", "-c", ckpt, *extra)
    assert res.exit_code == 2 and message in res.output, res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_rerun_with_other_refinement_or_stage_redoes_the_image(setup, tmp_path):
    ckpt, photos, _ = setup
    out = tmp_path / "o"
    base = ("invert", photos / "a.png", "-o", out, "-c", ckpt, "--device", "cpu")
    assert run(*base, "--refine", "w+", "--refine-steps", 2).exit_code == 0
    first = np.load(out / "a.npy")
    res = run(*base, "--refine", "w+", "--refine-steps", 3)
    assert res.exit_code == 0 and "skipped" not in res.output.split("summary")[0]
    assert manifest(out)["a.npy"]["refine"]["steps"] == 3 and not np.array_equal(np.load(out / "a.npy"), first)
    res = run(*base)  # no refinement any more: the encoder's code again
    assert res.exit_code == 0 and "refine" not in manifest(out)["a.npy"]
    plain = np.load(out / "a.npy")
    res = run(*base, "--stage", 0)
    assert res.exit_code == 0 and manifest(out)["a.npy"]["settings"]["stage"] == 0 and not np.array_equal(np.load(out / "a.npy"), plain)
    res = run(*base, "--stage", 0)
    assert manifest(out)["a.npy"]["settings"]["stage"] == 0 and manifest(out)["a.npy"]["status"] in ("ok", "skipped")


def test_refinement_steps_are_a_live_bar_under_the_batch_bar():
    from rich.progress import Progress

    from e4ecli.cli import common
    from e4ecli.cli.refining import step_reporter
    from e4ecli.pipelines.refine import RefineOptions

    assert step_reporter(None) is None
    report = step_reporter(RefineOptions("pti", steps=3, pivot="w", pivot_steps=2))
    report(0, 1.0)  # no batch shown (a library caller, another rank): nothing to draw on, no error
    progress = Progress(*common.progress_columns(), console=common.console, disable=False)
    seen = []
    with progress, common._live(progress):
        assert common.live_progress() is progress
        for _batch in range(2):  # each batch runs the pivot's latent steps, then the tuning
            for steps in (2, 3):
                for step in range(steps):
                    report(step, 0.5 / (step + 1))
                    seen.append([(t.description, t.completed, t.total) for t in progress.tasks])
    assert common.live_progress() is None
    # one bar at a time; a finished phase takes its bar away
    assert seen[:5] == [[("  pivot (loss 0.5000)", 1, 2)], [], [("  tuning (loss 0.5000)", 1, 3)], [("  tuning (loss 0.2500)", 2, 3)], []]
    assert seen[5:] == seen[:5]
