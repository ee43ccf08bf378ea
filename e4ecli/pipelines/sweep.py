"""The distortion-editability curve on the user's images: the eval protocol at several dial settings.

dial "stage": e4e's progressive stage K (0 = pure W ... n_styles-1 = the full code);
dial "refine": W+ latent refinement after the full e4e code, K steps (0 = the encoder alone).
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch

from e4ecli.files.batch import Item
from e4ecli.hub.checkpoints import LoadedCheckpoint

DIALS = ("stage", "refine")
DISTORTION = ("l2", "lpips")  # first available is the plot's x axis
EDITABILITY = ("lec", "swd_edit", "fid_edit")  # first available is its y axis


def default_settings(dial: str, n_styles: int) -> list[int]:
    if dial == "stage":
        picks = {0, 1, 3, n_styles // 2, n_styles - 1}
        return sorted(k for k in picks if 0 <= k < n_styles)
    return [0, 10, 30]


def check_settings(dial: str, settings: Sequence[int], n_styles: int) -> None:
    """ValueError naming the bad setting."""
    if dial not in DIALS:
        raise ValueError(f"unknown dial {dial!r}; choose from {', '.join(DIALS)}")
    for k in settings:
        if k < 0 or (dial == "stage" and k >= n_styles):
            raise ValueError(f"{dial} {k} is out of range" + (f" (stages 0 to {n_styles - 1})" if dial == "stage" else " (steps >= 0)"))


def refiner(ckpt: LoadedCheckpoint, steps: int, nets=None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """(x, w) -> w refined `steps` times in W+ (the invert defaults), or None for 0 steps."""
    if steps == 0:
        return None
    from e4ecli.pipelines.refine import RefineOptions, Refiner
    from e4ecli.refine.losses import LossNets

    strategy = Refiner(RefineOptions("w+", steps=steps), nets if nets is not None else LossNets())

    def refine(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        for p in ckpt.generator.parameters():
            p.requires_grad_(False)
        return strategy(ckpt.generator, ckpt.latent_avg, x, w, crop=ckpt.domain.encoder_frame).latents

    return refine


def run_sweep(dial: str, settings: Sequence[int], items: Sequence[Item], make_evaluator: Callable[[Callable | None], object],
              ckpt: LoadedCheckpoint, nets=None) -> Iterator[tuple[int, object, object]]:
    """For each setting: (setting, Evaluator after running it, its per-item results list); the encoder's stage is
    restored afterwards. make_evaluator(refine) builds a fresh Evaluator (refine: the code hook or None)."""
    stage = getattr(ckpt.encoder, "progressive_stage", None)
    try:
        for k in settings:
            if dial == "stage":
                from e4ecli.pipelines.invert import set_stage

                set_stage(ckpt.encoder, k)
                ev = make_evaluator(None)
            else:
                ev = make_evaluator(refiner(ckpt, k, nets))
            results = list(ev.run(items))
            yield k, ev, results
    finally:
        if stage is not None:
            ckpt.encoder.set_progressive_stage(stage)


def curve_axes(points: Sequence[dict]) -> tuple[str | None, str | None]:
    """(distortion metric, editability metric) both present in every point, or None."""
    def first(names):
        return next((n for n in names if all(p.get(n) is not None for p in points)), None)

    return first(DISTORTION), first(EDITABILITY)
