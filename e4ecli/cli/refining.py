"""CLI helpers of `e4e invert --refine ...`: option checks before any model loads, loss-network notes."""
from __future__ import annotations

from enum import Enum
from typing import Optional

from rich.markup import escape

from e4ecli.cli.common import console, die


class RefineMode(str, Enum):
    w_plus = "w+"
    w = "w"
    pti = "pti"


class PivotMode(str, Enum):
    w_plus = "w+"
    w = "w"


REFINE_HELP = ("Optimise each code after the encoder: w+ (every style free, most faithful), w (one code: stays editable), "
               "pti (tune a copy of the generator at the code: near-exact reconstructions; writes <name>.pti.safetensors).")


def refine_options_or_die(refine: Optional[RefineMode], steps: int, lr: Optional[float], pivot: Optional[PivotMode], pivot_steps: int,
                          shared: bool, lpips: Optional[float], id_weight: float, reg: Optional[float], n_items: int, world: int):
    """RefineOptions (None without --refine); exit 2 on options that need --refine or do not combine."""
    from e4ecli.refine.options import MAX_SHARED, RefineOptions

    if refine is None:
        given = [flag for flag, on in (("--pivot", pivot is not None), ("--pti-shared", shared), ("--refine-lr", lr is not None),
                                      ("--lpips-weight", lpips is not None), ("--id-weight", id_weight > 0), ("--reg-weight", reg is not None)) if on]
        if given:
            die(f"{', '.join(given)} only apply with --refine (w+, w or pti)")
        return None
    if refine is not RefineMode.pti and (pivot is not None or shared):
        die(f"{'--pivot' if pivot is not None else '--pti-shared'} applies to --refine pti only")
    if shared and n_items > MAX_SHARED:
        die(f"--pti-shared tunes one generator for a small batch (at most {MAX_SHARED} images); {n_items} given: split them or drop --pti-shared")
    if shared and world > 1:
        die("--pti-shared tunes one generator for all images and cannot be split over torchrun processes")
    for flag, value in (("--refine-lr", lr), ("--lpips-weight", lpips), ("--id-weight", id_weight), ("--reg-weight", reg)):
        if value is not None and value < 0:
            die(f"{flag} {value}: must be >= 0")
    return RefineOptions(refine.value, steps=steps, lr=lr, lpips=lpips, id=id_weight, reg=reg, pivot=pivot.value if pivot else None,
                         pivot_steps=pivot_steps, shared=shared)


def loss_nets_with_notes(opts, device, ckpt, arcface: str):
    """Load the loss networks; print one note per network left out (what to place where)."""
    from e4ecli.hub.networks import WeightsNotFound
    from e4ecli.pipelines.refine import describe_missing, load_loss_nets

    with console.status("loading the refinement's loss networks"):
        nets = load_loss_nets(opts, device, face=ckpt.domain.is_face, arcface=arcface)  # the domain decides what is a face
    for name, line in zip(nets.missing, describe_missing(nets)):
        hint = ("; or refine without it: --lpips-weight 0" if name == "lpips" else
                " Set another file with --arcface, or --id-weight 0 refines without it." if isinstance(nets.errors.get(name), WeightsNotFound)
                else "")
        console.print(f"[yellow]note:[/] {escape(line + hint)}")
    if nets.missing:
        console.print(f"[yellow]note:[/] refining with {', '.join(['l2'] + [k for k in ('lpips', 'id') if getattr(nets, 'identity' if k == 'id' else k)])} "
                      "and the regulariser only")
    return nets


def refiner_with_notes(opts, device, ckpt, arcface: str, base: dict):
    """The invert pipeline's refinement strategy: the loss networks (with their notes), the tuned generators'
    base checkpoint, a step reporter for long refinements."""
    from e4ecli.pipelines.refine import Refiner

    return Refiner(opts, loss_nets_with_notes(opts, device, ckpt, arcface), base, step_reporter(opts))


def step_reporter(opts):
    """on_step for refinement: a live bar of the steps under the batch's bar (the tool's one progress style), the
    loss in its label; one bar per phase (PTI: the pivot's latent steps, then the tuning) and batch of images."""
    if opts is None:
        return None
    phases = ([("pivot", opts.pivot_steps)] if opts.is_pti and opts.pivot and opts.pivot_steps > 0 else [])
    phases.append(("tuning" if opts.is_pti else "refining", opts.steps))
    state: dict = {"task": None, "phase": -1}

    def report(step: int, loss: float) -> None:
        from e4ecli.cli.common import live_progress

        progress = live_progress()
        if progress is None:
            return
        if step == 0:  # a phase starts (each batch of images runs them all again)
            if state["task"] is not None:
                progress.remove_task(state["task"])
                state["task"] = None
            state["phase"] = (state["phase"] + 1) % len(phases)
        if state["task"] is None:
            state["name"], state["total"] = phases[state["phase"]]
            state["task"] = progress.add_task(f"  {state['name']}", total=state["total"])
        progress.update(state["task"], completed=step + 1, description=f"  {state['name']} (loss {loss:.4f})")
        if step + 1 >= state["total"]:
            progress.remove_task(state["task"])
            state["task"] = None

    return report
