"""StyleFlow in the edit pipeline: each latent's source condition, and the composed round trip.

A latent `face.npy` takes its current attributes and lighting from `face.attributes.json` beside it
(`{"attributes": {"age": 34, "gender": 1, ...}, "lighting": [9 numbers]}`); what that file lacks
(or all of it, without the file) is estimated from the latent (`edits.styleflow.Estimator`, fitted
once on StyleFlow's released samples and cached as `$E4E_HOME/styleflow/estimator-<hash>.npz`).
`--attribute NAME=VALUE` overrides win over both. Each result records where every number came from.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from e4ecli.edits import ops
from e4ecli.edits.styleflow import (ATTRIBUTES, Estimator, StyleflowSpecError, Target, condition_from_json, describe, fit_estimator,
                                    target_conditions)
from e4ecli.files.batch import Item
from e4ecli.models.styleflow import N_LIGHTING, StyleFlow

SIDECAR_SUFFIX = ".attributes.json"
MAX_SIDECAR_BYTES = 1 << 16


def sidecar_path(source: Path) -> Path:
    """`dir/face.npy` -> `dir/face.attributes.json`."""
    return source.with_name(source.stem + SIDECAR_SUFFIX)


def read_sidecar(path: Path) -> tuple[np.ndarray, list[str]]:
    """-> (condition (17,) with NaN where the file says nothing, the names it lacks); StyleflowSpecError when unusable."""
    try:
        if path.stat().st_size > MAX_SIDECAR_BYTES:
            raise StyleflowSpecError(f"{path}: too large for an attributes file")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise StyleflowSpecError(f"{path}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise StyleflowSpecError(f"{path}: not valid JSON ({e})") from None
    return condition_from_json(data, str(path))


def needs_estimate(items: Sequence[Item], overrides: dict[str, float]) -> bool:
    """Whether some latent lacks a number that neither its attributes file nor an override gives."""
    for it in items:
        path = sidecar_path(it.source)
        if not path.is_file():
            missing = list(ATTRIBUTES) + ["lighting"]
        else:
            try:
                _, missing = read_sidecar(path)
            except StyleflowSpecError:
                continue  # that latent fails on its own, with the reason
        if [m for m in missing if m not in overrides]:
            return True
    return False


# -- the estimator, fitted once and cached ------------------------------------------------------
def _digest(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):  # noqa: B023 -- used within the iteration
                h.update(chunk)
    return h.hexdigest()[:16]


def load_estimator(attributes: Path, light: Path, latents: Path, cache_dir: Path) -> Estimator:
    """The estimator fitted on these three files, from `cache_dir` when it was fitted before."""
    from e4ecli.files.batch import atomic_output
    from e4ecli.hub.styleflow import read_samples

    cache = cache_dir / f"estimator-{_digest([attributes, light, latents])}.npz"
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                return Estimator(z["coef"], z["intercept"])
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is refitted and replaced
    w, conditions = read_samples(attributes, light, latents)
    est = fit_estimator(w, conditions)
    try:
        with atomic_output(cache) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, coef=est.coef, intercept=est.intercept)
    except OSError:
        pass  # the cache is an optimisation
    return est


def default_estimator(download: bool = True) -> tuple[Estimator, str]:
    """Fetch StyleFlow's samples through the zoo and fit (or read the cached) estimator -> (estimator, samples' id)."""
    from e4ecli.hub import styleflow as hub
    from e4ecli.hub.directions import cache_root

    paths = [hub.fetch(name, download=download) for name in hub.SAMPLE_FILES]
    return load_estimator(*paths, cache_dir=cache_root() / "styleflow"), _digest(paths)


def recorded_source_ids(out_dir: Path) -> dict[str, str]:
    """output (relative to out_dir, POSIX) -> the styleflow source_id its manifest line records."""
    ids: dict[str, str] = {}
    try:
        text = (Path(out_dir) / "manifest.jsonl").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ids
    for line in text.splitlines():
        try:
            rec = json.loads(line)
            sid = rec["styleflow"]["source_id"]
            out = str(rec["output"])
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(sid, str) and rec.get("status") == "ok":
            ids[out] = sid
    return ids


def sources_unchanged(setup: StyleflowSetup, out_dir: Path) -> Callable[[Item, Sequence[Path]], bool]:
    """A predicate for reruns: the output's recorded source condition is made of what this run would use."""
    import os

    recorded = recorded_source_ids(out_dir)

    def same(item: Item, outputs: Sequence[Path]) -> bool:
        if not outputs:
            return False
        key = Path(os.path.relpath(outputs[0], out_dir)).as_posix()
        return recorded.get(key) == setup.source_id(item)

    return same


def load_presets(names: Sequence[str], download: bool = True) -> dict[str, torch.Tensor]:
    """The lighting presets among `names`: rows of StyleFlow's data/light.npy."""
    from e4ecli.edits.styleflow import LIGHTING_PRESETS
    from e4ecli.hub import styleflow as hub

    wanted = [n for n in names if n in LIGHTING_PRESETS]
    if not wanted:
        return {}
    path = hub.fetch(hub.LIGHT_FILE, download=download)
    light = hub.read_lighting(path)
    out = {}
    for n in wanted:
        row = LIGHTING_PRESETS[n]
        if row >= len(light):
            raise StyleflowSpecError(f"{path}: has {len(light)} rows; the preset {n} is row {row}")
        out[n] = torch.from_numpy(light[row]).float()
    return out


# -- per latent, per batch ----------------------------------------------------------------------
@dataclass
class StyleflowSetup:
    """What the edit pipeline needs for StyleFlow steps: the flow, the presets, where conditions come from."""

    flow: StyleFlow
    presets: dict[str, torch.Tensor] = field(default_factory=dict)
    overrides: dict[str, float] = field(default_factory=dict)
    estimator: Callable[[], Estimator] | None = None  # called once, when a latent needs an estimate
    flow_id: str | None = None  # content id of the flow weights
    estimator_id: str | None = None  # content id of the samples the estimator was fitted on
    _fitted: Estimator | None = None

    def source_id(self, item: Item) -> str:
        """What a latent's source condition is made of, as a short hash: the flow weights, the overrides, the
        attributes file's bytes and (when it needs one) the estimator. A rerun redoes an output whose id changed."""
        path = sidecar_path(item.source)
        try:
            raw = path.read_bytes() if path.is_file() else None
        except OSError:
            raw = None
        needs = raw is None
        if raw is not None:
            try:
                _, missing = read_sidecar(path)
                needs = any(m not in self.overrides for m in missing)
            except StyleflowSpecError:
                needs = False  # that latent fails on its own
        h = hashlib.sha256(json.dumps([self.flow_id, sorted(self.overrides.items()), self.estimator_id if needs else None]).encode())
        h.update(b"\0" + (raw if raw is not None else b"<none>"))
        return h.hexdigest()[:16]

    def source_for(self, item: Item, latent: np.ndarray) -> tuple[np.ndarray, dict]:
        """-> (condition (17,), manifest record {attributes, lighting, estimated: [...], overridden: [...]})."""
        path = sidecar_path(item.source)
        if path.is_file():
            cond, missing = read_sidecar(path)
        else:
            cond, missing = np.full(N_LIGHTING + len(ATTRIBUTES), np.nan), list(ATTRIBUTES) + ["lighting"]
        for name, value in self.overrides.items():
            cond[N_LIGHTING + ATTRIBUTES.index(name)] = value
        estimated = [m for m in missing if m not in self.overrides]
        if estimated:
            if self._fitted is None:
                if self.estimator is None:
                    raise StyleflowSpecError(f"{item.source}: no {path.name} beside it (and no attribute estimator)")
                self._fitted = self.estimator()
            guess = self._fitted.predict(latent[None])[0]
            for name in estimated:
                if name == "lighting":
                    cond[:N_LIGHTING] = guess[:N_LIGHTING]
                else:
                    i = N_LIGHTING + ATTRIBUTES.index(name)
                    cond[i] = guess[i]
        info = {**describe(cond), "estimated": estimated, "overridden": sorted(self.overrides),
                "from": str(path) if path.is_file() else None, "source_id": self.source_id(item)}
        return cond, info


def round_trip(w: torch.Tensor, targets: Sequence[Target], values: Sequence[float | torch.Tensor], sources: torch.Tensor,
               setup: StyleflowSetup) -> torch.Tensor:
    """w (M, 18, 512) with source conditions (M, 17) -> one StyleFlow round trip with every target set."""
    flow = setup.flow.to(w.device)
    sources = sources.to(w)
    goal = target_conditions(sources, targets, values, setup.presets)
    with torch.no_grad():
        return ops.styleflow_edit(w.float(), sources.float(), goal.float(), flow=flow).to(w.dtype)


def bind(edit, source: np.ndarray, setup: StyleflowSetup):
    """A styleflow Edit bound to one latent's source condition, so that `edit.apply(latents, strength)` works
    (used for `e4e video` sweeps of a single latent)."""
    from dataclasses import replace

    target = edit.styleflow_target
    src = torch.from_numpy(np.asarray(source, dtype=np.float32))[None]

    def apply(latents: torch.Tensor, strength) -> torch.Tensor:
        return round_trip(latents, [target], [strength], src.expand(latents.shape[0], -1), setup)

    return replace(edit, context=apply)


def batch_sources(good: list, setup: StyleflowSetup) -> tuple[list, dict, torch.Tensor, list]:
    """Decoded (item, latent) pairs -> (the pairs that have a condition, item -> manifest record,
    conditions (n, 17), 'failed' Results for the others)."""
    from e4ecli.pipelines.common import Result

    kept, infos, conds, failed = [], {}, [], []
    for it, w in good:
        try:
            cond, info = setup.source_for(it, np.asarray(w))
        except StyleflowSpecError as e:
            failed.append(Result(it, "failed", error=str(e)))
            continue
        kept.append((it, w))
        infos[it] = info
        conds.append(cond)
    sources = torch.from_numpy(np.stack(conds).astype(np.float32)) if conds else torch.zeros(0, N_LIGHTING + len(ATTRIBUTES))
    return kept, infos, sources, failed


def apply_steps(w: torch.Tensor, edits: Sequence, strengths: Sequence, context: tuple[StyleflowSetup, torch.Tensor] | None,
                frames: int) -> torch.Tensor:
    """Every StyleFlow edit of a pipeline as one round trip; w (N * frames, 18, 512), sources (N, 17) in `context`."""
    if context is None:
        raise ValueError("StyleFlow edits need each latent's attributes and lighting (a StyleflowSetup)")
    setup, sources = context
    targets = [e.styleflow_target for e in edits]
    return round_trip(w, targets, strengths, sources.repeat_interleave(frames, dim=0), setup)
