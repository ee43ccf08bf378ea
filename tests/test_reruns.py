"""Reruns never keep a result the command no longer asks for: each output's manifest line records the
settings that made it (fingerprint), and a rerun redoes outputs whose settings or input changed, or that
have no record; identical reruns skip. Also: options are checked before any model loads, and Ctrl-C
says how far the batch got."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from editing_kit import run_cli, says, wplus64  # noqa: F401


@pytest.fixture(scope="module")
def g64_path(tmp_path_factory) -> Path:
    """A 64 px generator (10 styles, as the kit's latents) 16 channels wide: what a rerun redoes or skips does
    not depend on the weights, and --precision bf16 is emulated (slow) on CPUs without native bf16."""
    import torch

    from e4ecli.models.stylegan2 import Generator

    torch.manual_seed(0)
    g = Generator(64, 512, n_mlp=2, channels={r: 16 for r in (4, 8, 16, 32, 64)})
    path = tmp_path_factory.mktemp("tiny") / "tiny_g64.pt"
    torch.save({"g_ema": g.state_dict(), "latent_avg": g.mean_latent(256, seed=1)[0]}, path)
    return path


def records(out) -> dict:
    return {r["output"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}


def mtimes(folder, pattern="**/*.png") -> dict:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.glob(pattern)}


@pytest.fixture
def latents(tmp_path, wplus64):
    root = tmp_path / "latents"
    root.mkdir()
    np.save(root / "a.npy", wplus64[0])
    np.save(root / "b.npy", wplus64[1])
    np.save(tmp_path / "dir.npy", np.random.default_rng(7).standard_normal(512).astype(np.float32))
    return root, tmp_path / "dir.npy"


def test_edit_with_another_strength_redoes_the_image(tmp_path, latents, g64_path):
    root, dfile = latents
    out = tmp_path / "out"
    base = ["edit", root, "-o", out, "-d", dfile, "-c", g64_path, "--device", "cpu"]
    assert run_cli([*base, "-s", "3"]).exit_code == 0
    plus = np.asarray(Image.open(out / "a.png"))
    r = run_cli([*base, "-s", "-3"])
    assert r.exit_code == 0, r.output
    assert not np.array_equal(np.asarray(Image.open(out / "a.png")), plus)
    assert says(r.output, "redoing outputs an earlier run made differently: strength (2)")
    rec = records(out)["a.png"]
    assert rec["settings"]["strength"] == [[-3]] and rec["status"] == "ok"
    # the same command again skips both; the spelling of a number does not matter
    before = mtimes(out)
    r = run_cli([*base, "-s", "-3.0"])
    assert r.exit_code == 0 and mtimes(out) == before and "redoing" not in r.output


def test_edit_with_another_direction_or_sweep_is_redone(tmp_path, latents, g64_path):
    root, dfile = latents
    out = tmp_path / "out"
    base = ["edit", root / "a.npy", "-o", out, "-c", g64_path, "--device", "cpu", "-s", "2"]
    assert run_cli([*base, "-d", dfile]).exit_code == 0
    first = np.asarray(Image.open(out / "a.png"))
    # the same file name with other contents is another direction
    np.save(dfile, np.random.default_rng(8).standard_normal(512).astype(np.float32))
    r = run_cli([*base, "-d", dfile])
    assert r.exit_code == 0 and says(r.output, "direction (1)")
    assert not np.array_equal(np.asarray(Image.open(out / "a.png")), first)
    r = run_cli(["edit", root / "a.npy", "-o", out, "-c", g64_path, "--device", "cpu", "-d", dfile, "-s", "-1:1:3"])
    assert r.exit_code == 0 and Image.open(out / "a.png").width == 4 * 64  # now the strip of a sweep


def test_files_of_the_earlier_settings_that_this_run_does_not_write_are_removed(tmp_path, latents, g64_path):
    root, dfile = latents
    out = tmp_path / "out"
    base = ["edit", root / "a.npy", "-o", out, "-c", g64_path, "--device", "cpu", "-d", dfile, "--size", 16]
    assert run_cli([*base, "-s", "-1:1:3", "--save-latents"]).exit_code == 0
    assert sorted(p.name for p in (out / "a").iterdir()) == ["00_s-1.npy", "00_s-1.png", "01_s+0.npy", "01_s+0.png", "02_s+1.npy", "02_s+1.png"]
    r = run_cli([*base, "-s", "-1:1:5"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (out / "a").iterdir()) == ["00_s-1.png", "01_s-0.5.png", "02_s+0.png", "03_s+0.5.png", "04_s+1.png"]
    assert records(out)["a.png"]["files"][0] == "a.png" and len(records(out)["a.png"]["files"]) == 6
    # a forged manifest cannot make a rerun delete anything outside the folder or an input
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    lines[0]["files"] += ["../victim.txt", str(victim), "../latents/a.npy"]
    lines[0]["fingerprint"] = "0"
    (out / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert run_cli([*base, "-s", "-1:1:5"]).exit_code == 0
    assert victim.read_text() == "keep me" and (root / "a.npy").is_file()


def test_invert_with_another_checkpoint_is_redone(tmp_path, e4e_64):
    import torch

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name in ("p", "q"):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(photos / f"{name}.png")
    # e4e_64's weights reading 64 px inputs (a 16th of the encoder's work at 256), and the same weights with another
    # option (write_e4e_64 would generate the same weights again: seconds)
    ckpt = torch.load(e4e_64, weights_only=True)
    e4e_64, other = tmp_path / "e4e_64.pt", tmp_path / "other.pt"
    torch.save({**ckpt, "opts": {**ckpt["opts"], "input_size": 64}}, e4e_64)
    torch.save({**ckpt, "opts": {**ckpt["opts"], "input_size": 64, "start_from_latent_avg": False}}, other)
    out = tmp_path / "out"
    assert run_cli(["invert", photos, "-o", out, "-c", e4e_64, "--device", "cpu"]).exit_code == 0
    first = np.load(out / "p.npy")
    r = run_cli(["invert", photos, "-o", out, "-c", other, "--device", "cpu"])
    assert r.exit_code == 0 and says(r.output, "checkpoint (2)")
    assert not np.allclose(np.load(out / "p.npy"), first)
    assert records(out)["p.npy"]["checkpoint"].startswith("other.pt:")
    # a renamed copy of the same checkpoint is the same checkpoint: skipped
    (tmp_path / "copy.pt").write_bytes(other.read_bytes())
    before = mtimes(out, "*.npy")
    r = run_cli(["invert", photos, "-o", out, "-c", tmp_path / "copy.pt", "--device", "cpu"])
    assert r.exit_code == 0 and mtimes(out, "*.npy") == before


def test_render_redoes_changed_size_precision_and_inputs(tmp_path, latents, g64_path):
    root, _ = latents
    out = tmp_path / "out"
    base = ["render", root, "-o", out, "-c", g64_path, "--device", "cpu"]
    assert run_cli(base).exit_code == 0
    rec = records(out)["a.png"]
    assert set(rec) >= {"settings", "input", "fingerprint", "tool", "files"}
    assert rec["settings"] == {"command": "render", "checkpoint": rec["checkpoint"].rsplit(":", 1)[1], "precision": "fp32"}
    assert rec["tool"].startswith("e4ecli ") and rec["files"] == ["a.png"] and rec["input"]["size"] > 0
    r = run_cli([*base, "--size", "32"])
    assert r.exit_code == 0 and says(r.output, "size (2)") and Image.open(out / "a.png").size == (32, 32)
    before = mtimes(out)
    r = run_cli([*base, "--size", "32", "--precision", "bf16"])
    assert r.exit_code == 0 and says(r.output, "precision (2)")
    assert all(mtimes(out)[k] != v for k, v in before.items())
    # an input that changed since (e.g. re-inverted) is rendered again; the other one is skipped
    np.save(root / "b.npy", np.load(root / "b.npy") + 0.5)
    before = mtimes(out)
    r = run_cli([*base, "--size", "32", "--precision", "bf16"])
    assert r.exit_code == 0 and says(r.output, "input file changed (1)")
    after = mtimes(out)
    assert after["a.png"] == before["a.png"] and after["b.png"] != before["b.png"]


def test_outputs_without_a_manifest_line_are_redone(tmp_path, latents, g64_path):
    root, _ = latents
    out = tmp_path / "out"
    base = ["render", root, "-o", out, "-c", g64_path, "--device", "cpu"]
    assert run_cli(base).exit_code == 0
    # a manifest from before settings were recorded: lines without a fingerprint
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    (out / "manifest.jsonl").write_text("".join(json.dumps({k: r[k] for k in ("source", "output", "status")}) + "\n" for r in lines))
    Image.new("RGB", (64, 64)).save(out / "a.png")  # whatever is there cannot be proven to match
    r = run_cli(base)
    assert r.exit_code == 0 and says(r.output, "no record in the manifest (2)")
    assert np.asarray(Image.open(out / "a.png")).any()
    assert "fingerprint" in records(out)["a.png"]
    (out / "manifest.jsonl").unlink()
    before = mtimes(out)
    assert run_cli(base).exit_code == 0 and all(mtimes(out)[k] != v for k, v in before.items())


def test_overwrite_redoes_even_identical_outputs(tmp_path, latents, g64_path):
    root, _ = latents
    out = tmp_path / "out"
    base = ["render", root / "a.npy", "-o", out, "-c", g64_path, "--device", "cpu"]
    assert run_cli(base).exit_code == 0
    before = mtimes(out)
    assert run_cli([*base, "--overwrite"]).exit_code == 0 and mtimes(out) != before


# -- nothing starts, nothing is created, no model is opened -------------------------------------------
@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if anything tries to open a checkpoint."""
    import e4ecli.cli.common as common
    import e4ecli.hub.checkpoints as checkpoints

    def refuse(*_a, **_k):
        raise AssertionError("a model was loaded although the options could be checked first")

    monkeypatch.setattr(common, "load_model", refuse)
    monkeypatch.setattr(checkpoints, "load_checkpoint", refuse)


@pytest.mark.parametrize("args, messages", [
    (["edit", "LAT", "-d", "DIR", "-s", "abc", "-c", "G"], ["strength 'abc' is not a number"]),
    (["edit", "LAT", "-d", "DIR", "-s", "abc", "-c", "nope/missing.pt"], ["'abc' is not a number"]),
    (["edit", "LAT", "-d", "DIR", "-s", "1", "-c", "nope/missing.pt"], ["nope/missing.pt: no such file"]),
    (["edit", "LAT", "-d", "no_such_direction", "-s", "1", "-c", "G"], ["unknown direction 'no_such_direction'"]),
    (["edit", "LAT", "-d", "gone.npy", "-s", "1", "-c", "G"], ["gone.npy: no such direction file"]),
    (["edit", "LAT", "-d", "DIR", "-c", "G"], ["has no default strength"]),
    (["edit", "LAT", "-d", "DIR", "-s", "1", "--aligned", "nowhere", "-c", "G"], ["nowhere: no such folder"]),
    (["edit", "typo.npy", "-d", "DIR", "-s", "1", "-c", "G"], ["typo.npy: no such file", "none of the inputs can be read"]),
    (["render", "typo.npy", "-c", "G"], ["typo.npy: no such file", "none of the inputs can be read"]),
    (["render", "LAT", "-c", "not_a_zoo_name"], ["neither an existing file nor a zoo name"]),
    (["invert", "typo.jpg", "-c", "G"], ["typo.jpg: no such file"]),
    (["video", "LAT/a.npy", "-d", "DIR", "-s", "1:x", "-c", "G"], ["'x' is not a number"]),
    (["video", "LAT/a.npy", "typo.npy", "-c", "G"], ["typo.npy: no such latent file"]),
])
def test_bad_options_fail_before_any_model_loads_and_create_nothing(tmp_path, latents, g64_path, no_loading, args, messages):
    root, dfile = latents
    out = tmp_path / ("v.gif" if args[0] == "video" else "out")
    subst = {"LAT": str(root), "DIR": str(dfile), "G": str(g64_path)}
    args = [subst.get(a, a.replace("LAT", str(root))) for a in args]
    args = [str(tmp_path / a) if a in ("typo.npy", "typo.jpg", "gone.npy", "nowhere") else a for a in args]
    r = run_cli([*args, "-o", out, "--device", "cpu"])
    assert r.exit_code == 2, r.output
    for m in messages:
        assert says(r.output, m), (m, r.output)
    assert not out.exists() and not (tmp_path / "manifest.jsonl").exists()


# -- Ctrl-C ---------------------------------------------------------------------------------------------
def test_ctrl_c_says_how_far_it_got_and_exits_130(tmp_path, latents, g64_path, monkeypatch):
    from e4ecli.pipelines.render import RenderPipeline  # what `e4e render` runs

    real = RenderPipeline.__call__

    def interrupted_after_one(*a, **k):
        for i, result in enumerate(real(*a, **k)):
            if i == 1:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(RenderPipeline, "__call__", interrupted_after_one)
    root, _ = latents
    out = tmp_path / "out"
    r = run_cli(["render", root, "-o", out, "-c", g64_path, "--device", "cpu", "-b", 1])
    assert r.exit_code == 130
    assert says(r.output, "interrupted: 1 of 2 done, rerun the same command to finish")
    assert list(records(out)) == ["a.png"]  # the finished one is recorded; a rerun skips it
    monkeypatch.setattr(RenderPipeline, "__call__", real)
    before = (out / "a.png").stat().st_mtime_ns
    r = run_cli(["render", root, "-o", out, "-c", g64_path, "--device", "cpu"])
    assert r.exit_code == 0 and (out / "a.png").stat().st_mtime_ns == before and (out / "b.png").is_file()


# -- the fingerprint itself ------------------------------------------------------------------------------
def test_settings_are_canonical():
    from e4ecli.files.provenance import Settings, changed_settings, stable_hash

    a = Settings("edit", strength=[[3.0]], size=None, precision="fp32")
    b = Settings("edit", precision="fp32", strength=[(3,)])
    assert a == b and stable_hash(a) == stable_hash(b)
    assert "size" not in a  # None is left out: a new option does not change old fingerprints until used
    c = a.with_(refine={"steps": 100})
    assert stable_hash(c) != stable_hash(a) and changed_settings(a, c) == ["refine"] and a.get("refine") is None
    with pytest.raises(TypeError):
        Settings("edit", direction=object())
