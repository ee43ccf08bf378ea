"""The latent discriminator is trained on the codes the encoder is judged on: with --start-from-latent-avg
the fake codes are the encoder's output + latent_avg (the original's fix f0a8223), in the pools too."""
from __future__ import annotations

import torch

from e4ecli.runtime import Dist
from e4ecli.training import loop
from e4ecli.training import loss as lossmod
from e4ecli.training import options as optmod
from train_support import tiny_generator, write_photos


def _trainer(tmp_path, **extra) -> loop.Trainer:
    write_photos(tmp_path / "train", ["face", "car"], size=40)
    gen = tiny_generator(tmp_path / "g8.pt")  # 4 styles, a latent_avg far from 0
    given = {"exp_dir": str(tmp_path / "exp"), "data": str(tmp_path / "train"), "stylegan_weights": str(gen),
             "encoder_init": "none", "id_lambda": 0, "lpips_lambda": 0, "input_size": 32, "batch_size": 2,
             "workers": 0, "w_discriminator_lambda": 0.1, "start_from_latent_avg": True, "device": "cpu", **extra}
    trainer = loop.Trainer(loop.prepare(optmod.merge(given), set(given)), Dist(), torch.device("cpu"))
    trainer.setup()
    return trainer


def _batch(trainer) -> torch.Tensor:
    return torch.stack([trainer.c.train_set[(i, False)][0] for i in range(2)]).float()


def test_discriminator_step_sees_encoder_codes_plus_latent_avg_in_the_pools_too(tmp_path):
    trainer = _trainer(tmp_path, use_w_pool=True, w_pool_size=4, progressive_start=5)  # stage 0: style 0 judged
    trainer._apply_stage(1)
    x = _batch(trainer)
    with torch.no_grad():
        expected = (trainer.c.encoder(x) + trainer.c.latent_avg)[:, 0]  # (2, 512): the codes the encoder is judged on
    seen: list[torch.Tensor] = []
    hook = trainer.c.discriminator.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        trainer.train_step(x, step=1)  # no R1 at step 1 (--d-reg-every 16)
    finally:
        hook.remove()
    d_input = seen[0]  # the discriminator step: real codes then fake codes, one pass
    assert d_input.shape == (4, 512)
    torch.testing.assert_close(d_input[2:], expected, rtol=0, atol=1e-6)
    fake_pool = trainer.c.pools[1]
    assert [w.shape for w in fake_pool.ws] == [(512,), (512,)]
    torch.testing.assert_close(torch.stack(fake_pool.ws), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(seen[1], expected, rtol=0, atol=1e-6)  # the encoder's adversarial loss: same codes
    assert float(trainer.c.latent_avg.abs().mean()) > 0.01  # the test means something: the offset is not ~0


def test_discriminator_fake_loss_responds_to_the_latent_avg_offset(tmp_path):
    trainer = _trainer(tmp_path)
    x = _batch(trainer)
    losses = []
    for shift in (0.0, 10.0):
        trainer.c.latent_avg.add_(shift)
        torch.manual_seed(5)  # the same real codes both times
        losses.append(lossmod.discriminator_losses_of(trainer.c.discriminator, *trainer.sample_codes(x, pools=False)))
    assert losses[0]["d_real_loss"] == losses[1]["d_real_loss"]
    assert abs(losses[0]["d_fake_loss"] - losses[1]["d_fake_loss"]) > 1e-4, losses
