"""Conformance with the original training code: the identity criteria (ArcFace IR-SE50 for faces,
MoCo v2 for other domains) loaded from files in their published layouts (case `id_losses`), and
the progressive stages of the e4e encoder (case `e4e_256`, latents_stage0/3/8)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from e4ecli.hub.networks import load_arcface, load_moco
from e4ecli.training import progressive as P
from e4ecli.training.losses import IdentityLoss
from train_support import KIT, arcface_file, kit, moco_file

FEATURE_TOL, LOSS_TOL = 1e-4, 1e-5  # issue 5's tolerances


@pytest.fixture(scope="module")
def cases():
    kit()
    return np.load(KIT / "cases" / "e4e_256.npz"), np.load(KIT / "cases" / "id_losses.npz")


@pytest.mark.parametrize("kind", ["arcface", "moco"])
def test_identity_features_and_losses_reproduce_the_original_criteria(tmp_path, cases, kind):
    e4e, ref = cases
    if kind == "arcface":
        net, prefix, name = load_arcface(arcface_file(tmp_path / "model_ir_se50.pth")), "arcface", "id"
    else:
        net, prefix, name = load_moco(moco_file(tmp_path / "moco_v2_800ep_pretrain.pt")), "moco", "moco"
    loss_fn = IdentityLoss(net, kind)
    x, images = torch.from_numpy(e4e["x"]), torch.from_numpy(e4e["images"])
    with torch.no_grad():
        feats_x, feats_images = loss_fn.features(x), loss_fn.features(images)
    loss, improvement, _ = loss_fn.compare(feats_images, feats_x, feats_x)  # y = x = the case's x, y_hat = its images
    assert np.abs(feats_x.numpy() - ref[f"{prefix}_feats_x"]).max() <= FEATURE_TOL
    assert np.abs(feats_images.numpy() - ref[f"{prefix}_feats_images"]).max() <= FEATURE_TOL
    assert abs(float(loss) - float(ref[f"{name}_loss"])) <= LOSS_TOL
    assert abs(improvement - float(ref[f"{name}_improve"])) <= LOSS_TOL


@pytest.mark.slow
def test_progressive_stages_of_the_schedule_reproduce_the_original_encoder(tmp_path, cases):
    """The case's training schedule ([0, 20000, 22000, ...]) puts step 0 at stage 0, step 24000 at stage 3
    and step 34000 at stage 8; the encoder at those stages gives the original's latents."""
    from e4ecli.hub.checkpoints import load_checkpoint

    e4e, _ = cases
    ckpt = load_checkpoint(kit().write_checkpoint("e4e_256", tmp_path / "e4e_256.pt"))
    opts = ckpt.opts
    schedule = P.build_schedule(None, opts["progressive_start"], opts["progressive_step_every"], ckpt.n_styles)
    assert schedule == opts["progressive_steps"]
    model = ckpt.inverter()
    x = torch.from_numpy(e4e["x"][:1])  # one of the two inputs keeps the test short
    for step, stage in ((0, 0), (24000, 3), (34000, 8)):
        assert P.stage_at(schedule, step) == stage
        model.encoder.set_progressive_stage(P.stage_at(schedule, step))
        with torch.no_grad():
            latents = model.encode(x)
        assert np.abs(latents.numpy() - e4e[f"latents_stage{stage}"][:1]).max() <= 1e-3, stage
