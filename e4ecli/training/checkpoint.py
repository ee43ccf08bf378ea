"""Training checkpoints: the published e4e layout plus what `--resume` needs, written atomically.

    {'state_dict': {'encoder.*', 'decoder.*'}, 'opts': {...}, 'latent_avg': (n_styles, 512)   # as published
     'global_step', 'best_val_loss', 'optimizer',                                            # the original's
     'discriminator_state_dict', 'discriminator_optimizer_state_dict',                       #  training data
     'e4ecli_training': {'version', 'world_size', 'progressive_stage', 'param_groups',
                         'ranks': [{'rng': ..., 'pools': ...} per rank], 'scaler'}}

Only tensors, dicts, lists and plain values: the files load with `torch.load(weights_only=True)`
(e4ecli.hub.checkpoints.load_checkpoint, `e4e invert --checkpoint`) and in the original code.
"""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import torch

from e4ecli.files.batch import save_torch
from e4ecli.hub.checkpoints import CheckpointError, safe_load

TRAINING_KEY = "e4ecli_training"
FORMAT_VERSION = 1
ITERATION_RE = re.compile(r"iteration_(\d+)\.pt")


def save(path: Path, payload: dict) -> None:
    """torch.save to a hidden temp file, fsync, rename: a reader never sees a partial checkpoint. A write
    that fails (a full disk) leaves the previous file and raises CheckpointError saying so."""
    import os

    try:
        save_torch(path, payload)
    except OSError as e:
        why = os.strerror(e.errno).lower() if e.errno else str(e)
        raise CheckpointError(f"{why} writing {path} (the previous checkpoints are unchanged)") from None


def iteration_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """checkpoints/iteration_N.pt files, newest (largest N) first."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := ITERATION_RE.fullmatch(p.name)) and p.is_file()]
    return sorted(found, reverse=True)


def has_training_state(ckpt: Any) -> bool:
    return isinstance(ckpt, dict) and "global_step" in ckpt and "optimizer" in ckpt and "state_dict" in ckpt


def newest_resumable(ckpt_dir: Path) -> tuple[Path | None, dict | None, list[str]]:
    """The newest iteration checkpoint that loads and carries training state.

    Returns (path, checkpoint, notes about newer files that were passed over).
    """
    notes = []
    for _, path in iteration_checkpoints(ckpt_dir):
        try:
            ckpt = safe_load(path)
        except CheckpointError as e:
            notes.append(f"skipped {path.name}: {e}")
            continue
        if not has_training_state(ckpt):
            notes.append(f"skipped {path.name}: no training state in it")
            continue
        return path, ckpt, notes
    return None, None, notes


# -- random number generators -------------------------------------------------------------------------
def rng_state(device: torch.device, py: random.Random) -> dict:
    version, internal, gauss = py.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
    }


def set_rng_state(state: dict, device: torch.device, py: random.Random) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    p = state["python"]
    py.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
