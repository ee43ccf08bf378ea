"""The e4e training losses, computed as the original criteria and coach compute them.

Shapes: images (N, 3, H, W) in [-1, 1]; latents (N, n_styles, 512) (W+, latent average included);
codes w (N, 512); discriminator logits (N, 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import autograd, nn

# The identity and LPIPS networks are shared with the metrics: they live outside the trainer.
from e4ecli.hub.perceptual import LpipsLoss, WeightsUnavailable, build_lpips, lpips_backbone_file  # noqa: F401
from e4ecli.models.identity import ARCFACE_CROP_256, IdentityLoss, arcface_crop  # noqa: F401

LossWeightsError = WeightsUnavailable  # the name the trainer uses


# -- reconstruction and regularisation -------------------------------------------------------------
def l2_loss(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared pixel error over the batch (F.mse_loss)."""
    return F.mse_loss(y_hat, y)


def delta_losses(latents: torch.Tensor, stage: int, p: int = 2) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Delta regularisation: for each unlocked style i in 1..stage, mean_n ||latents[n, i] - latents[n, 0]||_p.

    Returns (their sum, [delta_1, ..., delta_stage]); at stage 0 the sum is 0.
    """
    first = latents[:, 0, :]
    per = [torch.norm(latents[:, i, :] - first, p, dim=1).mean() for i in range(1, stage + 1)]
    total = per[0] if per else latents.new_zeros(())
    for d in per[1:]:
        total = total + d
    return total, per


# -- latent discriminator -------------------------------------------------------------------------
def encoder_discriminator_loss(disc: nn.Module, latents: torch.Tensor, dims: list[int]) -> torch.Tensor:
    """Non-saturating generator loss on the encoder's codes: mean over dims i of mean_n softplus(-D(latents[n, i]))."""
    loss = latents.new_zeros(())
    for i in dims:
        loss = loss + F.softplus(-disc(latents[:, i, :])).mean()
    return loss / len(dims)


def discriminator_losses(real_pred: torch.Tensor, fake_pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean softplus(-D(real)), mean softplus(D(fake))); the discriminator minimises their sum."""
    return F.softplus(-real_pred).mean(), F.softplus(fake_pred).mean()


def r1_penalty(real_pred: torch.Tensor, real_w: torch.Tensor) -> torch.Tensor:
    """R1: mean over the batch of ||d sum(D(real)) / d real_w||^2, differentiable (create_graph)."""
    (grad,) = autograd.grad(outputs=real_pred.sum(), inputs=real_w, create_graph=True)
    return grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean()
