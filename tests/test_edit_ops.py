"""Editing operations as pure functions: what each one moves, and what it must leave alone."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from e4ecli.edits import ops
from e4ecli.edits.specs import Edit, Strength, parse_range, parse_strength
from e4ecli.hub.directions import DirectionError
from e4ecli.models.stylegan2 import Generator
from e4ecli.pipelines.edit import Step, edited_latents, format_strength

D = 32  # a small style dimension keeps these tests instant


@pytest.fixture(scope="module")
def tiny_gen() -> Generator:
    torch.manual_seed(0)
    return Generator(16, style_dim=D, n_mlp=2, channels={4: 8, 8: 8, 16: 8}).eval()


def _latents(n=3, s=6, seed=0) -> torch.Tensor:
    return torch.randn(n, s, D, generator=torch.Generator().manual_seed(seed))


def _pca(k=5, seed=1) -> ops.PCA:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
    return ops.PCA(torch.randn(D, generator=g), q.T[:k].contiguous(), torch.rand(k, generator=g) + 0.5)


# -- InterFaceGAN ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(D,), (1, D), (1, 1, D)])
def test_interfacegan_adds_a_w_direction_to_every_style(shape):
    w = _latents()
    d = torch.randn(shape)
    out = ops.interfacegan(w, d, 2.5)
    assert torch.allclose(out - w, 2.5 * d.reshape(1, 1, D).expand_as(w), atol=1e-6)


def test_interfacegan_per_style_direction_and_per_latent_strengths():
    w = _latents(n=2)
    d = torch.randn(6, D)
    out = ops.interfacegan(w, d, torch.tensor([1.0, -2.0]))
    assert torch.allclose(out[0] - w[0], d, atol=1e-6)
    assert torch.allclose(out[1] - w[1], -2 * d, atol=1e-6)


def test_repeated_rows_fit_any_style_count_but_distinct_rows_must_match():
    row = torch.randn(1, D)
    pose_like = row.repeat(18, 1)[None]  # the published pose.pt is (1, 18, 512) of one repeated row
    assert torch.equal(ops.as_wplus_direction(pose_like, 6, D), row)
    with pytest.raises(ValueError, match="18 styles but the generator has 6"):
        ops.as_wplus_direction(torch.randn(18, D), 6, D)
    with pytest.raises(ValueError, match="direction must be shaped"):
        ops.as_wplus_direction(torch.randn(D + 1), 6, D)


# -- GANSpace -------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(component=st.integers(0, 4), start=st.integers(0, 5), length=st.integers(1, 6),
       strength=st.floats(-30, 30, allow_nan=False))
def test_ganspace_moves_style0_coordinate_to_strength_on_the_chosen_styles_only(component, start, length, strength):
    pca = _pca()
    w = _latents()
    end = min(6, start + length)
    out = ops.ganspace(w, pca, component, start, end, strength)
    delta = out - w
    # the styles outside [start, end) are untouched
    untouched = [i for i in range(6) if not start <= i < end]
    assert torch.equal(out[:, untouched], w[:, untouched])
    # every moved style got the same delta, along the component only
    comp = pca.comp[component]
    for i in range(start, end):
        assert torch.allclose(delta[:, i], delta[:, start], atol=1e-5)
    assert torch.allclose(delta[:, start] - (delta[:, start] @ comp)[:, None] * comp, torch.zeros(3, D), atol=1e-4)
    # the delta is what puts style 0's coordinate at `strength` (std units, centred on the mean)
    moved = ops.ganspace_coordinate(w[:, 0] + delta[:, start], pca, component)
    assert torch.allclose(moved, torch.full((3,), strength), atol=1e-3)


def test_ganspace_rejects_styles_and_components_out_of_range():
    with pytest.raises(ValueError, match="do not fit"):
        ops.ganspace(_latents(), _pca(), 0, 4, 9, 1.0)
    with pytest.raises(ValueError, match="out of range"):
        ops.ganspace(_latents(), _pca(k=5), 5, 0, 1, 1.0)


def test_pca_round_trips_through_the_published_layout():
    pca = _pca(k=4)
    data = pca.to_published()
    assert data["mean"].shape == (1, D) and data["comp"].shape == (4, 1, D) and data["std"].shape == (4,)
    back = ops.PCA.from_published(data)
    assert torch.equal(back.comp, pca.comp) and torch.equal(back.mean, pca.mean) and torch.equal(back.std, pca.std)
    with pytest.raises(ValueError, match="missing std"):
        ops.PCA.from_published({"mean": data["mean"], "comp": data["comp"]})


def test_fit_pca_finds_orthonormal_components_with_the_sample_spread(tiny_gen):
    pca = ops.fit_pca(tiny_gen, n_components=6, samples=4000, seed=3, chunk=1500)
    assert torch.allclose(pca.comp @ pca.comp.T, torch.eye(6), atol=1e-5)
    assert torch.all(pca.std[:-1] >= pca.std[1:])
    # fresh samples projected on the components spread by about std
    with torch.no_grad():
        w = tiny_gen.mapping(torch.randn(4000, D, generator=torch.Generator().manual_seed(99)))
    spread = ((w - pca.mean) @ pca.comp.T).std(0)
    assert torch.allclose(spread, pca.std, rtol=0.1)
    again = ops.fit_pca(tiny_gen, n_components=6, samples=4000, seed=3, chunk=1000)
    assert torch.allclose(again.comp, pca.comp, atol=1e-4)  # seeded: the chunking does not matter


# -- SeFa -----------------------------------------------------------------------------------------
def test_sefa_layer_k_is_the_styled_conv_that_style_k_drives(tiny_gen):
    convs = ops.styled_convs(tiny_gen)
    assert convs[0] is tiny_gen.conv1 and convs[1] is tiny_gen.convs[0]
    assert ops.parse_layers("2-4", len(convs)) == [2, 3, 4]
    assert ops.parse_layers("4,2,3", len(convs)) == [2, 3, 4]
    assert ops.parse_layers("all", len(convs)) == list(range(len(convs)))
    with pytest.raises(ValueError, match="out of range"):
        ops.parse_layers("1,9", len(convs))
    with pytest.raises(ValueError, match="indices like"):
        ops.parse_layers("two", len(convs))


def test_sefa_directions_are_sorted_orthonormal_eigenvectors(tiny_gen):
    result = ops.sefa(tiny_gen, [1, 2])
    a = torch.cat([tiny_gen.convs[i].conv.modulation.weight.detach().T for i in (0, 1)], 1).double()
    a = a / a.norm(dim=0, keepdim=True)
    gram = a @ a.T
    d = result.directions.double()
    assert torch.allclose(d @ d.T, torch.eye(D, dtype=torch.float64), atol=1e-5)
    assert torch.all(result.eigenvalues[:-1] >= result.eigenvalues[1:])
    assert torch.allclose(d @ gram @ d.T, torch.diag(result.eigenvalues.double()), atol=1e-4)
    assert result.layers == (1, 2)


def test_sefa_edit_moves_only_its_styles():
    w = _latents()
    d = torch.randn(D)
    out = ops.sefa_edit(w, d, [1, 3], 4.0)
    assert torch.allclose(out[:, [1, 3]] - w[:, [1, 3]], 4 * d.expand(3, 2, D), atol=1e-6)
    assert torch.equal(out[:, [0, 2, 4, 5]], w[:, [0, 2, 4, 5]])


# -- composition, strengths, interpolation ---------------------------------------------------------
def test_steps_compose_in_order_and_a_sweep_makes_one_latent_per_value():
    w = _latents(n=2)
    pca = _pca()
    age = Edit("d", "interfacegan", direction=torch.randn(1, D))
    gs = Edit("g", "ganspace", styles=(1, 2), pca=pca, component=2)
    steps = [Step(age, parse_strength("-1:1:3")), Step(gs, parse_strength("5"))]
    out = edited_latents(w, steps)
    assert out.shape == (2, 3, 6, D)
    for i, v in enumerate((-1.0, 0.0, 1.0)):
        first = ops.interfacegan(w, age.direction, v)
        assert torch.allclose(out[:, i], ops.ganspace(first, pca, 2, 1, 3, 5.0), atol=1e-5)
    # order matters: GANSpace reads style 0 after the InterFaceGAN step moved it
    swapped = edited_latents(w, [Step(gs, parse_strength("5")), Step(age, parse_strength("1"))])
    assert not torch.allclose(swapped[:, 0], out[:, 2], atol=1e-3)


def test_strength_syntax():
    assert parse_strength("-3") == Strength((-3.0,), "-3", False)
    sweep = parse_strength("-3:3:7")
    assert sweep.is_sweep and sweep.values == (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)
    for bad in ("x", "1:2", "1:2:1", "1:2:x", "nan", "1:2:3:4"):
        with pytest.raises(DirectionError):
            parse_strength(bad)
    assert parse_range("-3:3") == (-3.0, 3.0) and parse_range("2") == (0.0, 2.0)
    assert [format_strength(v) for v in (3.0, -1.5, 0.0, -0.0, 0.125)] == ["+3", "-1.5", "+0", "+0", "+0.125"]


def test_interpolation_hits_keyframes_and_loops_seamlessly():
    keys = _latents(n=3)
    path = ops.interpolate(keys, 9, "cosine")
    assert torch.allclose(path[0], keys[0]) and torch.allclose(path[4], keys[1]) and torch.allclose(path[8], keys[2])
    mid = ops.interpolate(keys[:2], 3, "linear")[1]
    assert torch.allclose(mid, (keys[0] + keys[1]) / 2)
    loop = ops.interpolate(keys, 6, "linear", loop=True)
    assert torch.allclose(loop[0], keys[0]) and torch.allclose(loop[2], keys[1]) and torch.allclose(loop[4], keys[2])
    assert not torch.allclose(loop[-1], keys[0])  # the last frame leads back into the first
    with pytest.raises(ValueError, match="easing"):
        ops.ease(torch.tensor([0.5]), "bouncy")


def test_sweep_goes_there_and_back():
    values = ops.sweep_values(-3, 3, 7, "linear", bounce=True)
    assert values.tolist() == pytest.approx([-3, -1, 1, 3, 1, -1, -3])
    once = ops.sweep_values(0, 2, 3, "smooth", bounce=False)
    assert once.tolist() == pytest.approx([0, 1, 2])
    assert np.all(np.diff(ops.sweep_values(0, 1, 11, "cosine", bounce=False).numpy()) >= 0)
