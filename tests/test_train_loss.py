"""training.loss on its own: the encoder's loss composition and the discriminator's losses (they only
accumulate gradients), and the loop's discriminator step with R1, each checked against the terms of
training.losses computed by hand."""
from __future__ import annotations

import copy

import pytest
import torch

from e4ecli.models.discriminator import LatentCodesDiscriminator
from e4ecli.training import losses as L
from e4ecli.training.loop import discriminator_step
from e4ecli.training.loss import DiscriminatorLoss, EncoderLoss


def test_encoder_loss_weighs_each_term_and_names_them_as_the_original():
    torch.manual_seed(0)
    x, y_hat = torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 8, 8) * 2 - 1
    latents = torch.randn(2, 4, 16)
    disc = LatentCodesDiscriminator(16, 2)
    fn = EncoderLoss(l2_lambda=2.0, lpips_lambda=0.0, id_lambda=0.0, delta_norm=2, delta_norm_lambda=0.5, w_discriminator_lambda=0.1)
    loss, values = fn(x, y_hat, latents, disc, dims=[0, 1], delta_stage=2)
    adv = L.encoder_discriminator_loss(disc, latents, [0, 1])
    total, per = L.delta_losses(latents, 2, 2)
    expected = 0.1 * adv + 0.5 * total + 2.0 * L.l2_loss(y_hat, x)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert set(values) == {"encoder_discriminator_loss", "delta1_loss", "delta2_loss", "total_delta_loss", "loss_l2", "loss"}
    assert values["delta2_loss"] == pytest.approx(float(per[1]))
    _, plain = fn(x, y_hat, latents)  # no discriminator, not progressive: only the pixel term
    assert set(plain) == {"loss_l2", "loss"}


def test_discriminator_step_is_a_non_saturating_step_then_an_r1_step():
    torch.manual_seed(0)
    d = LatentCodesDiscriminator(16, 3)
    ref = copy.deepcopy(d)
    real, fake = torch.randn(3, 16), torch.randn(2, 16)
    values = discriminator_step(d, d, torch.optim.SGD(d.parameters(), lr=0.1), DiscriminatorLoss(r1_gamma=10.0, d_reg_every=4), real, fake,
                                r1_step=True)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    real_loss, fake_loss = L.discriminator_losses(ref(real), ref(fake))
    (real_loss + fake_loss).backward()
    opt.step()
    w = real.clone().requires_grad_(True)
    r1 = 10.0 / 2 * L.r1_penalty(ref(w), w) * 4
    opt.zero_grad()
    r1.backward()
    opt.step()
    assert values["d_real_loss"] == pytest.approx(float(real_loss)) and values["d_fake_loss"] == pytest.approx(float(fake_loss))
    assert values["discriminator_r1_loss"] == pytest.approx(float(r1), rel=1e-6)
    for a, b in zip(d.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b)
    assert not any(p.requires_grad for p in d.parameters())  # frozen again for the encoder's step


def test_discriminator_losses_only_accumulate_gradients():
    torch.manual_seed(0)
    d = LatentCodesDiscriminator(16, 3)
    before = copy.deepcopy(d.state_dict())
    real, fake = torch.randn(3, 16), torch.randn(2, 16)
    loss = DiscriminatorLoss(r1_gamma=10.0, d_reg_every=4)
    values = loss.accumulate(d, real, fake)
    first = [p.grad.clone() for p in d.parameters()]
    real_loss, fake_loss = L.discriminator_losses(d(real), d(fake))
    assert values["discriminator_loss"] == pytest.approx(float(real_loss + fake_loss))
    r1 = loss.accumulate_r1(d, real)
    w = real.clone().requires_grad_(True)
    assert r1["discriminator_r1_loss"] == pytest.approx(float(10.0 / 2 * L.r1_penalty(d(w), w) * 4), rel=1e-6)
    assert any(not torch.equal(p.grad, g) for p, g in zip(d.parameters(), first))  # R1's gradients added to the first
    for k, v in d.state_dict().items():  # no step taken: the weights are as they were
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


@pytest.mark.parametrize("size", [16, 32])
def test_ddp_is_told_of_unused_encoder_parameters_exactly_when_a_full_stage_forward_leaves_some(size):
    """A generator of <= 16 px never feeds e4e's fine lateral layer: DDP without find_unused_parameters fails there."""
    from e4ecli.models.encoders import Encoder4Editing
    from e4ecli.training.loop import uses_every_parameter

    torch.manual_seed(0)
    enc = Encoder4Editing(size, 50)
    enc(torch.randn(1, 3, 32, 32)).sum().backward()
    unused = sorted(n.split(".")[0] for n, p in enc.named_parameters() if p.grad is None)
    assert unused == ([] if size == 32 else ["latlayer2", "latlayer2"])
    assert uses_every_parameter(enc) == (not unused)
