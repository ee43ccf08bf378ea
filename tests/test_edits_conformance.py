"""Edits reproduce the original implementation's numbers (kit case `edits_e4e_256`).

Case `e4e_256`'s latents edited with the published directions: InterFaceGAN age +3 and smile -2,
three GANSpace edits per latent (and renders of the first latent's), SeFa eigenpairs for
layers [2, 3, 4, 5] and for all layers. Through the library and through the CLI.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from editing_kit import KIT, kit_directions, kit_module, run_cli  # noqa: F401  (fixtures)

LATENT_TOL = 1e-4
IMAGE_TOL = 1e-3


@pytest.fixture(scope="module")
def case():
    kit_module()
    meta = json.loads((KIT / "cases" / "edits_e4e_256.json").read_text())
    expected = dict(np.load(KIT / "cases" / "edits_e4e_256.npz"))
    latents = np.load(KIT / "cases" / "e4e_256.npz")["latents"]
    return meta, expected, latents


@pytest.fixture(scope="module")
def e4e256_path(case_checkpoint):
    """weights.write_checkpoint("e4e_256", ...), shared with the other conformance tests."""
    return case_checkpoint("e4e_256")


@pytest.fixture(scope="module")
def e4e256(e4e256_path):
    from e4ecli.hub.checkpoints import load_checkpoint

    return load_checkpoint(e4e256_path)


def _published(name):
    from e4ecli.hub.checkpoints import safe_load

    return safe_load(KIT / "directions" / name)


def test_interfacegan_age_and_smile_match_the_original(case):
    from e4ecli.edits import ops

    _, expected, latents = case
    w = torch.from_numpy(latents)
    age = ops.interfacegan(w, _published("age.pt"), 3.0)
    smile = ops.interfacegan(w, _published("smile.pt"), -2.0)
    assert np.abs(age.numpy() - expected["interfacegan_age_p3"]).max() <= LATENT_TOL
    assert np.abs(smile.numpy() - expected["interfacegan_smile_m2"]).max() <= LATENT_TOL


def test_ganspace_edits_match_the_original_in_order(case):
    from e4ecli.edits import ops

    meta, expected, latents = case
    pca = ops.PCA.from_published(_published("ffhq_pca.pt"))
    w = torch.from_numpy(latents)
    edited = torch.stack([ops.ganspace(w[i:i + 1], pca, c, s, e, v)[0]
                          for i in range(len(w)) for c, s, e, v in meta["ganspace_edits"]])
    assert edited.shape == expected["ganspace_edits"].shape
    assert np.abs(edited.numpy() - expected["ganspace_edits"]).max() <= LATENT_TOL


def test_ganspace_renders_of_the_first_latent_match(case, e4e256):
    from e4ecli.edits import ops

    meta, expected, latents = case
    pca = ops.PCA.from_published(_published("ffhq_pca.pt"))
    w = torch.from_numpy(latents[:1])
    edited = torch.cat([ops.ganspace(w, pca, c, s, e, v) for c, s, e, v in meta["ganspace_edits"]])
    with torch.inference_mode():
        images = e4e256.generator.synthesis(edited)
    assert np.abs(images.numpy() - expected["ganspace_images_first_latent"]).max() <= IMAGE_TOL


@pytest.mark.parametrize("layers, prefix", [([2, 3, 4, 5], "sefa_"), ("all", "sefa_all_")])
def test_sefa_eigenpairs_match_up_to_sign(case, e4e256, layers, prefix):
    from e4ecli.edits import ops

    meta, expected, _ = case
    if layers != "all":
        assert layers == meta["sefa_layers_arg"]
    result = ops.sefa(e4e256.generator, layers)
    k = len(expected[prefix + "eigenvalues"])
    rel = np.abs(result.eigenvalues[:k].numpy() / expected[prefix + "eigenvalues"] - 1)
    cos = np.abs((result.directions[:k].numpy() * expected[prefix + "directions"]).sum(1))
    assert rel.max() <= 1e-3
    assert cos.min() >= 0.999


@pytest.mark.slow
def test_cli_interfacegan_latents_match(case, e4e256_path, kit_directions, tmp_path):
    _, expected, latents = case
    src = tmp_path / "latents"
    src.mkdir()
    for i, w in enumerate(latents):
        np.save(src / f"{i}.npy", w)
    out = tmp_path / "out"
    r = run_cli(["edit", src, "-o", out, "--direction", "age", "--strength", "3", "--latents-only",
                 "--checkpoint", e4e256_path, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    got = np.stack([np.load(out / f"{i}.npy") for i in range(len(latents))])
    assert np.abs(got - expected["interfacegan_age_p3"]).max() <= LATENT_TOL
    assert not list(out.glob("*.png"))  # --latents-only renders nothing


@pytest.mark.slow
def test_cli_ganspace_latent_and_render_match(case, e4e256_path, kit_directions, tmp_path):
    from e4ecli.files.images import to_uint8

    meta, expected, latents = case
    comp, start, end, strength = meta["ganspace_edits"][0]
    np.save(tmp_path / "face.npy", latents[0])
    out = tmp_path / "out"
    r = run_cli(["edit", tmp_path / "face.npy", "-o", out, "-d", f"ganspace:{comp}:{start}:{end}", "-s", strength,
                 "--pca", "ffhq_pca", "--save-latents", "--checkpoint", e4e256_path, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert np.abs(np.load(out / "face.npy") - expected["ganspace_edits"][0]).max() <= LATENT_TOL
    png = np.asarray(Image.open(out / "face.png"))
    want = to_uint8(torch.from_numpy(expected["ganspace_images_first_latent"][0]))
    assert np.abs(png.astype(int) - want.astype(int)).max() <= 1  # the PNG is the float image quantised


@pytest.mark.slow
def test_cli_sefa_file_matches(case, e4e256_path, tmp_path, monkeypatch):
    monkeypatch.setenv("E4E_HOME", str(tmp_path / "home"))
    meta, expected, _ = case
    out = tmp_path / "sefa.npz"
    r = run_cli(["directions", "sefa", "--checkpoint", e4e256_path, "--layers", ",".join(map(str, meta["sefa_layers_arg"])), "-o", out])
    assert r.exit_code == 0, r.output
    with np.load(out, allow_pickle=False) as z:
        assert z["directions"].shape == (512, 512)
        assert list(z["layers"]) == meta["sefa_layers_arg"]
        k = len(expected["sefa_eigenvalues"])
        assert np.abs(z["eigenvalues"][:k] / expected["sefa_eigenvalues"] - 1).max() <= 1e-3
        assert np.abs((z["directions"][:k] * expected["sefa_directions"]).sum(1)).min() >= 0.999
        assert np.all(np.diff(z["eigenvalues"]) <= 0)  # sorted, descending
