"""Pivotal tuning (PTI, Roich et al. 2022): keep the latents (pivots) fixed and tune the generator's
synthesis weights so that it renders the targets at the pivots.

Loss: weighted l2 + LPIPS at the pivots, plus `weights.reg` times PTI's locality regulariser: at codes
moved `alpha` from the pivot toward mapped random z (psi `psi` toward the average), the tuned generator
should render what the original does (l2 0.1 + LPIPS 0.1 between the two). The mapping network is not
tuned (pivots are W+ codes). One generator may serve several targets (multi-ID PTI).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from e4ecli.models.stylegan2 import Generator
from e4ecli.refine.losses import LossNets, Weights, lr_at_step, morphed_codes, reconstruction_terms, to_target, weighted_sum

DEFAULT_LR = 3e-3
LOCALITY = {"alpha": 30.0, "psi": 0.5, "l2": 0.1, "lpips": 0.1}


@dataclass
class Tuned:
    generator: Generator  # a copy of the base generator with tuned synthesis weights (eval mode, frozen)
    before: dict[str, list[float]]
    after: dict[str, list[float]]


def tunable(gen: Generator) -> dict[str, torch.nn.Parameter]:
    """The parameters PTI tunes: everything but the mapping network (style.*)."""
    return {k: p for k, p in gen.named_parameters() if not k.startswith("style.")}


@dataclass
class TunableCopy:
    """A copy of a generator being tuned: `generator` (eval mode; only `params` take gradients, between
    `unfreeze()` and `freeze()`), `params` (name -> the tunable parameters, see `tunable`) and the Adam
    `optimizer` over them."""

    generator: Generator
    params: dict[str, torch.nn.Parameter]
    optimizer: torch.optim.Adam

    def unfreeze(self) -> None:
        for p in self.params.values():
            p.requires_grad_(True)

    def freeze(self) -> None:
        for p in self.params.values():
            p.requires_grad_(False)


def tunable_copy(base: Generator, lr: float) -> TunableCopy:
    """A copy of `base` to tune (base is left as it is): eval mode, all its parameters frozen, an Adam
    (betas 0.9, 0.999) at `lr` over its `tunable` ones; `unfreeze()` before the steps, `freeze()` after."""
    tuned = copy.deepcopy(base).train(False)
    for p in tuned.parameters():
        p.requires_grad_(False)
    named = tunable(tuned)
    return TunableCopy(tuned, named, torch.optim.Adam(list(named.values()), lr=lr, betas=(0.9, 0.999)))


def _terms(gen: Generator, pivots: torch.Tensor, targets: torch.Tensor, nets: LossNets, weights: Weights, crop) -> dict[str, torch.Tensor]:
    return reconstruction_terms(to_target(gen.synthesis(pivots), targets, crop), targets, nets, weights)


def _floats(terms: dict[str, torch.Tensor], weights: Weights) -> dict[str, list[float]]:
    out = {k: [float(v) for v in t.detach().cpu()] for k, t in terms.items()}
    out["loss"] = [float(v) for v in weighted_sum(terms, weights).detach().cpu()]
    return out


def locality_loss(tuned: Generator, base: Generator, pivots: torch.Tensor, latent_avg: torch.Tensor, nets: LossNets,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """PTI's space regulariser, one random sample per pivot -> scalar (summed over pivots, as the reconstruction terms)."""
    with torch.no_grad():
        z = torch.randn(pivots.shape[0], pivots.shape[-1], generator=generator).to(pivots.device)
        w = base.mapping(z)
        w = latent_avg.reshape(1, -1) + LOCALITY["psi"] * (w - latent_avg.reshape(1, -1))
        codes = morphed_codes(pivots, w.unsqueeze(1).expand_as(pivots), LOCALITY["alpha"])
        reference = base.synthesis(codes)
    out = tuned.synthesis(codes)
    loss = LOCALITY["l2"] * (out - reference).pow(2).flatten(1).mean(1)
    if nets.lpips is not None:
        loss = loss + LOCALITY["lpips"] * nets.lpips(out, reference).reshape(-1)
    return loss.sum()


def _adam_step(opt: torch.optim.Optimizer, tuned: Generator, base: Generator, pivots: torch.Tensor, targets: torch.Tensor,
               nets: LossNets, weights: Weights, crop, latent_avg: torch.Tensor | None, rng: torch.Generator) -> float:
    """One PTI step on one batch: reconstruction terms (+ the locality term when weights.reg > 0) -> loss."""
    loss = weighted_sum(_terms(tuned, pivots, targets, nets, weights, crop), weights).sum()
    if weights.reg > 0 and latent_avg is not None:
        loss = loss + weights.reg * locality_loss(tuned, base, pivots, latent_avg.to(pivots.device), nets, rng)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def tune_generator(base: Generator, pivots: torch.Tensor, targets: torch.Tensor, *, steps: int = 30, lr: float = DEFAULT_LR,
                   weights: Weights = Weights(l2=1.0, lpips=1.0, reg=1.0), nets: LossNets | None = None, latent_avg: torch.Tensor | None = None,
                   crop=None, seed: int = 0, on_step: Callable[[int, float], None] | None = None) -> Tuned:
    """base: the generator (left untouched); pivots (N, S, D); targets (N, 3, h, w) in [-1, 1].

    Adam on the synthesis weights, learning-rate schedule as latent refinement; the locality term needs
    `latent_avg` (D,) and runs when weights.reg > 0. Several pivots tune one shared generator."""
    nets = nets or LossNets()
    pivots = pivots.detach().float()
    t = tunable_copy(base, lr)
    tuned, opt = t.generator, t.optimizer
    t.unfreeze()
    for p in base.parameters():
        p.requires_grad_(False)
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        before = _floats(_terms(tuned, pivots, targets, nets, weights, crop), weights)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at_step(step, steps, lr)
        loss = _adam_step(opt, tuned, base, pivots, targets, nets, weights, crop, latent_avg, rng)
        if on_step is not None:
            on_step(step, loss)
    t.freeze()
    with torch.no_grad():
        after = _floats(_terms(tuned, pivots, targets, nets, weights, crop), weights)
    return Tuned(tuned.eval(), before, after)


def tune_generator_streaming(base: Generator, batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]], *, epochs: int,
                             lr: float = DEFAULT_LR, weights: Weights = Weights(l2=1.0, lpips=1.0, reg=1.0), nets: LossNets | None = None,
                             latent_avg: torch.Tensor | None = None, crop=None, seed: int = 0, state: dict | None = None,
                             on_epoch: Callable[[int, dict], None] | None = None, on_step: Callable[[int, float], None] | None = None) -> Generator:
    """One generator tuned on any number of (pivots, targets) batches (a video's frames), as STIT tunes one
    generator on all frames: every epoch walks `batches()` once with one Adam step per batch, so memory is
    that of one batch whatever the count. The learning rate follows lr_at_step over the epochs.

    state: {'epoch', 'params', 'optimizer'} from an earlier on_epoch(epoch, state) call (a killed run goes on
    from there); on_epoch is called after each epoch with the state to keep. Returns the tuned generator."""
    nets = nets or LossNets()
    t = tunable_copy(base, lr)
    tuned, named, opt = t.generator, t.params, t.optimizer
    for p in base.parameters():
        p.requires_grad_(False)
    start = 0
    if state is not None:
        with torch.no_grad():
            for k, v in state["params"].items():
                named[k].copy_(v.to(named[k].device))
        opt.load_state_dict(state["optimizer"])
        start = int(state["epoch"])
    t.unfreeze()
    rng = torch.Generator().manual_seed(seed + start)
    step = 0
    for epoch in range(start, epochs):
        for group in opt.param_groups:
            group["lr"] = lr_at_step(epoch, epochs, lr)
        for pivots, targets in batches():
            pivots = pivots.detach().float()
            loss = _adam_step(opt, tuned, base, pivots, targets, nets, weights, crop, latent_avg, rng)
            if on_step is not None:
                on_step(step, loss)
            step += 1
        if on_epoch is not None:
            on_epoch(epoch + 1, {"epoch": epoch + 1, "params": {k: v.detach().cpu().clone() for k, v in named.items()},
                                 "optimizer": opt.state_dict()})
    t.freeze()
    return tuned.eval()
