"""Latent refinement and pivotal tuning as plain functions (64 px kit generator), and the tuned-generator file."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from e4ecli.hub.checkpoints import CheckpointError, file_id, load_checkpoint
from e4ecli.hub.tuned import load_tuned, save_tuned
from e4ecli.models.stylegan2 import Generator
from e4ecli.refine.latent import refine_latents
from e4ecli.refine.losses import LossNets, Weights, latent_pull, lr_at_step, morphed_codes
from e4ecli.refine.pti import tunable, tune_generator


@pytest.fixture(scope="module")
def problem():
    """A small seeded generator (32 px), targets it renders exactly, and codes moved off them by a random W+ offset."""
    torch.manual_seed(0)
    gen = Generator(32, style_dim=64, n_mlp=2, channels={4: 64, 8: 64, 16: 32, 32: 32}).eval()
    for p in gen.parameters():
        p.requires_grad_(False)
    avg = gen.mean_latent(512)[0]
    with torch.no_grad():
        true = gen.mapping(torch.randn(2, 64)).unsqueeze(1).repeat(1, gen.n_latent, 1)
        true = true + 0.3 * torch.randn(true.shape)
        targets = gen.synthesis(true)
    offset = torch.randn(true.shape, generator=torch.Generator().manual_seed(3)) * 0.5 * true.std()
    return avg, gen, targets, true + offset


def mse(gen, latents, targets):
    with torch.no_grad():
        return (gen.synthesis(latents) - targets).pow(2).flatten(1).mean(1)


def test_lr_schedule_warms_up_and_decays():
    lrs = [lr_at_step(s, 30, 0.1) for s in range(30)]
    assert 0 < lrs[0] < 0.1 and max(lrs) == pytest.approx(0.1) and lrs[-1] < 0.01
    assert all(b <= a + 1e-12 for a, b in zip(lrs[10:], lrs[11:]))  # never increases after the warm-up


def test_locality_codes_lie_alpha_from_the_pivot():
    pivots, w = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    moved = morphed_codes(pivots, w, 30.0)
    assert torch.allclose((moved - pivots).norm(dim=-1), torch.full((2, 4), 30.0), atol=1e-4)
    assert torch.allclose(latent_pull(pivots, pivots), torch.zeros(2))


def test_latent_refinement_halves_the_error_of_the_start(problem):
    _, gen, targets, codes = problem
    r = refine_latents(gen.synthesis, targets, codes, space="w+", steps=30, weights=Weights(lpips=0.0, reg=0.001))
    start, end = mse(gen, codes, targets), mse(gen, r.latents, targets)
    assert r.latents.shape == codes.shape and r.latents.dtype == torch.float32
    assert (end <= 0.5 * start).all(), (start, end)
    assert np.allclose(r.before["l2"], start.numpy(), rtol=1e-4) and np.allclose(r.after["l2"], end.numpy(), rtol=1e-4)
    assert all(a < b for a, b in zip(r.after["loss"], r.before["loss"]))


def test_w_refinement_keeps_one_code_for_every_style(problem):
    _, gen, targets, codes = problem
    r = refine_latents(gen.synthesis, targets, codes, space="w", steps=5, weights=Weights(lpips=0.0))
    assert torch.allclose(r.latents, r.latents[:, :1].expand_as(r.latents))


def test_batch_refines_as_its_images_one_by_one(problem):
    _, gen, targets, codes = problem
    both = refine_latents(gen.synthesis, targets, codes, steps=4, weights=Weights(lpips=0.0, reg=0.01)).latents
    one = refine_latents(gen.synthesis, targets[1:], codes[1:], steps=4, weights=Weights(lpips=0.0, reg=0.01)).latents
    assert torch.allclose(both[1:], one, atol=2e-3)  # Adam magnifies float noise in tiny gradients


def test_lpips_term_is_used_when_available(problem):
    import lpips

    _, gen, targets, codes = problem
    net = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    nets = LossNets(lpips=lambda a, b: net(a, b).reshape(-1))
    r = refine_latents(gen.synthesis, targets, codes, steps=2, weights=Weights(lpips=0.8), nets=nets)
    assert "lpips" in r.before and "lpips" in r.after and "lpips" not in refine_latents(gen.synthesis, targets, codes, steps=0).before


def test_pti_cuts_the_error_by_three_quarters_and_leaves_the_base_alone(problem):
    avg, gen, targets, codes = problem
    before_weights = {k: v.clone() for k, v in gen.state_dict().items()}
    t = tune_generator(gen, codes, targets, steps=30, weights=Weights(l2=1.0, lpips=0.0, reg=1.0), latent_avg=avg)
    start, end = mse(gen, codes, targets), mse(t.generator, codes, targets)
    assert (end <= 0.25 * start).all(), (start, end)
    assert all(torch.equal(v, gen.state_dict()[k]) for k, v in before_weights.items())
    tuned_sd = t.generator.state_dict()
    assert all(torch.equal(tuned_sd[k], before_weights[k]) for k in before_weights if k.startswith("style.") or k.startswith("noises."))


def test_tuned_file_round_trip_and_base_checks(case_checkpoint, case_arrays, tmp_path):
    base = case_checkpoint("stylegan2_64_cm1")
    gen = load_checkpoint(base).generator
    codes = torch.from_numpy(case_arrays("stylegan2_64_cm1")["wplus"][:1]).float()
    with torch.no_grad():
        targets = gen.synthesis(codes + 0.3)
    t = tune_generator(gen, codes, targets, steps=2, weights=Weights(lpips=0.0, reg=0.0))
    out = tmp_path / "a.pti.safetensors"
    save_tuned(out, t.generator, gen, tunable(t.generator), base, file_id(base), None, {"note": "test"})
    n_params = sum(p.numel() for p in tunable(gen).values())
    assert out.stat().st_size < 2 * n_params + 65536  # fp16 deltas
    loaded = load_checkpoint(out)
    assert loaded.kind == "generator" and loaded.path == out
    with torch.no_grad():
        assert (loaded.generator.synthesis(codes[:1]) - t.generator.synthesis(codes[:1])).abs().max() < 2e-3
    # the base is found beside the tuned file when it moved
    moved = tmp_path / base.name
    moved.write_bytes(base.read_bytes())
    meta_path = tmp_path / "b.pti.safetensors"
    save_tuned(meta_path, t.generator, gen, tunable(t.generator), tmp_path / "gone" / base.name, file_id(base))
    assert load_tuned(meta_path, load_checkpoint, file_id).kind == "generator"
    # a different file under the recorded name is refused
    other = tmp_path / "other" / base.name
    other.parent.mkdir()
    torch.save({"g_ema": {k: v + 1 for k, v in gen.state_dict().items()}}, other)
    bad = tmp_path / "c.pti.safetensors"
    save_tuned(bad, t.generator, gen, tunable(t.generator), other, file_id(base))
    moved.unlink()
    with pytest.raises(CheckpointError, match="a different file"):
        load_checkpoint(bad)
    other.unlink()
    with pytest.raises(CheckpointError, match="not there any more"):
        load_checkpoint(bad)


def test_foreign_safetensors_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not a tuned generator"):
        load_checkpoint(path)
    (tmp_path / "y.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(tmp_path / "y.safetensors")
