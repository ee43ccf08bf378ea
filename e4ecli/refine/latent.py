"""Latent refinement: start from the encoder's code and optimise it against the target image.

space "w+": every style row is free (Image2StyleGAN); "w": one code shared by all rows (editability of
pure W, less faithful). The loss per image is the weighted reconstruction terms plus `weights.reg` times
the mean squared distance from the encoder's code; images are independent (the batch loss is their sum,
and Adam is per coordinate), so a batch refines exactly as its images would one by one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from e4ecli.refine.losses import LossNets, Weights, latent_pull, lr_at_step, reconstruction_terms, to_target, weighted_sum

SPACES = ("w+", "w")
DEFAULT_LR = {"w+": 0.03, "w": 0.03}


@dataclass
class Refined:
    latents: torch.Tensor  # (N, n_styles, D), float32
    before: dict[str, list[float]]  # term -> per-image value at the encoder's code
    after: dict[str, list[float]]  # the same at the result


def _evaluate(decode: Callable[[torch.Tensor], torch.Tensor], latents: torch.Tensor, targets: torch.Tensor, anchor: torch.Tensor,
              nets: LossNets, weights: Weights, crop) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    y_hat = to_target(decode(latents), targets, crop)
    terms = reconstruction_terms(y_hat, targets, nets, weights)
    if weights.reg > 0:
        terms["reg"] = latent_pull(latents, anchor)
    return weighted_sum(terms, weights), terms


def _floats(terms: dict[str, torch.Tensor], total: torch.Tensor) -> dict[str, list[float]]:
    out = {k: [float(v) for v in t.detach().cpu()] for k, t in terms.items()}
    out["loss"] = [float(v) for v in total.detach().cpu()]
    return out


def refine_latents(decode: Callable[[torch.Tensor], torch.Tensor], targets: torch.Tensor, codes: torch.Tensor, *, space: str = "w+", steps: int = 30,
                   lr: float | None = None, weights: Weights = Weights(), nets: LossNets | None = None, crop=None,
                   on_step: Callable[[int, float], None] | None = None) -> Refined:
    """decode: W+ (N, S, D) -> renders; targets (N, 3, h, w) in [-1, 1]; codes: the encoder's W+ (N, S, D).

    Adam with the StyleGAN2 projector's learning-rate schedule (peak `lr`); on_step(step, mean loss)."""
    if space not in SPACES:
        raise ValueError(f"unknown latent space {space!r}; choose from {', '.join(SPACES)}")
    nets = nets or LossNets()
    lr = DEFAULT_LR[space] if lr is None else lr
    anchor = codes.detach().float()
    n_styles = anchor.shape[1]
    start = anchor.mean(1, keepdim=True) if space == "w" else anchor
    var = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([var], lr=lr, betas=(0.9, 0.999))

    def expand(v: torch.Tensor) -> torch.Tensor:
        return v.expand(-1, n_styles, -1) if space == "w" else v

    with torch.no_grad():
        total, terms = _evaluate(decode, anchor, targets, anchor, nets, weights, crop)
    before = _floats(terms, total)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at_step(step, steps, lr)
        total, _ = _evaluate(decode, expand(var), targets, anchor, nets, weights, crop)
        opt.zero_grad(set_to_none=True)
        total.sum().backward()
        opt.step()
        if on_step is not None:
            on_step(step, float(total.detach().mean()))
    with torch.no_grad():
        final = expand(var.detach()).contiguous()
        total, terms = _evaluate(decode, final, targets, anchor, nets, weights, crop)
    return Refined(final, before, _floats(terms, total))
