"""Stitching tuning (refine.stitch): the band around the face comes to match the frame, the tuning stops early
under the threshold, and the blend mask is 0 far from the face. A small seeded generator keeps it cheap."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from e4ecli.models.stylegan2 import Generator
from e4ecli.refine.stitch import StitchConfig, blend_mask, stitch_frame, stitch_masks

SIZE = 64


@pytest.fixture(scope="module")
def small():
    """A 64 px generator with 32 channels per layer (seeded init), an unedited code, an edit of it, a face mask."""
    torch.manual_seed(3)
    gen = Generator(SIZE, style_dim=64, n_mlp=2, channels={r: 32 for r in (4, 8, 16, 32, 64)}).eval()
    rng = torch.Generator().manual_seed(1)
    w = gen.mapping(torch.randn(1, 64, generator=rng)).detach().unsqueeze(1).repeat(1, gen.n_latent, 1)
    w_edit = w + 2.0 * torch.randn(1, 1, 64, generator=rng)
    mask = np.zeros((SIZE, SIZE), np.float32)
    mask[22:42, 24:40] = 1
    return gen, w[0], w_edit[0], mask


def test_stitching_lowers_the_border_loss_and_keeps_the_generator(small):
    gen, w, w_edit, mask = small
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    res = stitch_frame(gen, w_edit, w, mask, StitchConfig(steps=6, lr=3e-3, border_threshold=0.0))
    assert res.steps_run == 6
    assert res.border_loss < 0.7 * res.border_loss_start  # no stitching: border_loss_start
    assert res.crop.shape == (SIZE, SIZE, 3) and res.crop.dtype == np.uint8
    assert all(torch.equal(v, gen.state_dict()[k]) for k, v in before.items()), "the clip's generator was changed"


def test_callers_in_inference_mode_still_tune(small):
    gen, w, w_edit, mask = small
    with torch.inference_mode():
        w_i, e_i = w.clone(), w_edit.clone()  # inference tensors, as an edit computed under inference_mode
        res = stitch_frame(gen, e_i, w_i, mask, StitchConfig(steps=1, lr=3e-3, border_threshold=0.0))
    assert res.steps_run == 1 and res.border_loss < res.border_loss_start


def test_stitching_stops_early_under_the_threshold(small):
    gen, w, w_edit, mask = small
    seen = []
    first = stitch_frame(gen, w_edit, w, mask, StitchConfig(steps=1, border_threshold=0.0))
    res = stitch_frame(gen, w_edit, w, mask, StitchConfig(steps=50, lr=3e-3, border_threshold=first.border_loss_start * 0.8),
                       on_step=lambda step, loss: seen.append(loss))
    assert 0 < res.steps_run < 50
    assert seen[-1] < first.border_loss_start * 0.8 <= min(seen[:-1])
    assert res.border_loss == pytest.approx(seen[-1], rel=1e-5)
    # an edit that already matches stops before any step: the unedited code against its own render
    same = stitch_frame(gen, w, w, mask, StitchConfig(steps=5, border_threshold=1e-6))
    assert same.steps_run == 0 and same.border_loss == pytest.approx(0, abs=1e-7)


def test_blend_mask_is_zero_far_from_the_face_and_one_inside(small):
    *_, mask = small
    cfg = StitchConfig(outer_dilation=64)  # 4 px at 64 px
    masks = stitch_masks(torch.from_numpy(mask)[None, None], cfg)
    soft = blend_mask(masks.full, cfg)[0, 0].numpy()
    assert soft.min() >= 0 and soft.max() <= 1
    assert soft[32, 32] == pytest.approx(1.0)
    far = np.ones_like(mask, bool)
    far[22 - 6:42 + 6, 24 - 6:40 + 6] = False  # beyond the outer dilation (4 px) plus the blur's reach
    assert soft[far].max() == 0
    # the band: between the face and its dilation, and none of it inside the face
    band = masks.border[0, 0].numpy()
    assert band[22:42, 24:40].sum() == 0 and band[20, 30] == 1 and band[10, 30] == 0
    assert masks.content[0, 0].numpy()[mask > 0].min() == 1


def test_face_at_the_crop_edge_is_band_too():
    mask = np.zeros((SIZE, SIZE), np.float32)
    mask[0:20, 20:40] = 1  # touches the top edge
    masks = stitch_masks(torch.from_numpy(mask)[None, None], StitchConfig(outer_dilation=64))
    band, content = masks.border[0, 0].numpy(), masks.content[0, 0].numpy()
    assert band[1, 30] == 1 and content[1, 30] == 0  # within 4 px of the edge: matched to the frame, not the edit
    assert band[10, 30] == 0 and content[10, 30] == 1


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="steps"):
        StitchConfig(steps=-1)
    with pytest.raises(ValueError, match="threshold"):
        StitchConfig(border_threshold=float("nan"))


def test_stylespace_offsets_are_the_edit(small):
    """A text (StyleSpace) edit: zero offsets stitch exactly as the plain W+ code; without StyleSpace rendering
    in the generator the offsets are refused with the reason."""
    import inspect

    gen, w, w_edit, mask = small
    cfg = StitchConfig(steps=2, lr=3e-3, border_threshold=0.0)
    if "style_offsets" not in inspect.signature(gen.synthesis).parameters:
        with pytest.raises(ValueError, match="style vectors"):
            stitch_frame(gen, w_edit, w, mask, cfg, s_offsets=[None])
        pytest.skip("this generator has no StyleSpace rendering yet (synthesis(style_offsets=))")
    zeros = [torch.zeros(1, c) for c in gen.style_channels()]
    plain = stitch_frame(gen, w_edit, w, mask, cfg)
    with_s = stitch_frame(gen, w_edit, w, mask, cfg, s_offsets=zeros)
    assert with_s.border_loss_start == pytest.approx(plain.border_loss_start, rel=1e-4)
    moved = stitch_frame(gen, w, w, mask, StitchConfig(steps=0), s_offsets=[z + 1.0 for z in zeros])
    assert moved.border_loss_start > 0
