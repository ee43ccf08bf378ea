"""Refinement after the encoder, batch by batch: latent optimisation (W+ / W) and pivotal tuning.

Plain functions and one small class over tensors; the invert pipeline calls them between encoding a
batch and writing its outputs. Loss networks that cannot be loaded are left out (LossNets.missing says
why and which file to place); the refinement runs with the terms that are available.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from e4ecli.refine.losses import LossNets, Weights, identity_distance
from e4ecli.refine.options import MAX_SHARED, MODES, RefineOptions
from e4ecli.refine.latent import refine_latents
from e4ecli.refine.pti import DEFAULT_LR as PTI_LR, Tuned, tune_generator

def load_loss_nets(opts: RefineOptions, device: torch.device, *, face: bool, lpips_net: str = "alex", arcface: str = "ir_se50",
                   lpips_factory: Callable[[], torch.nn.Module] | None = None) -> LossNets:
    """The LPIPS / identity networks the weights ask for; each one that cannot be loaded is recorded in
    `missing` with the reason (which file, where). lpips_factory: build LPIPS another way (tests)."""
    from e4ecli.hub.perceptual import WeightsUnavailable, build_lpips

    nets = LossNets()
    wants_lpips = (opts.weights(False).lpips > 0 and opts.latent_space()) or (opts.is_pti and opts.weights(True).lpips > 0)
    if wants_lpips:
        try:
            model = (lpips_factory() if lpips_factory else build_lpips(lpips_net).model).to(device)
            for p in model.parameters():
                p.requires_grad_(False)
            nets.lpips = lambda a, b: model(a, b).reshape(-1)
        except WeightsUnavailable as e:
            nets.missing["lpips"] = str(e)  # what to place where; the caller words how to do without it
    if opts.id > 0:
        if not face:
            nets.missing["id"] = "the identity loss compares faces (ArcFace); this model's domain is not faces"
        else:
            from e4ecli.hub.checkpoints import CheckpointError
            from e4ecli.hub.networks import load_arcface, resolve_weights
            from e4ecli.models.identity import IdentityLoss

            try:
                net = load_arcface(resolve_weights(arcface, "the ArcFace network of the identity loss"))
                ident = IdentityLoss(net.to(device), "arcface")
                nets.identity = identity_distance(ident.features)
            except CheckpointError as e:  # the caller words how to name another file or do without it
                nets.missing["id"], nets.errors["id"] = str(e), e
    return nets


def used_terms(nets: LossNets, weights: Weights) -> list[str]:
    terms = ["l2"] if weights.l2 > 0 else []
    terms += ["lpips"] if weights.lpips > 0 and nets.lpips is not None else []
    terms += ["id"] if weights.id > 0 and nets.identity is not None else []
    return terms + (["reg"] if weights.reg > 0 else [])


@dataclass
class Refinement:
    """One batch's result: latents (N, S, D) float32; tuned: per image (or one shared) Tuned, or None;
    info: per image {'losses_before', 'losses_after'} for the manifest."""

    latents: torch.Tensor
    tuned: list[Tuned] | None
    info: list[dict]


def _per_image(before: dict[str, list[float]], after: dict[str, list[float]], n: int) -> list[dict]:
    return [{"losses_before": {k: round(v[i], 6) for k, v in before.items()},
             "losses_after": {k: round(v[i], 6) for k, v in after.items()}} for i in range(n)]


def refine_batch(opts: RefineOptions, generator, latent_avg: torch.Tensor, x: torch.Tensor, codes: torch.Tensor, nets: LossNets, *,
                 crop=None, on_step: Callable[[int, float], None] | None = None) -> Refinement:
    """x: the preprocessed inputs (N, 3, h, w); codes: the encoder's W+ (N, S, D). With opts.shared the
    whole batch tunes one generator (tuned has one entry); otherwise one generator per image."""
    n = x.shape[0]
    latents, info = codes.detach().float(), None
    space = opts.latent_space()
    if space:
        steps = opts.pivot_steps if opts.is_pti else opts.steps
        lr = None if opts.is_pti else opts.lr
        with torch.enable_grad():
            r = refine_latents(generator.synthesis, x, latents, space=space, steps=steps, lr=lr, weights=opts.weights(False), nets=nets, crop=crop,
                               on_step=on_step)
        latents, info = r.latents, _per_image(r.before, r.after, n)
    if not opts.is_pti:
        return Refinement(latents, None, info)
    w = opts.weights(True)
    lr = opts.lr if opts.lr is not None else PTI_LR
    avg = latent_avg.reshape(-1, latent_avg.shape[-1])[0]
    groups = [slice(0, n)] if opts.shared else [slice(i, i + 1) for i in range(n)]
    tuned, pti_info = [], [None] * n
    for g in groups:
        with torch.enable_grad():
            t = tune_generator(generator, latents[g], x[g], steps=opts.steps, lr=lr, weights=w, nets=nets, latent_avg=avg, crop=crop,
                               seed=opts.seed, on_step=on_step)
        tuned.append(t)
        for j, d in enumerate(_per_image(t.before, t.after, g.stop - g.start)):
            pti_info[g.start + j] = d
    if info is None:
        info = pti_info
    else:
        info = [dict(a, pti_losses_before=b["losses_before"], pti_losses_after=b["losses_after"]) for a, b in zip(info, pti_info)]
    return Refinement(latents, tuned, info)


@dataclass
class Refiner:
    """The refinement strategy an InvertPipeline runs between encoding a batch and writing it: the options,
    the loss networks (those that could not be loaded are in `nets.missing`), what a tuned generator records
    of its base checkpoint (`base`: {'path', 'id', 'name'}; PTI only) and an optional step callback."""

    options: RefineOptions
    nets: LossNets = field(default_factory=LossNets)
    base: dict | None = None
    on_step: Callable[[int, float], None] | None = None

    @classmethod
    def load(cls, options: RefineOptions, device: torch.device, *, face: bool, arcface: str = "ir_se50", base: dict | None = None,
             on_step: Callable[[int, float], None] | None = None) -> "Refiner":
        """Load the loss networks the options ask for (see load_loss_nets) -> a Refiner."""
        return cls(options, load_loss_nets(options, device, face=face, arcface=arcface), base, on_step)

    @property
    def is_pti(self) -> bool:
        return self.options.is_pti

    @property
    def shared(self) -> bool:
        """One generator tuned for the whole batch of inputs (PTI)."""
        return self.options.is_pti and self.options.shared

    def settings(self) -> dict:
        """What the run's Settings record: the options with their defaults resolved, and the loss terms left out."""
        return dict(self.options.settings(), left_out=sorted(self.nets.missing))

    def __call__(self, generator, latent_avg: torch.Tensor, x: torch.Tensor, codes: torch.Tensor, crop=None) -> Refinement:
        return refine_batch(self.options, generator, latent_avg, x, codes, self.nets, crop=crop, on_step=self.on_step)

    def save_tuned(self, path, generator, base_generator) -> None:
        """Write a tuned generator (safetensors, only the tuned weights) recording its base checkpoint."""
        from pathlib import Path

        from e4ecli.hub.tuned import save_tuned
        from e4ecli.refine.pti import tunable

        base = self.base or {}
        save_tuned(path, generator, base_generator, tunable(generator), Path(base["path"]), base["id"], base.get("name"),
                   {"refine": self.options.settings()})


def describe_missing(nets: LossNets) -> list[str]:
    return [f"{name} left out of the refinement: {why}" for name, why in nets.missing.items()]


__all__ = ["MODES", "MAX_SHARED", "RefineOptions", "Refinement", "Refiner", "load_loss_nets", "refine_batch", "used_terms", "describe_missing", "replace"]
