"""Generators tuned by PTI, stored compactly: fp16 differences from the base generator's weights in a
safetensors file (no pickle), with the base checkpoint's path, zoo name and content id in its metadata.

Loading finds the base (the recorded path, the zoo name, or a file of the recorded name beside the
tuned file), checks that its content id matches, and returns the base checkpoint with the tuned
generator weights: e4e/pSp bases keep their encoder, so `e4e eval` can still invert with it.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from e4ecli.hub.types import CheckpointError, LoadedCheckpoint

FORMAT = "e4ecli-pti-delta/1"
SUFFIX = ".safetensors"


def is_tuned_file(path: str | Path) -> bool:
    """A safetensors file, by its header (8-byte little-endian length, then a JSON object), whatever its name."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < (1 << 27)


def save_tuned(path: Path, tuned: torch.nn.Module, base: torch.nn.Module, keys, base_path: Path, base_id: str,
               base_name: str | None = None, extra: dict | None = None) -> None:
    """Write tuned - base for `keys` (parameter names) as fp16, atomically."""
    from safetensors.torch import save_file

    from e4ecli.files.batch import atomic_output

    t_sd, b_sd = tuned.state_dict(), base.state_dict()
    deltas = {k: (t_sd[k].detach().float().cpu() - b_sd[k].detach().float().cpu()).half().contiguous() for k in keys}
    meta = {"format": FORMAT, "base_path": str(Path(base_path).resolve()), "base_id": base_id, "base_name": base_name or "",
            "extra": json.dumps(extra or {})}
    with atomic_output(path) as tmp:
        save_file(deltas, str(tmp), metadata=meta)


def read_tuned(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: a safetensors file, but not a tuned generator (the PTI refinement of e4e invert writes them) "
                              f"(metadata format {meta.get('format')!r}, expected {FORMAT!r})")
    return meta, tensors


def _find_base(path: Path, meta: dict[str, str]) -> Path:
    recorded = Path(meta.get("base_path", ""))
    candidates = [recorded, path.parent / recorded.name]
    for c in candidates:
        if recorded.name and c.is_file():
            return c
    name = meta.get("base_name")
    if name:
        from e4ecli.hub import zoo

        try:
            return Path(zoo.resolve(name))
        except zoo.ZooError as e:
            raise CheckpointError(f"{path}: its base checkpoint {name} is not available: {e}") from None
    raise CheckpointError(f"{path}: tuned from {recorded} (id {meta.get('base_id')}), which is not there any more; "
                          f"put that checkpoint back at {recorded} or beside {path.name}")


def load_tuned(path: str | Path, load_base: Callable[[Path], LoadedCheckpoint], base_id: Callable[[Path], str]) -> LoadedCheckpoint:
    """The base checkpoint (read by `load_base`) with its generator replaced by base + deltas; CheckpointError
    when the base is missing or its content id (`base_id`) is not the one the generator was tuned from.
    The loaders come from the caller (hub.checkpoints), so this module does not import it back."""
    path = Path(path)
    meta, deltas = read_tuned(path)
    base_path = _find_base(path, meta)
    found = base_id(base_path)
    if found != meta.get("base_id"):
        raise CheckpointError(f"{path}: tuned from a checkpoint with id {meta.get('base_id')}, but {base_path} has id {found} "
                              "(a different file); use the checkpoint it was tuned from")
    ckpt = load_base(base_path)
    params = dict(ckpt.generator.named_parameters())
    bad = [k for k, v in deltas.items() if k not in params or tuple(params[k].shape) != tuple(v.shape)]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} tuned tensors do not fit the base generator {base_path} (e.g. {bad[0]})")
    with torch.no_grad():
        for k, v in deltas.items():  # new tensors: the base's may be memory-mapped from its file
            params[k].data = (params[k].data.float() + v.float()).to(params[k].dtype)
    ckpt.path = path
    return ckpt
