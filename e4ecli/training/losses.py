"""The e4e training losses, computed as the original criteria and coach compute them.

Shapes: images (N, 3, H, W) in [-1, 1]; latents (N, n_styles, 512) (W+, latent average included);
codes w (N, 512); discriminator logits (N, 1).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import autograd, nn

from e4ecli.models.identity import ARCFACE_INPUT, MOCO_INPUT

ARCFACE_CROP_256 = ((35, 223), (32, 220))  # rows, columns of a 256x256 aligned face the original feeds ArcFace


class LossWeightsError(RuntimeError):
    """A loss whose network weights are missing; the message says what to put where, or which flag turns it off."""


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


# -- identity / similarity ------------------------------------------------------------------------
def arcface_crop(x: torch.Tensor) -> torch.Tensor:
    """The face region ArcFace sees: rows 35:223, columns 32:220 of a 256x256 image (scaled for other sizes)."""
    h, w = x.shape[-2:]
    (r0, r1), (c0, c1) = ARCFACE_CROP_256
    if (h, w) != (256, 256):
        r0, r1 = round(r0 * h / 256), round(r1 * h / 256)
        c0, c1 = round(c0 * w / 256), round(c1 * w / 256)
    return x[:, :, r0:r1, c0:c1]


class IdentityLoss(nn.Module):
    """The original IDLoss (ArcFace, faces) / MocoLoss (MoCo v2, other domains).

    forward(y_hat, y, x) -> (loss, improvement, logs):
      loss        mean_n (1 - <f(y_hat_n), f(y_n)>)                (a tensor; y's features detached)
      improvement mean_n (<f(y_hat_n), f(y_n)> - <f(y_n), f(x_n)>)  (a float: the original's `id_improve`)
      logs        per sample {'diff_target', 'diff_input', 'diff_views'}
    """

    def __init__(self, net: nn.Module, kind: str):
        super().__init__()
        if kind not in ("arcface", "moco"):
            raise ValueError(kind)
        self.net = net.eval()
        self.kind = kind
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "IdentityLoss":  # the networks stay in eval mode
        return super().train(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """images (N, 3, H, W) -> unit-norm features (N, 512) ArcFace / (N, 2048) MoCo."""
        if self.kind == "arcface":
            return self.net(F.adaptive_avg_pool2d(arcface_crop(x), (ARCFACE_INPUT, ARCFACE_INPUT)))
        feats = self.net(F.interpolate(x, size=MOCO_INPUT))
        return F.normalize(feats.flatten(1), dim=1)

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, float, list[dict]]:
        y_feats = self.features(y).detach()
        x_feats = y_feats if x is y else self.features(x)  # e4e trains with x == y: one pass serves both
        return self.compare(self.features(y_hat), y_feats, x_feats)

    @staticmethod
    def compare(y_hat_feats: torch.Tensor, y_feats: torch.Tensor, x_feats: torch.Tensor) -> tuple[torch.Tensor, float, list[dict]]:
        """The loss, improvement and logs from features (N, D) of the reconstructions, targets and inputs."""
        y_feats = y_feats.detach()
        diff_target = (y_hat_feats * y_feats).sum(1)
        diff_input = (y_hat_feats * x_feats).sum(1)
        diff_views = (y_feats * x_feats).sum(1)
        loss = (1 - diff_target).mean()
        improvement = float((diff_target.detach() - diff_views.detach()).double().mean())
        logs = [{"diff_target": float(t), "diff_input": float(i), "diff_views": float(v)}
                for t, i, v in zip(diff_target.tolist(), diff_input.tolist(), diff_views.tolist())]
        return loss, improvement, logs


# -- LPIPS ---------------------------------------------------------------------------------------------
def lpips_backbone_file(net_type: str) -> tuple[Path, str]:
    """(where torchvision caches the ImageNet backbone LPIPS needs, its download URL)."""
    from torchvision import models

    weights = {"alex": models.AlexNet_Weights, "vgg": models.VGG16_Weights, "squeeze": models.SqueezeNet1_1_Weights}[net_type]
    url = weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url), url


class LpipsLoss(nn.Module):
    """LPIPS (the `lpips` package: official linear layers over a torchvision backbone): mean over the batch."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "LpipsLoss":
        return super().train(False)

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.model(y_hat, y).mean()


def build_lpips(net_type: str = "alex", random_backbone: bool = False) -> LpipsLoss:
    """LPIPS with the pretrained backbone from torchvision's cache (downloaded when online).

    random_backbone: lpips' `pnet_rand` -- untrained backbone, for tests only (the loss is then meaningless).
    """
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation notes about `pretrained=`
        if random_backbone:
            return LpipsLoss(lpips.LPIPS(net=net_type, pnet_rand=True, verbose=False))
        path, url = lpips_backbone_file(net_type)
        try:
            return LpipsLoss(lpips.LPIPS(net=net_type, verbose=False))
        except Exception as e:  # noqa: BLE001 -- offline (URLError), bad cache file, ...
            state = "is not readable" if path.exists() else "is missing and could not be downloaded"
            raise LossWeightsError(
                f"LPIPS ({net_type}) needs torchvision's ImageNet weights {path.name}, which {state} "
                f"({type(e).__name__}: {e}). Download {url} and put it at {path} (the folder follows $TORCH_HOME), "
                "or train without LPIPS: --lpips-lambda 0."
            ) from None
