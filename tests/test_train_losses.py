"""The training losses against hand computations (numpy), the latent discriminator, the code pools,
the progressive schedule and the optimiser configuration."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from e4ecli.models.discriminator import LatentCodesDiscriminator
from e4ecli.models.encoders import Encoder4Editing
from e4ecli.training import losses as L
from e4ecli.training import progressive as P
from e4ecli.training.loop import make_optimizer
from e4ecli.training.pool import LatentCodesPool


def rand(*shape, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def softplus(a):
    return np.log1p(np.exp(a))


def test_l2_is_the_mean_squared_pixel_error():
    a, b = rand(2, 3, 4, 5, seed=1), rand(2, 3, 4, 5, seed=2)
    assert float(L.l2_loss(a, b)) == pytest.approx(float(np.mean((a.numpy() - b.numpy()) ** 2)), rel=1e-6)


@pytest.mark.parametrize("p", [1, 2])
def test_delta_regularisation_is_the_p_norm_of_each_unlocked_offset_from_style_0(p):
    lat = rand(3, 6, 512, seed=3)
    total, per = L.delta_losses(lat, stage=4, p=p)
    a = lat.numpy().astype(np.float64)
    expect = [np.mean(np.sum(np.abs(a[:, i] - a[:, 0]) ** p, axis=1) ** (1 / p)) for i in range(1, 5)]
    assert [float(d) for d in per] == pytest.approx(expect, rel=1e-5)
    assert float(total) == pytest.approx(sum(expect), rel=1e-5)
    zero, none = L.delta_losses(lat, stage=0, p=p)
    assert float(zero) == 0.0 and none == []


def test_discriminator_losses_are_non_saturating_softplus():
    real, fake = rand(5, 1, seed=4), rand(5, 1, seed=5)
    r, f = L.discriminator_losses(real, fake)
    assert float(r) == pytest.approx(np.mean(softplus(-real.numpy())), rel=1e-6)
    assert float(f) == pytest.approx(np.mean(softplus(fake.numpy())), rel=1e-6)


def test_encoder_adversarial_loss_averages_softplus_of_minus_d_over_the_chosen_styles():
    disc = nn.Linear(512, 1)
    lat = rand(4, 5, 512, seed=6)
    w, b = disc.weight.detach().numpy()[0], float(disc.bias.detach())
    got = float(L.encoder_discriminator_loss(disc, lat, [0, 2, 3]).detach())
    a = lat.numpy()
    expect = np.mean([np.mean(softplus(-(a[:, i] @ w + b))) for i in (0, 2, 3)])
    assert got == pytest.approx(expect, rel=1e-5)


class _Quadratic(nn.Module):
    """D(w) = sum_j a_j w_j^2: dD/dw = 2 a w."""

    def __init__(self, a):
        super().__init__()
        self.a = nn.Parameter(a)

    def forward(self, w):
        return (self.a * w * w).sum(1, keepdim=True)


def test_r1_is_the_mean_squared_gradient_norm_of_d_at_the_real_codes_and_is_differentiable():
    a, w = rand(8, seed=7), rand(3, 8, seed=8).requires_grad_(True)
    d = _Quadratic(a.clone())
    penalty = L.r1_penalty(d(w), w)
    expect = np.mean(np.sum((2 * a.numpy() * w.detach().numpy()) ** 2, axis=1))
    assert float(penalty.detach()) == pytest.approx(expect, rel=1e-5)
    penalty.backward()  # create_graph: the penalty trains D
    grad_a = np.mean(8 * a.numpy() * w.detach().numpy() ** 2, axis=0)
    assert d.a.grad.numpy() == pytest.approx(grad_a, rel=1e-4)


def test_latent_discriminator_is_a_4_layer_mlp_with_the_original_keys():
    d = LatentCodesDiscriminator(512, 4)
    assert [k for k in d.state_dict()] == [f"mlp.{i}.{p}" for i in (0, 2, 4, 6) for p in ("weight", "bias")]
    assert isinstance(d.mlp[1], nn.LeakyReLU) and d.mlp[1].negative_slope == 0.2
    assert d(rand(7, 512)).shape == (7, 1)


def test_pool_stores_until_full_then_swaps_half_the_time_and_picks_one_style_of_3d_codes():
    pool = LatentCodesPool(3, random.Random(0))
    first = rand(2, 512, seed=9)
    assert torch.equal(pool.query(first), first) and pool.num_ws == 2
    more = rand(4, 512, seed=10)
    out = pool.query(more)
    assert torch.equal(out[0], more[0]) and pool.num_ws == 3  # fills the last slot
    ref = random.Random(0)  # the same draws by hand: uniform > 0.5 -> swap with a random slot
    stored = [first[0], first[1], more[0]]
    for w, got in zip(more[1:], out[1:]):
        if ref.uniform(0, 1) > 0.5:
            i = ref.randint(0, 2)
            assert torch.equal(got, stored[i])
            stored[i] = w
        else:
            assert torch.equal(got, w)
    three = rand(5, 4, 512, seed=11)
    picked = LatentCodesPool(10, random.Random(1)).query(three)
    ref = random.Random(1)
    assert all(torch.equal(picked[n], three[n, ref.randint(0, 3)]) for n in range(5))
    state = pool.state_dict()
    again = LatentCodesPool(3, random.Random(0))
    again.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(again.ws, pool.ws))
    assert torch.equal(LatentCodesPool(0, random.Random(0)).query(three), three)


def test_schedule_from_progressive_start_is_the_originals_and_lists_are_checked():
    assert P.build_schedule(None, 20000, 2000, 14) == [0] + [20000 + 2000 * i for i in range(13)]
    assert P.build_schedule([0, 5, 9, 12], None, 2000, 4) == [0, 5, 9, 12]
    assert P.build_schedule(None, None, 2000, 4) is None
    with pytest.raises(P.ScheduleError, match="one step per style"):
        P.build_schedule([0, 5, 9], None, 2000, 4)
    sched = [0, 3, 5, 5, 9]
    assert [P.stage_at(sched, s) for s in range(11)] == [0, 0, 0, 1, 1, 3, 3, 3, 3, 4, 4]


def test_optimizer_groups_follow_the_styles_as_they_unlock():
    enc = Encoder4Editing(64)
    groups = P.encoder_param_groups(enc)
    assert [name for name, _ in groups] == ["base"] + [f"style_{i}" for i in range(1, 10)]
    ids = [id(p) for _, ps in groups for p in ps]
    assert sorted(ids) == sorted(id(p) for p in enc.parameters())  # each parameter exactly once
    names = {id(p): n for n, p in enc.named_parameters()}
    assert {names[id(p)].split(".")[0] for p in groups[0][1]} == {"input_layer", "body", "styles"}
    assert {names[id(p)] for p in groups[3][1]} >= {"latlayer1.weight", "styles.3.linear.weight"}
    assert {names[id(p)] for p in groups[7][1]} >= {"latlayer2.weight", "styles.7.linear.weight"}


def test_ranger_is_configured_as_the_originals_first_steps_are_centralised_momentum_steps():
    """Ranger 20.4.11 at step 1: N_sma = 1 <= 5, so p -= lr / (1 - 0.95) * (0.05 * g_c) = lr * g_c, where
    g_c is the gradient minus its mean over all but the first dimension (for weights with dim > 1)."""
    w = nn.Parameter(rand(4, 3, seed=12))
    b = nn.Parameter(rand(4, seed=13))
    opt = make_optimizer("ranger", [{"params": [w, b]}], lr=0.01)
    w0, b0 = w.detach().clone(), b.detach().clone()
    gw, gb = rand(4, 3, seed=14), rand(4, seed=15)
    w.grad, b.grad = gw.clone(), gb.clone()
    opt.step()
    centred = gw - gw.mean(dim=1, keepdim=True)
    assert torch.allclose(w.detach(), w0 - 0.01 * centred, atol=1e-6)
    assert torch.allclose(b.detach(), b0 - 0.01 * gb, atol=1e-6)
    assert isinstance(make_optimizer("adam", [{"params": [w]}], lr=0.1), torch.optim.Adam)


def test_arcface_sees_rows_35_223_and_columns_32_220_of_a_256_face():
    x = torch.arange(256 * 256, dtype=torch.float32).reshape(1, 1, 256, 256)
    assert torch.equal(L.arcface_crop(x), x[:, :, 35:223, 32:220])
    assert L.arcface_crop(torch.zeros(1, 3, 64, 64)).shape[-2:] == (47, 47)


def test_identity_loss_and_improvement_follow_the_original_formulas():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 224 * 224, 16))
    loss_fn = L.IdentityLoss(net, "moco")
    y_hat, y, x = rand(3, 3, 32, 32, seed=16), rand(3, 3, 32, 32, seed=17), rand(3, 3, 32, 32, seed=18)
    loss, improvement, logs = loss_fn(y_hat, y, x)
    fh, fy, fx = (loss_fn.features(t).detach().double() for t in (y_hat, y, x))
    assert float(loss) == pytest.approx(float((1 - (fh * fy).sum(1)).mean()), rel=1e-5)
    assert improvement == pytest.approx(float(((fh * fy).sum(1) - (fy * fx).sum(1)).mean()), rel=1e-5)
    assert logs[1]["diff_input"] == pytest.approx(float((fh[1] * fx[1]).sum()), rel=1e-5)
    assert loss_fn.features(x).norm(dim=1).detach() == pytest.approx(torch.ones(3), rel=1e-6)
    loss_fn.train()
    assert not loss_fn.net.training  # the identity network never leaves eval mode


def test_lpips_with_a_random_backbone_runs_the_lpips_package():
    lp = L.build_lpips("alex", random_backbone=True)
    a, b = rand(2, 3, 64, 64, seed=19).clamp(-1, 1), rand(2, 3, 64, 64, seed=20).clamp(-1, 1)
    assert float(lp(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(lp(a, b)) == pytest.approx(float(lp.model(a, b).mean()), rel=1e-6) and float(lp(a, b)) > 0


def test_missing_lpips_backbone_says_where_to_put_it_and_how_to_train_without(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    (home / "hub").mkdir(parents=True)
    (home / "hub" / "checkpoints").write_text("a file where the cache folder should be: no download is attempted")
    monkeypatch.setenv("TORCH_HOME", str(home))
    with pytest.raises(L.LossWeightsError) as e:
        L.build_lpips("alex")
    assert "alexnet-owt-7be5be79.pth" in str(e.value) and e.value.path == home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert "--" not in str(e.value)  # no command-line words below the CLI: each caller adds its own way out
