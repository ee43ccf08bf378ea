"""Modules that take a checkpoint's tensors as their own, without initialising them first.

`on_meta` builds a module on the meta device (no memory, no random initialisation that the file
would overwrite) and `load_strict` assigns the state dict's tensors to it: with a memory-mapped
`torch.load(mmap=True)` the weights are never copied. Used by every checkpoint loader.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from e4ecli.hub.types import CheckpointError

_RANDOM_FACTORIES = {torch.randn, torch.rand}


class _ShapesOnly(TorchFunctionMode):
    """On the meta device a tensor is a shape only, so random factories become `torch.empty` and
    in-place initialisation (`div_`, `fill_`, `normal_`, ...) does nothing: torch would run them
    through Python meta references that import sympy and torch._dynamo (about 1 s of every load)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if func in _RANDOM_FACTORIES:
            kwargs.pop("generator", None)
            func = torch.empty
        elif args and isinstance(args[0], torch.Tensor) and args[0].is_meta and name.endswith("_") and not name.startswith("_"):
            return args[0]  # an in-place method (div_, fill_, normal_, ...) on a shape: nothing to do
        return func(*args, **kwargs)


def on_meta(factory, sd: dict, where: str) -> nn.Module:
    """`factory()` built on the meta device (no initialisation), its tensors then taken from `sd` (load_strict)."""
    with torch.device("meta"), _ShapesOnly():
        module = factory()
    load_strict(module, sd, where)
    return module


def load_strict(module: nn.Module, sd: dict, where: str) -> None:
    """Exactly the module's keys and shapes, or a CheckpointError naming what differs. The tensors of
    `sd` become the module's own (assigned, cast to the module's dtype where it differs); a module
    built on the meta device has none left there afterwards."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    bad = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if bad:
            parts.append(f"shape mismatch ({'; '.join(bad[:3])})")
        raise CheckpointError(f"{where}: weights do not fit the {type(module).__name__} architecture: " + ", ".join(parts))
    own_dtype = {k: v.dtype for k, v in own.items()}
    module.load_state_dict({k: v if v.dtype == own_dtype[k] else v.to(own_dtype[k]) for k, v in sd.items()}, strict=True, assign=True)
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta and n not in sd]
    if left:  # a tensor that is not in the state dict (a non-persistent buffer): a bug of the model, not of the file
        raise RuntimeError(f"{type(module).__name__}: {', '.join(left[:3])} not in the state dict; cannot build it on the meta device")
