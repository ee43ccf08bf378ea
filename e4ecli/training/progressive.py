"""Progressive training of e4e: which styles the encoder predicts (and which are trained,
regularised and discriminated) at each step.

Stage s: the encoder outputs w plus deltas 1..s (`Encoder4Editing.set_progressive_stage(s)`);
stage 0 trains a single W code. The schedule is one start step per style, the first 0, exactly
as the original `setup_progressive_steps` builds it: [0, start, start + every, ...].
"""
from __future__ import annotations

from bisect import bisect_right
from typing import Sequence

from torch import nn


class ScheduleError(ValueError):
    pass


def build_schedule(progressive_steps: Sequence[int] | None, progressive_start: int | None, every: int, n_styles: int) -> list[int] | None:
    """The step at which each stage starts ((n_styles,) list, first 0), or None (no progressive training)."""
    if progressive_start is not None:
        return [0] + [progressive_start + i * every for i in range(n_styles - 1)]
    if progressive_steps is None:
        return None
    steps = [int(s) for s in progressive_steps]
    if len(steps) != n_styles or steps[0] != 0:
        raise ScheduleError(f"`progressive_steps` needs one step per style ({n_styles} for this generator), the first 0; got {len(steps)}: {steps}")
    if any(b < a for a, b in zip(steps, steps[1:])):
        raise ScheduleError(f"`progressive_steps` must not decrease: {steps}")
    return steps


def stage_at(schedule: Sequence[int], step: int) -> int:
    """The stage in force at `step`: the last i with schedule[i] <= step."""
    return max(0, bisect_right(list(schedule), step) - 1)


def dims_to_discriminate(stage: int) -> list[int]:
    """Styles whose codes the discriminator judges at this stage: w and the deltas unlocked so far."""
    return list(range(stage + 1))


def encoder_param_groups(encoder: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    """The encoder's parameters in the order they start training: ('base', backbone + style 0),
    then ('style_i', styles[i] plus the lateral conv first needed by style i).

    Each group joins the optimiser when its style unlocks, so its optimiser step count starts at
    its first gradient -- as the original's per-parameter Ranger/Adam state does.
    """
    style_count = encoder.style_count
    coarse, middle = encoder.coarse_ind, encoder.middle_ind
    groups: list[tuple[str, list[nn.Parameter]]] = [("base", [])]
    for i in range(1, style_count):
        groups.append((f"style_{i}", []))
    for name, p in encoder.named_parameters():
        parts = name.split(".")
        if parts[0] == "styles":
            idx = int(parts[1])
        elif parts[0] == "latlayer1":
            idx = coarse
        elif parts[0] == "latlayer2":
            idx = middle
        else:
            idx = 0
        groups[min(idx, style_count - 1)][1].append(p)  # a lateral conv a small generator never uses
    return groups
