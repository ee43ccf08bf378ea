"""`e4e eval` reproduces the original implementation's numbers on the kit's e4e_256 case:
l2 (x versus the reconstruction area-averaged to 256), id (ArcFace similarities of case id_losses)
and lec_per_image (age direction, strength 3, case edits_e4e_256), relative error <= 1e-3."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from e4ecli.files.batch import Item
from e4ecli.hub.checkpoints import load_checkpoint
from e4ecli.pipelines.eval import Evaluator, build_metrics


@pytest.mark.slow
def test_eval_reproduces_l2_id_and_lec_of_the_kit(kit, kit_weights, case_checkpoint, case_arrays, tmp_path):
    case, edits, ids = case_arrays("e4e_256"), case_arrays("edits_e4e_256"), case_arrays("id_losses")
    arcface = kit_weights.write_network("arcface_ir_se50", "model", 61, tmp_path / "arcface.pth")
    items = []
    for i in range(2):
        path = tmp_path / f"input_{i}.png"
        Image.fromarray(case[f"input_{i}"]).save(path)
        items.append(Item(path, f"input_{i}"))
    ckpt = load_checkpoint(case_checkpoint("e4e_256"))
    from e4ecli.pipelines.directions import resolve

    edit = resolve(str(kit / "directions" / "age.pt"), ckpt.generator)
    metrics = build_metrics(["l2", "id", "lec"], torch.device("cpu"), arcface=str(arcface))
    assert metrics.unavailable == {} and metrics.backends["id"] == "arcface_ir_se50"
    ev = Evaluator(ckpt, metrics, torch.device("cpu"), edit=edit, strength=3.0, batch_size=2)
    results = list(ev.run(items))
    assert [r.status for r in results] == ["ok", "ok"]
    report = ev.report()

    def per_image(name):
        return np.array([report["per_image"][f"input_{i}"][name] for i in range(2)])

    x, images = torch.from_numpy(case["x"]), torch.from_numpy(case["images"])
    l2_ref = (x - F.adaptive_avg_pool2d(images, 256)).pow(2).flatten(1).mean(1).numpy()
    np.testing.assert_allclose(per_image("l2"), l2_ref, rtol=1e-3)
    id_ref = (ids["arcface_feats_x"] * ids["arcface_feats_images"]).sum(1)
    np.testing.assert_allclose(per_image("id"), id_ref, rtol=1e-3)
    assert 1 - report["id"] == pytest.approx(float(ids["id_loss"]), rel=1e-3)
    np.testing.assert_allclose(per_image("lec"), edits["lec_per_image"], rtol=1e-3)
    assert report["lec"] == pytest.approx(float(edits["lec_per_image"].mean()), rel=1e-3)
    assert report["n_images"] == 2
