"""Loss terms and schedules of latent refinement and pivotal tuning; every term is per image: (N,).

Default weights follow the papers: e4e trains faces with l2 1.0, LPIPS 0.8, identity 0.1; PTI tunes
with l2 1 and LPIPS 1, and its locality regulariser (l2 0.1 + LPIPS 0.1 between the tuned and the
original generator at codes moved `alpha` = 30 from the pivot toward mapped random z, psi 0.5).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

ImageLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (y_hat, y) -> (N,)


@dataclass
class LossNets:
    """The networks behind the optional terms (None: not available here), and why each is missing."""

    lpips: ImageLoss | None = None
    identity: ImageLoss | None = None
    missing: dict[str, str] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)  # the typed errors behind `missing`, for the caller to word


@dataclass(frozen=True)
class Weights:
    l2: float = 1.0
    lpips: float = 0.8
    id: float = 0.0
    reg: float = 0.0  # latent refinement: pull toward the encoder's code; PTI: locality regulariser


def to_target(images: torch.Tensor, target: torch.Tensor, crop: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Renders -> the target's frame and size: `crop` frames them (the pipelines pass Domain.encoder_frame: the
    domain's crop, then area averaging to the encoder's input, e4e's face_pool), then area averaging to the
    target's size if it still differs."""
    if crop is not None:
        images = crop(images)
    if images.shape[-2:] != target.shape[-2:]:
        images = F.adaptive_avg_pool2d(images, target.shape[-2:])
    return images


def l2_per_image(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (y_hat.float() - y.float()).pow(2).flatten(1).mean(1)


def reconstruction_terms(y_hat: torch.Tensor, y: torch.Tensor, nets: LossNets, weights: Weights) -> dict[str, torch.Tensor]:
    """{'l2', 'lpips'?, 'id'?}: the per-image terms with a weight > 0 whose network is available."""
    terms = {"l2": l2_per_image(y_hat, y)}
    if weights.lpips > 0 and nets.lpips is not None:
        terms["lpips"] = nets.lpips(y_hat, y).reshape(-1).float()
    if weights.id > 0 and nets.identity is not None:
        terms["id"] = nets.identity(y_hat, y).reshape(-1).float()
    return terms


def weighted_sum(terms: dict[str, torch.Tensor], weights: Weights) -> torch.Tensor:
    """sum over terms of weight * term -> (N,)."""
    total = None
    for name, value in terms.items():
        part = getattr(weights, name) * value
        total = part if total is None else total + part
    return total


def latent_pull(latents: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of each W+ code from the encoder's code: (N,)."""
    return (latents - anchor).pow(2).flatten(1).mean(1)


def identity_distance(similarity_features: Callable[[torch.Tensor], torch.Tensor]) -> ImageLoss:
    """1 - cosine similarity of unit-norm face features (the e4e ID loss, per image)."""
    def loss(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = similarity_features(y)
        return 1 - (similarity_features(y_hat) * target).sum(1)

    return loss


def morphed_codes(pivots: torch.Tensor, w_random: torch.Tensor, alpha: float) -> torch.Tensor:
    """PTI's locality samples: pivot + alpha * unit(w_random - pivot), per style. pivots, w_random: (N, S, D)."""
    direction = w_random - pivots
    return pivots + alpha * direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def lr_at(step: int, steps: int, lr: float, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    """The StyleGAN2 projector's schedule (PTI's W projector too): linear warm-up over the first
    `rampup` of the steps, cosine decay over the last `rampdown`."""
    t = step / max(1, steps)
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return lr * ramp * min(1.0, t / rampup) if rampup > 0 else lr * ramp


def lr_at_step(step: int, steps: int, lr: float) -> float:
    """lr_at, never 0 on the first step (warm-up starts at 1/steps of the way)."""
    return lr_at(step + 1, steps + 1, lr)
