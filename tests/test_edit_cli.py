"""`e4e edit` end to end on the kit's 64 px generator: naming, sweeps, composition, batch behaviour,
paste-back, and the errors that stop a run before it starts."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from e4ecli.files.images import to_uint8
from editing_kit import (KIT, g64, g64_path, kit_directions, kit_face_quad, run_cli, says, wplus64,  # noqa: F401
                         write_sidecar)


@pytest.fixture
def latents(tmp_path, wplus64):
    """latents/a.npy and latents/sub/b.npy, plus a direction file."""
    root = tmp_path / "latents"
    (root / "sub").mkdir(parents=True)
    np.save(root / "a.npy", wplus64[0])
    np.save(root / "sub" / "b.npy", wplus64[1])
    direction = np.random.default_rng(7).standard_normal(512).astype(np.float32)
    np.save(tmp_path / "dir.npy", direction)
    return root, tmp_path / "dir.npy", direction


def _render(g64, w: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return to_uint8(g64.generator.synthesis(torch.from_numpy(w)[None]))[0]


def test_one_strength_writes_renders_and_latents_named_like_the_inputs(tmp_path, latents, g64, g64_path):
    root, dfile, d = latents
    out = tmp_path / "out"
    args = ["edit", root, "-o", out, "-d", dfile, "-s", "-2", "--save-latents", "-c", g64_path, "--device", "cpu"]
    r = run_cli(args)
    assert r.exit_code == 0, r.output
    want = np.load(root / "a.npy") - 2 * d
    assert np.abs(np.load(out / "a.npy") - want).max() <= 1e-5
    assert (out / "sub" / "b.npy").is_file() and (out / "sub" / "b.png").is_file()
    # the CLI renders a and sub/b as one batch, _render one latent alone: the batch changes the float sums in the
    # last bits, which can move a truncated uint8 by one grey level (as in the conformance tests)
    got = np.asarray(Image.open(out / "a.png")).astype(int)
    assert np.abs(got - _render(g64, want).astype(int)).max() <= 1
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(rec["output"] for rec in records) == ["a.png", "sub/b.png"]
    # a rerun skips finished inputs and leaves their files alone
    before = (out / "a.png").stat().st_mtime_ns
    r = run_cli(args)
    assert r.exit_code == 0 and (out / "a.png").stat().st_mtime_ns == before
    assert "2 │" in r.output.split("summary")[-1]  # two skipped


def test_a_sweep_writes_each_frame_and_a_labelled_strip(tmp_path, latents, g64_path):
    root, dfile, _ = latents
    out = tmp_path / "out"
    r = run_cli(["edit", root / "a.npy", "-o", out, "-d", dfile, "-s", "-1:1:3", "--save-latents", "--size", 32,
                 "-c", g64_path, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    frames = sorted(p.name for p in (out / "a").glob("*.png"))
    assert frames == ["00_s-1.png", "01_s+0.png", "02_s+1.png"]
    assert np.allclose(np.load(out / "a" / "01_s+0.npy"), np.load(root / "a.npy"))
    strip = np.asarray(Image.open(out / "a.png"))
    band = strip.shape[0] - 32
    assert strip.shape[1] == 4 * 32 and band > 0  # reconstruction + three edits (--size 32), labels above
    for i, name in enumerate(frames, start=1):
        assert np.array_equal(strip[band:, i * 32:(i + 1) * 32], np.asarray(Image.open(out / "a" / name)))
    assert np.array_equal(strip[band:, :32], strip[band:, 2 * 32:3 * 32])  # strength 0 is the reconstruction
    assert (strip[:band] < 128).any()  # the label band has text


def test_edits_compose_in_order(tmp_path, latents, g64, g64_path, kit_directions, monkeypatch):
    from e4ecli.edits import ops
    from e4ecli.hub.checkpoints import safe_load

    root, dfile, d = latents
    out = tmp_path / "out"
    r = run_cli(["edit", root / "a.npy", "-o", out, "-d", dfile, "-s", "1.5", "-d", "ganspace:3:2:4", "-s", "5", "--pca", "ffhq_pca",
                 "-d", "sefa:0:2,3", "-s", "4", "--latents-only", "-c", g64_path, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    w = torch.from_numpy(np.load(root / "a.npy"))[None]
    w = ops.interfacegan(w, torch.from_numpy(d), 1.5)
    w = ops.ganspace(w, ops.PCA.from_published(safe_load(kit_directions / "ffhq_pca.pt")), 3, 2, 4, 5.0)
    w = ops.sefa_edit(w, ops.sefa(g64.generator, [2, 3]).directions[0], [2, 3], 4.0)
    assert np.abs(np.load(out / "a.npy") - w[0].numpy()).max() <= 1e-4
    assert not (out / "a.png").exists()
    assert list((tmp_path / "home" / "sefa").glob("*-2_3.npz"))  # SeFa cached per checkpoint hash


def test_a_bad_latent_is_reported_and_the_batch_goes_on(tmp_path, latents, g64_path):
    root, dfile, _ = latents
    (root / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    np.save(root / "wrong_shape.npy", np.zeros((3, 7), np.float32))
    out = tmp_path / "out"
    r = run_cli(["edit", root, "-o", out, "-d", dfile, "-s", "1", "--latents-only", "-c", g64_path, "--device", "cpu"])
    assert r.exit_code == 1
    assert (out / "a.npy").is_file() and (out / "sub" / "b.npy").is_file()
    assert says(r.output, "broken.npy: cannot read latents")
    assert says(r.output, "wrong_shape.npy: latents shape (3, 7) does not fit the generator")


@pytest.mark.parametrize("extra, message", [
    (["-d", "no_such_direction"], "unknown direction 'no_such_direction'"),
    (["-d", "missing.npy", "-s", "1"], "no such direction file"),
    (["-d", "DIR", "-d", "DIR", "-s", "1"], "got 2 --direction but 1 --strength"),
    (["-d", "DIR", "-s", "1:2:3", "-d", "DIR", "-s", "0:1:2"], "only one --strength may be a sweep"),
    (["-d", "DIR"], "has no default strength"),
    (["-d", "DIR", "-s", "lots"], "is not a number"),
    (["-d", "ganspace:99:0:2", "-s", "1", "--pca", "PCA"], "component 99 out of range"),
    (["-d", "ganspace:1:8:12", "-s", "1", "--pca", "PCA"], "moves style 11"),
    (["-d", "sefa:0:40", "-s", "1"], "out of range"),
    (["-d", "DIR", "-s", "1", "--paste-back", "--latents-only"], "--paste-back needs renders"),
])
def test_bad_options_stop_before_any_work(tmp_path, latents, g64_path, kit_directions, extra, message):
    root, dfile, _ = latents
    extra = [str(dfile) if a == "DIR" else str(kit_directions / "ffhq_pca.pt") if a == "PCA" else a for a in extra]
    out = tmp_path / "out"
    r = run_cli(["edit", root, "-o", out, *extra, "-c", g64_path, "--device", "cpu"])
    assert r.exit_code == 2, r.output
    assert says(r.output, message)
    assert not out.exists()


def test_edited_latents_never_overwrite_the_inputs(tmp_path, latents, g64_path):
    root, dfile, _ = latents
    before = (root / "a.npy").read_bytes()
    r = run_cli(["edit", root, "-o", root, "-d", dfile, "-s", "1", "--latents-only", "-c", g64_path, "--device", "cpu"])
    assert r.exit_code == 2 and says(r.output, "would overwrite the input")
    assert (root / "a.npy").read_bytes() == before


def test_paste_back_writes_the_edit_into_the_original_photo(tmp_path, latents, g64_path):
    from e4ecli.files.images import load_rgb

    root, dfile, _ = latents
    quad = kit_face_quad()
    aligned = tmp_path / "aligned"
    aligned.mkdir()
    write_sidecar(aligned / "a.json", KIT / "photos" / "face.jpg", quad, 256)  # only a.npy was aligned
    out = tmp_path / "out"
    r = run_cli(["edit", root, "-o", out, "-d", dfile, "-s", "2", "--paste-back", "--aligned", aligned,
                 "-c", g64_path, "--device", "cpu"])
    assert r.exit_code == 1, r.output  # b.npy has no sidecar: its pasted image cannot be made, so it failed
    assert says(r.output, "b.npy: paste-back: no alignment sidecar sub/b.json")
    records = {rec["source"]: rec for rec in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert records[str(root / "sub" / "b.npy")]["status"] == "failed" and "sidecar" in records[str(root / "sub" / "b.npy")]["error"]
    photo = np.asarray(load_rgb(KIT / "photos" / "face.jpg"))
    pasted = np.asarray(Image.open(out / "a.pasted.png"))
    assert pasted.shape == photo.shape  # the original resolution
    changed = np.any(pasted != photo, axis=-1)
    x0, y0 = np.floor(quad.min(axis=0)).astype(int)
    x1, y1 = np.ceil(quad.max(axis=0)).astype(int)
    outside = changed.copy()
    outside[y0:y1 + 1, x0:x1 + 1] = False
    assert not outside.any() and changed[y0:y1, x0:x1].mean() > 0.5
    assert not (out / "sub" / "b.pasted.png").exists()


def test_a_registered_direction_of_another_domain_is_refused_without_force(tmp_path, latents, g64_path, kit_directions):
    root, _, _ = latents
    out = tmp_path / "out"
    args = ["edit", root / "a.npy", "-o", out, "-d", "cars_viewpoint", "-s", "1", "--latents-only", "-c", g64_path, "--device", "cpu"]
    r = run_cli(args)
    assert r.exit_code == 2, r.output
    assert "'cars_viewpoint' is a direction for cars models" in r.output and "ffhq" in r.output and "--force" in r.output
    assert not out.exists() or not list(out.rglob("*.npy"))
    r = run_cli([*args, "--force"])
    assert r.exit_code == 0, r.output
    assert "was found for cars images" in r.output and (out / "a.npy").is_file()


def test_a_row_of_a_sefa_npz_is_a_direction(tmp_path, latents, g64_path):
    root, _, _ = latents
    npz = tmp_path / "sefa_2-3.npz"
    r = run_cli(["directions", "sefa", "-c", g64_path, "--layers", "2,3", "-o", npz])
    assert r.exit_code == 0, r.output
    outs = {}
    for spec in (f"{npz}:1", "sefa:1:2,3"):
        out = tmp_path / ("npz" if spec.endswith(":1") and spec.startswith(str(npz)) else "sefa")
        r = run_cli(["edit", root / "a.npy", "-o", out, "-d", spec, "-s", "5", "--latents-only", "-c", g64_path, "--device", "cpu"])
        assert r.exit_code == 0, r.output
        outs[out.name] = np.load(out / "a.npy")
    assert np.array_equal(outs["npz"], outs["sefa"]) and not np.array_equal(outs["npz"], np.load(root / "a.npy"))
    r = run_cli(["edit", root / "a.npy", "-o", tmp_path / "bad", "-d", f"{npz}:9999", "-c", g64_path, "--device", "cpu"])
    assert r.exit_code == 2 and "row 9999 out of range" in r.output, r.output
