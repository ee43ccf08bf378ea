"""Training checkpoints: the published e4e layout plus what `--resume` needs, written atomically.

    {'state_dict': {'encoder.*', 'decoder.*'}, 'opts': {...}, 'latent_avg': (n_styles, 512)   # as published
     'global_step', 'best_val_loss', 'optimizer' (the original's one-group layout),           # the original's
     'discriminator_state_dict', 'discriminator_optimizer_state_dict',                       #  training data
     'e4ecli_training': {'version', 'world_size', 'progressive_stage', 'param_groups',
                         'ranks': [{'rng': ..., 'pools': ...} per rank], 'scaler'}}

Only tensors, dicts, lists and plain values: the files load with `torch.load(weights_only=True)`
(e4ecli.hub.checkpoints.load_checkpoint, `e4e invert --checkpoint`) and in the original code.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from e4ecli.files.batch import save_torch
from e4ecli.hub.checkpoints import GENERATOR_CONFIG_KEY, CheckpointError, safe_load
from e4ecli.hub.networks import generator_file_config

TRAINING_KEY = "e4ecli_training"
TRAINING_ENTRIES = ("global_step", "optimizer", "best_val_loss", "discriminator_state_dict", "discriminator_optimizer_state_dict",
                    TRAINING_KEY)
FORMAT_VERSION = 2  # 2: 'optimizer' in the original's single-group layout (1: one group per style)
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


# -- optimiser state: the original's layout <-> this trainer's ---------------------------------------------
# The original keeps ONE parameter group over encoder.parameters() (+ decoder.parameters() with
# --train-decoder) and, for Ranger, a step count per parameter. This trainer adds one group per style
# as it unlocks (pytorch-optimizer's Ranger counts steps per group), so per-style step counts match.
# Checkpoints store the original's layout under 'optimizer'; loading maps it onto the active groups.
RANGER_ORIGINAL_KEYS = ("lr", "alpha", "k", "step_counter", "betas", "eps", "weight_decay")
RANGER_N_SMA_THRESHOLD = 5


class OptimizerLayoutError(ValueError):
    """Optimiser state that cannot be mapped onto this run; the message names the cause."""


def is_ranger(optimizer: torch.optim.Optimizer) -> bool:
    return type(optimizer).__name__ == "Ranger"


def optimizer_to_original(optimizer: torch.optim.Optimizer, flat: list[torch.nn.Parameter]) -> dict:
    """This trainer's optimiser -> the original's state dict: one group over `flat` (the original's
    parameter order), per-parameter state keyed by position, Ranger's step count in every state."""
    position = {id(p): i for i, p in enumerate(flat)}
    sd = optimizer.state_dict()
    ranger = is_ranger(optimizer)
    state: dict[int, dict] = {}
    for live, saved in zip(optimizer.param_groups, sd["param_groups"]):
        for p, idx in zip(live["params"], saved["params"]):
            if idx in sd["state"]:
                st = dict(sd["state"][idx])
                if ranger:
                    st["step"] = int(saved.get("step", 0))
                state[position[id(p)]] = st
    first = sd["param_groups"][0]
    if ranger:
        group = {k: first[k] for k in RANGER_ORIGINAL_KEYS}
        group["step_counter"] = 0
        group["N_sma_threshhold"] = RANGER_N_SMA_THRESHOLD  # the original's spelling
    else:
        group = {k: v for k, v in first.items() if k not in ("name", "params")}
    group["params"] = list(range(len(flat)))
    return {"state": dict(sorted(state.items())), "param_groups": [group]}


def optimizer_from_original(optimizer: torch.optim.Optimizer, saved: dict, flat: list[torch.nn.Parameter],
                            pending: list[torch.nn.Parameter]) -> None:
    """Load the original's layout (one group over `flat`) into this trainer's active groups.

    pending: parameters of groups that join later (styles not yet unlocked); state for them means
    the progressive schedule differs from the run that wrote the file. Raises OptimizerLayoutError.
    """
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if not groups or not isinstance(saved.get("state"), dict):
        raise OptimizerLayoutError("the 'optimizer' entry is not an optimiser state dict")
    n_saved = sum(len(g["params"]) for g in groups)
    if len(groups) != 1 or n_saved != len(flat):
        raise OptimizerLayoutError(
            f"it holds {n_saved} parameters in {len(groups)} group(s), this run trains {len(flat)} in the original's single "
            "group: the encoder type, generator size or --train-decoder differ from the run that wrote it")
    ranger = is_ranger(optimizer)
    if ranger and "alpha" not in groups[0]:
        raise OptimizerLayoutError("it is Adam state and this run uses Ranger: pass --optim-name adam")
    if not ranger and "alpha" in groups[0]:
        raise OptimizerLayoutError("it is Ranger state and this run uses Adam: pass --optim-name ranger")
    original_index = {id(p): i for i, p in enumerate(flat)}
    src_state = saved["state"]
    late = [original_index[id(p)] for p in pending if original_index.get(id(p)) in src_state]
    if late:
        raise OptimizerLayoutError(f"it has state for {len(late)} parameter(s) of styles this run has not unlocked yet at "
                                   "its step: the progressive schedule differs from the run that wrote it")
    current = optimizer.state_dict()
    state: dict[int, dict] = {}
    new_groups = []
    for live, template in zip(optimizer.param_groups, current["param_groups"]):
        group = dict(template)
        for k, v in groups[0].items():
            if k in group and k not in ("params", "name", "step"):
                group[k] = v
        steps = []
        for p, idx in zip(live["params"], template["params"]):
            st = src_state.get(original_index[id(p)])
            if st is None:
                continue
            st = dict(st)
            if ranger:
                steps.append(int(st.pop("step", 0)))
            state[idx] = st
        if steps:
            group["step"] = max(steps)
        new_groups.append(group)
    optimizer.load_state_dict({"state": state, "param_groups": new_groups})


# -- what a checkpoint holds, and restoring a run from one -------------------------------------------------
# `c` is the run's build.Components, `dist` its runtime.Dist (not imported here: build imports this module).
def rank_state(c: Any) -> dict:
    """This process's random streams and W pools (gathered from every rank into the checkpoint)."""
    state: dict[str, Any] = {"rng": rng_state(c.device, c.py_rng)}
    if c.pools is not None:
        state["pools"] = {"real": c.pools[0].state_dict(), "fake": c.pools[1].state_dict()}
    return state


def payload(c: Any, step: int, best_val_loss: float | None, stage: int | None, n_active_groups: int,
            ranks: list[dict] | None) -> dict:
    """The published e4e layout; with `ranks` (training state wanted) also everything --resume needs."""
    sd = {f"encoder.{k}": v for k, v in c.encoder.state_dict().items()}
    sd.update({f"decoder.{k}": v for k, v in c.decoder.state_dict().items()})
    out: dict[str, Any] = {"state_dict": sd, "opts": c.config.to_opts()}  # the original's dict layout
    config = generator_file_config(c.decoder)
    if config is not None:  # a generator rosinality's code cannot express: how to rebuild it
        out[GENERATOR_CONFIG_KEY] = config
    if c.config.start_from_latent_avg:
        out["latent_avg"] = c.latent_avg.detach().cpu()
    if ranks is None:
        return out
    out["global_step"] = step
    out["optimizer"] = optimizer_to_original(c.optimizer, c.flat_params())  # the original's layout
    out["best_val_loss"] = best_val_loss
    if c.discriminator is not None:
        out["discriminator_state_dict"] = c.discriminator.state_dict()
        out["discriminator_optimizer_state_dict"] = c.d_optimizer.state_dict()
    out[TRAINING_KEY] = {
        "version": FORMAT_VERSION,
        "world_size": len(ranks),
        "progressive_stage": stage,
        "param_groups": [name for name, _ in c.groups[:n_active_groups]],
        "ranks": ranks,
        "scaler": c.scaler.state_dict() if c.scaler.is_enabled() else None,
    }
    return out


@dataclass
class Restored:
    start_step: int
    best_val_loss: float | None
    rng_restored: bool  # this rank's random streams came from the checkpoint
    notes: list[str] = field(default_factory=list)


def restore(c: Any, ckpt: dict, where: Path, full: bool, keep_optimizer: bool, dist: Any) -> Restored:
    """Continue from a checkpoint with training state (the weights were loaded when the components were built).

    full (--resume): optimiser, discriminator, scaler, RNG streams and pools; otherwise the discriminator,
    and the optimiser with keep_optimizer. Raises OptimizerLayoutError naming what does not fit.
    """
    out = Restored(int(ckpt["global_step"]) + 1, ckpt.get("best_val_loss"), False)
    if full or keep_optimizer:
        saved = ckpt["optimizer"]
        groups = saved.get("param_groups") if isinstance(saved, dict) else None
        if groups and all("name" in g for g in groups):  # one group per style: written by e4ecli's format 1
            try:
                c.optimizer.load_state_dict(saved)
            except (ValueError, KeyError) as e:
                raise OptimizerLayoutError(f"{e}; were --optim-name, --train-decoder or the progressive schedule changed?") from None
        else:
            pending = [p for _, ps in c.groups[c.first_groups:] for p in ps]
            optimizer_from_original(c.optimizer, saved, c.flat_params(), pending)
    if c.discriminator is not None and "discriminator_state_dict" in ckpt:
        c.discriminator.load_state_dict(ckpt["discriminator_state_dict"])
        c.d_optimizer.load_state_dict(ckpt["discriminator_optimizer_state_dict"])
    elif c.discriminator is not None:
        out.notes.append("the checkpoint has no discriminator state: the discriminator starts afresh")
    state = ckpt.get(TRAINING_KEY)
    if not full or not isinstance(state, dict):
        return out
    if state.get("scaler") and c.scaler.is_enabled():
        c.scaler.load_state_dict(state["scaler"])
    ranks = state.get("ranks") or []
    if len(ranks) != dist.world:
        out.notes.append(f"the checkpoint was written by {len(ranks)} process(es), this run has {dist.world}: random "
                         "streams and W pools start afresh (training goes on, not bit-identically)")
        return out
    mine = ranks[dist.rank]
    set_rng_state(mine["rng"], c.device, c.py_rng)
    out.rng_restored = True
    if c.pools is not None and mine.get("pools"):
        c.pools[0].load_state_dict(mine["pools"]["real"], c.device)
        c.pools[1].load_state_dict(mine["pools"]["fake"], c.device)
    return out


# -- disk use: training state only in the newest checkpoint, --keep-last ---------------------------------
def drop_training_state(path: Path) -> None:
    """Rewrite an older iteration checkpoint without its training state (optimiser, discriminator, pools:
    most of the file); --resume needs only the newest. A damaged or missing file is left alone."""
    try:
        ckpt = safe_load(path)
    except (CheckpointError, OSError):
        return
    if isinstance(ckpt, dict) and any(k in ckpt for k in TRAINING_ENTRIES):
        save(path, {k: v for k, v in ckpt.items() if k not in TRAINING_ENTRIES})


def prune(ckpt_dir: Path, keep_last: int | None) -> list[Path]:
    """Delete all but the `keep_last` newest iteration checkpoints; returns what was deleted."""
    if not keep_last:
        return []
    gone = [path for _, path in iteration_checkpoints(ckpt_dir)[keep_last:]]
    for path in gone:
        path.unlink(missing_ok=True)
    return gone
