"""The two objectives of a training step, composed from the terms in `losses` (NVIDIA's `loss.py` role):

  EncoderLoss        lambda_D * adversarial + delta_lambda * deltas + id_lambda * id + l2_lambda * l2
                     + lpips_lambda * lpips, with the original's loss names in the returned dict
  sample_codes       the discriminator's real codes (mapping of z) and fake codes (the encoder's, plus
                     latent_avg with --start-from-latent-avg: the codes the encoder is judged on)
  DiscriminatorLoss  the discriminator's non-saturating loss and its lazy R1, each accumulated (backward)
  discriminator_losses_of  the same losses without gradients (validation)

Each works on plain modules and tensors, so each can be tested alone. The losses compute and call
backward; every optimiser step and zero_grad is the training loop's (`loop.discriminator_step`, `Trainer.train_step`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from e4ecli.training import losses as L
from e4ecli.training.draws import Draws
from e4ecli.training.pool import LatentCodesPool


def scalar(value: Any) -> float:
    """A loss value for logs: tensors are detached first."""
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


@dataclass(frozen=True)
class EncoderLoss:
    """The encoder's loss on a batch. e4e reconstructs its input: the target is x itself."""

    l2_lambda: float
    lpips_lambda: float
    id_lambda: float
    delta_norm: int
    delta_norm_lambda: float
    w_discriminator_lambda: float
    lpips: nn.Module | None = None
    identity: L.IdentityLoss | None = None

    def __call__(self, x: torch.Tensor, y_hat: torch.Tensor, latents: torch.Tensor, discriminator: nn.Module | None = None,
                 dims: Sequence[int] = (), delta_stage: int | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """x, y_hat (N, 3, H, W); latents (N, n_styles, 512) as fed to the generator.

        discriminator/dims: the adversarial term over those styles; delta_stage: the delta regularisation
        of styles 1..stage (None: not progressive, or every style unlocked). Returns (loss, {name: value}).
        """
        values: dict[str, float] = {}
        loss: Any = 0.0
        if discriminator is not None:
            adv = L.encoder_discriminator_loss(discriminator, latents.float(), list(dims))
            values["encoder_discriminator_loss"] = scalar(adv)
            loss = loss + self.w_discriminator_lambda * adv
        if delta_stage is not None:
            total, per = L.delta_losses(latents.float(), delta_stage, self.delta_norm)
            for i, d in enumerate(per, start=1):
                values[f"delta{i}_loss"] = scalar(d)
            values["total_delta_loss"] = scalar(total)
            loss = loss + self.delta_norm_lambda * total
        if self.identity is not None:
            id_loss, improvement, _ = self.identity(y_hat, x, x)
            values["loss_id"] = scalar(id_loss)
            values["id_improve"] = scalar(improvement)
            loss = loss + id_loss * self.id_lambda
        if self.l2_lambda > 0:
            l2 = L.l2_loss(y_hat.float(), x)
            values["loss_l2"] = scalar(l2)
            loss = loss + l2 * self.l2_lambda
        if self.lpips is not None:
            lp = self.lpips(y_hat, x)
            values["loss_lpips"] = scalar(lp)
            loss = loss + lp * self.lpips_lambda
        values["loss"] = scalar(loss)
        return loss, values


@torch.no_grad()
def sample_codes(decoder: nn.Module, encoder: nn.Module, x: torch.Tensor, batch_size: int, latent_avg: torch.Tensor | None,
                 dims: Sequence[int] | None, pools: tuple[LatentCodesPool, LatentCodesPool] | None,
                 draws: Draws | None = None, step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(real codes (B, 512) = mapping(z), fake codes (N, 512)), as the original.

    Fake codes: encoder(x) (+ latent_avg (n_styles, 512) when given), restricted to `dims` (progressive
    training), through the (real, fake) pools when given, then one style per sample (style 0, or the
    one the pool picked). z and the pools' choices come from `draws` (default: the RNGs).
    """
    draws = draws if draws is not None else Draws()
    z = draws.z(step, batch_size, decoder.style_dim, x.device)
    real_w = decoder.mapping(z)
    fake_w = encoder(x)
    if latent_avg is not None:
        fake_w = fake_w + latent_avg.to(fake_w.dtype)
    if dims is not None:
        fake_w = fake_w[:, list(dims), :]
    if pools is not None:
        real_w = draws.pool(step, "real", pools[0], real_w)
        fake_w = draws.pool(step, "fake", pools[1], fake_w)
    if fake_w.ndim == 3:
        fake_w = fake_w[:, 0, :]
    return real_w, fake_w


def discriminator_losses_of(discriminator: nn.Module, real_w: torch.Tensor, fake_w: torch.Tensor) -> dict[str, float]:
    """The discriminator's losses on these codes, without a step."""
    real, fake = L.discriminator_losses(discriminator(real_w), discriminator(fake_w))
    return {"d_real_loss": scalar(real), "d_fake_loss": scalar(fake), "discriminator_loss": scalar(real + fake)}


@dataclass(frozen=True)
class DiscriminatorLoss:
    """The latent discriminator's objectives. Each `accumulate*` computes one and calls backward on it
    (gradients add up in the discriminator's parameters); the optimiser steps are the trainer's.

    r1_gamma: the R1 weight; d_reg_every: R1 runs every this many steps, so it is scaled by it (lazy R1)."""

    r1_gamma: float
    d_reg_every: int

    def accumulate(self, d_forward: nn.Module, real_w: torch.Tensor, fake_w: torch.Tensor) -> dict[str, float]:
        """Non-saturating loss on real (B, 512) and fake (N, 512) codes in one pass (one DDP forward per
        backward); d_forward: the discriminator or its DDP wrapper. Returns the logged values."""
        pred = d_forward(torch.cat([real_w, fake_w]))
        real_loss, fake_loss = L.discriminator_losses(pred[: len(real_w)], pred[len(real_w):])
        loss = real_loss + fake_loss
        loss.backward()
        return {"d_real_loss": scalar(real_loss), "d_fake_loss": scalar(fake_loss), "discriminator_loss": scalar(loss)}

    def accumulate_r1(self, d_forward: nn.Module, real_w: torch.Tensor) -> dict[str, float]:
        """R1 on the real codes: r1_gamma / 2 * penalty * d_reg_every, as the original."""
        real_w = real_w.detach().requires_grad_(True)
        real_pred = d_forward(real_w)
        r1 = L.r1_penalty(real_pred, real_w)
        r1_final = self.r1_gamma / 2 * r1 * self.d_reg_every + 0 * real_pred[0]
        r1_final.backward()
        return {"discriminator_r1_loss": scalar(r1_final)}
