"""Domain facts asked of one place: faces or not, short name, identity network (e4ecli.domains)."""
from __future__ import annotations

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
