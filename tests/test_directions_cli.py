"""`e4e directions sefa | ganspace | fit`: new directions from a checkpoint or from labelled latents,
in files that `e4e edit` then takes."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from e4ecli.hub.checkpoints import safe_load
from editing_kit import empty_home, g64, g64_path, run_cli, says, wplus64  # noqa: F401


def test_sefa_writes_sorted_eigenpairs_that_edit_applies_on_their_layers(tmp_path, g64, g64_path, wplus64, empty_home):
    out = tmp_path / "sefa.npz"
    r = run_cli(["directions", "sefa", "-c", g64_path, "--layers", "2-3", "--num", 5, "-o", out])
    assert r.exit_code == 0, r.output
    with np.load(out, allow_pickle=False) as z:
        directions, eigenvalues, layers = z["directions"], z["eigenvalues"], z["layers"]
    assert directions.shape == (5, 512) and list(layers) == [2, 3]
    assert np.all(np.diff(eigenvalues) <= 0)
    assert np.allclose(directions @ directions.T, np.eye(5), atol=1e-5)

    np.save(tmp_path / "w.npy", wplus64[0])
    r = run_cli(["edit", tmp_path / "w.npy", "-o", tmp_path / "out", "-d", "sefa:1:2,3", "-s", "-6", "--latents-only",
                 "-c", g64_path, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    delta = np.load(tmp_path / "out" / "w.npy") - wplus64[0]
    assert np.allclose(delta[[2, 3]], -6 * directions[1], atol=1e-4)
    assert np.abs(np.delete(delta, [2, 3], axis=0)).max() == 0


def test_ganspace_pca_has_the_published_layout_and_drives_edits(tmp_path, g64_path, wplus64, empty_home):
    from e4ecli.edits import ops

    out = tmp_path / "pca.pt"
    r = run_cli(["directions", "ganspace", "-c", g64_path, "-n", 8, "--samples", 3000, "--seed", 1, "-o", out, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    data = safe_load(out)  # plain tensors: loads with weights_only
    assert set(data) == {"mean", "comp", "std"}
    assert data["mean"].shape == (1, 512) and data["comp"].shape == (8, 1, 512) and data["std"].shape == (8,)
    comp = data["comp"].reshape(8, 512)
    assert torch.allclose(comp @ comp.T, torch.eye(8), atol=1e-4) and torch.all(data["std"][:-1] >= data["std"][1:])

    np.save(tmp_path / "w.npy", wplus64[0])
    r = run_cli(["edit", tmp_path / "w.npy", "-o", tmp_path / "out", "-d", "ganspace:2:0:3", "-s", "1.5", "--pca", out,
                 "--latents-only", "-c", g64_path, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    edited = torch.from_numpy(np.load(tmp_path / "out" / "w.npy"))
    pca = ops.PCA.from_published(data)
    assert float(ops.ganspace_coordinate(edited[:1], pca, 2)) == pytest.approx(1.5, abs=1e-3)


def _planted(tmp_path, n=400, margin=3.0, seed=0):
    """n latents (10 styles) around a hidden unit direction, labelled by the side they are on."""
    rng = np.random.default_rng(seed)
    d = rng.standard_normal(512)
    d /= np.linalg.norm(d)
    labels = rng.integers(0, 2, n)
    folder = tmp_path / "latents"
    folder.mkdir()
    rows = ["file,smiling"]
    for i, y in enumerate(labels):
        w = rng.standard_normal(512) + (margin if y else -margin) * d
        np.save(folder / f"{i:03d}.npy", (w + 0.05 * rng.standard_normal((10, 512))).astype(np.float32))
        rows.append(f"{i:03d}.npy,{'yes' if y else 'no'}" if i % 2 else f"{i:03d},{int(y)}")
    return folder, rows, d


def test_fit_recovers_a_planted_direction(tmp_path):
    folder, rows, d = _planted(tmp_path)
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "boundary.npy"
    r = run_cli(["directions", "fit", "--latents", folder, "--labels", tmp_path / "labels.csv", "-o", out])
    assert r.exit_code == 0, r.output
    found = np.load(out)
    assert found.shape == (1, 512) and np.linalg.norm(found) == pytest.approx(1, abs=1e-5)
    assert float(found[0] @ d) > 0.7  # random unit vectors in 512-d have |cos| ~ 0.04
    accuracy = re.search(r"held-out accuracy ([0-9.]+) on (\d+) latents", " ".join(r.output.split()))
    assert float(accuracy.group(1)) >= 0.95 and int(accuracy.group(2)) == 80


def test_fit_reports_bad_rows_and_still_fits_the_rest(tmp_path):
    folder, rows, _ = _planted(tmp_path, n=120)
    rows += ["ghost.npy,1", "007.npy,maybe"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "boundary.npy"
    r = run_cli(["directions", "fit", "--latents", folder, "--labels", tmp_path / "labels.csv", "-o", out, "--wplus"])
    assert r.exit_code == 1
    assert says(r.output, "ghost.npy: no such latent file") and says(r.output, "label 'maybe' is not")
    assert np.load(out).shape == (10, 512)


def test_fit_needs_both_labels(tmp_path):
    folder, rows, _ = _planted(tmp_path, n=10)
    only_ones = [rows[0]] + [r.rsplit(",", 1)[0] + ",1" for r in rows[1:]]
    (tmp_path / "labels.csv").write_text("\n".join(only_ones))
    r = run_cli(["directions", "fit", "--latents", folder, "--labels", tmp_path / "labels.csv", "-o", tmp_path / "b.npy"])
    assert r.exit_code == 2 and says(r.output, "need at least 2 latents of each label")
    assert not (tmp_path / "b.npy").exists()
