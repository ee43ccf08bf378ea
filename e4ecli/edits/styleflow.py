"""StyleFlow edits: names, target conditions, and the attribute estimator (pure, no I/O).

A StyleFlow condition is cat(lighting (9 spherical-harmonic coefficients), attributes (8)) in
StyleFlow's order and units: gender and glasses 0-1, yaw and pitch in degrees, baldness, beard and
expression 0-1, age in years. `-d styleflow:NAME -s VALUE` sets attribute NAME to VALUE; a lighting
preset `-d styleflow:light_... -s A` moves the lighting A of the way to the preset, as StyleFlow's
UI does (`light + A * (preset - light)`; several presets add their moves). All StyleFlow steps of
one edit share a single round trip: one forward pass under the source condition, one reverse pass
under the condition with every target set (`ops.styleflow_edit`).

The estimator predicts a latent's condition from its W+ code (the mean over its styles) by ridge
regression fitted on StyleFlow's released samples (1000 faces with W latents, attributes and
lighting).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from e4ecli.edits.syntax import (ATTRIBUTES, LIGHTING_PRESETS, NAMES, UNITS, StyleflowSpecError, Target,  # noqa: F401 -- re-exported
                                 parse_name, parse_overrides)
from e4ecli.models.styleflow import CONDITION_DIM, N_LIGHTING


def condition_from_json(data: object, where: str) -> tuple[np.ndarray, list[str]]:
    """`{"attributes": {"age": 34, ...}, "lighting": [9 numbers]}` -> (condition (17,), names it lacks).

    Missing attributes or lighting are reported (the caller estimates them); unknown names, wrong
    lengths and non-numbers are errors naming `where`.
    """
    if not isinstance(data, dict):
        raise StyleflowSpecError(f"{where}: expected an object with 'attributes' and/or 'lighting'")
    extra = sorted(set(data) - {"attributes", "lighting"})
    if extra:
        raise StyleflowSpecError(f"{where}: unknown field(s) {', '.join(extra)} (expected 'attributes' and 'lighting')")
    cond = np.full(CONDITION_DIM, np.nan)
    attrs = data.get("attributes", {})
    if not isinstance(attrs, dict):
        raise StyleflowSpecError(f"{where}: 'attributes' must be an object like {{\"age\": 34, \"gender\": 1}}")
    for name, value in attrs.items():
        if str(name).lower() not in ATTRIBUTES:
            raise StyleflowSpecError(f"{where}: unknown attribute '{name}' (known: {', '.join(ATTRIBUTES)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise StyleflowSpecError(f"{where}: attribute '{name}' must be a finite number, got {value!r}")
        cond[N_LIGHTING + ATTRIBUTES.index(str(name).lower())] = float(value)
    if "lighting" in data:
        light = data["lighting"]
        if (not isinstance(light, list) or len(light) != N_LIGHTING
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in light)):
            raise StyleflowSpecError(f"{where}: 'lighting' must be a list of {N_LIGHTING} finite numbers")
        cond[:N_LIGHTING] = light
    missing = [n for i, n in enumerate(ATTRIBUTES) if np.isnan(cond[N_LIGHTING + i])]
    if np.isnan(cond[:N_LIGHTING]).any():
        missing.append("lighting")
    return cond, missing


def describe(condition: np.ndarray) -> dict:
    """condition (17,) -> {"attributes": {name: value}, "lighting": [9]} (the attributes-file layout)."""
    c = [round(float(x), 6) for x in condition]
    return {"attributes": dict(zip(ATTRIBUTES, c[N_LIGHTING:])), "lighting": c[:N_LIGHTING]}


def target_conditions(source: torch.Tensor, targets: Sequence[Target], values: Sequence[float | torch.Tensor],
                      presets: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """source (M, 17), one value (float or (M,)) per target -> target conditions (M, 17)."""
    out = source.clone()
    light = source[:, :N_LIGHTING]
    moved = light.clone()
    for target, value in zip(targets, values):
        v = torch.as_tensor(value, dtype=source.dtype, device=source.device).reshape(-1, 1)
        if target.attribute is not None:
            out[:, N_LIGHTING + target.attribute] = v[:, 0]
        else:
            if presets is None or target.name not in presets:
                raise StyleflowSpecError(f"styleflow:{target.name}: the lighting preset was not loaded")
            moved = moved + v * (presets[target.name].to(source).reshape(1, -1) - light)
    out[:, :N_LIGHTING] = moved
    return out


# -- the estimator ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimator:
    """A linear map from a W code (512,) to a condition (17,): `w @ coef.T + intercept`."""

    coef: np.ndarray  # (17, 512)
    intercept: np.ndarray  # (17,)

    def predict(self, latents: np.ndarray) -> np.ndarray:
        """latents (N, S, 512) or W codes (N, 512) -> conditions (N, 17)."""
        w = np.asarray(latents, dtype=np.float64)
        if w.ndim == 3:
            w = w.mean(axis=1)
        return w @ self.coef.T + self.intercept


def fit_estimator(w: np.ndarray, conditions: np.ndarray, alphas: Sequence[float] = (0.1, 1.0, 10.0, 100.0, 1000.0)) -> Estimator:
    """Ridge regression W (N, 512) -> conditions (N, 17), its strength chosen by leave-one-out CV."""
    from sklearn.linear_model import RidgeCV

    model = RidgeCV(alphas=tuple(alphas)).fit(np.asarray(w, dtype=np.float64), np.asarray(conditions, dtype=np.float64))
    return Estimator(np.asarray(model.coef_, dtype=np.float64).reshape(CONDITION_DIM, -1), np.asarray(model.intercept_, dtype=np.float64))
