"""Domain facts asked of one place: faces or not, short name, identity network (e4ecli.domains)."""
from __future__ import annotations

import pytest
import torch

from e4ecli.domains import DOMAINS, domain_for


def test_known_and_custom_domains():
    assert [d.is_face for d in DOMAINS.values()] == [True, False, False, False]
    assert domain_for("cars_encode").short == "cars" and domain_for(None).short == "ffhq"
    assert domain_for("afhq_encode").is_face is False and domain_for("afhq_encode").identity == "moco"
    assert domain_for("celebahq_encode").is_face is True and domain_for("celebahq_encode").identity == "arcface"
    assert domain_for("ffhq_encode", 64).input_size == (64, 64) and domain_for("ffhq_encode", 64).is_face


def test_training_options_list_the_domains():
    from e4ecli.training.options import KNOWN_DATASET_TYPES

    assert KNOWN_DATASET_TYPES == tuple(DOMAINS)


def test_eval_does_not_score_face_identity_on_a_custom_non_face_domain():
    """A custom afhq_encode model trains with MoCo (not faces): eval must not score ArcFace identity on it."""
    from e4ecli.pipelines.eval import build_metrics

    m = build_metrics(["l2", "id"], torch.device("cpu"), arcface="/nonexistent/arcface.pth", domain_name="afhq_encode")
    assert "faces" in m.unavailable["id"] and "afhq_encode" in m.unavailable["id"]


@pytest.mark.parametrize("name, width, render", [("cars_encode", None, 512), ("cars_encode", 64, 256), ("cars_encode", 128, 1024),
                                                 ("ffhq_encode", None, 1024), ("ffhq_encode", 64, 64), ("church_encode", None, 256)])
def test_the_encoder_frame_is_the_crop_then_e4e_face_pool(name, width, render):
    """Domain.encoder_frame, the one framing of renders for losses and metrics, equals (to the bit) the original's
    training order (face_pool to width x width, then the car rows) and crop-then-pool; cars 512 -> rows 64:448 -> 192x256."""
    import torch.nn.functional as F

    domain = domain_for(name, width)
    h, w = domain.input_size
    x = torch.randn(2, 3, render, render, generator=torch.Generator().manual_seed(0))
    framed = domain.encoder_frame(x)
    assert tuple(framed.shape) == (2, 3, h, w)
    assert torch.equal(framed, domain.crop(F.adaptive_avg_pool2d(x, (w, w))))
    assert torch.equal(framed, F.adaptive_avg_pool2d(domain.crop(x), (h, w)))
    if name == "cars_encode" and render == 512 and width is None:
        assert torch.equal(framed, F.adaptive_avg_pool2d(x[..., 64:448, :], (192, 256)))
    assert tuple(domain.encoder_frame(x, (h // 2, w // 2)).shape) == (2, 3, h // 2, w // 2)
