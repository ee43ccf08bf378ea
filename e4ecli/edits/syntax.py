"""What editing options may say, checked without torch (so that a typo is answered before torch loads):
easing names, SeFa layer selections (`ops` re-exports both), StyleFlow names and attribute overrides
(`edits.styleflow` re-exports them)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

EASINGS = ("linear", "smooth", "cosine")


def parse_layers(spec: str | Sequence[int] | None, n_layers: int | None) -> list[int]:
    """'all' / None -> every layer; '2,3,4,5' or '2-5' (or a list) -> sorted unique indices.
    n_layers=None checks the syntax only ('all' is then [])."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all")):
        return list(range(n_layers or 0))
    if isinstance(spec, str):
        out: set[int] = set()
        for part in spec.replace(" ", "").split(","):
            if not part:
                continue
            try:
                if "-" in part[1:]:
                    a, b = part.split("-", 1) if not part.startswith("-") else (part, "")
                    out.update(range(int(a), int(b) + 1))
                else:
                    out.add(int(part))
            except ValueError:
                raise ValueError(f"layers must be 'all' or indices like 2,3,4,5 or 2-5; got {spec!r}") from None
        layers = sorted(out)
    else:
        layers = sorted({int(x) for x in spec})
    if not layers:
        raise ValueError("no layers selected")
    if n_layers is None:
        return layers
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad:
        raise ValueError(f"layer(s) {bad} out of range: this generator has styled convolutions 0..{n_layers - 1}")
    return layers


# -- StyleFlow ----------------------------------------------------------------------------------
ATTRIBUTES = ("gender", "glasses", "yaw", "pitch", "baldness", "beard", "age", "expression")
UNITS = {"gender": "0-1", "glasses": "0-1", "yaw": "degrees", "pitch": "degrees", "baldness": "0-1", "beard": "0-1",
         "age": "years", "expression": "0-1"}
# StyleFlow's UI lighting sliders (main.py `lighting_order`): the preset is row K of data/light.npy
LIGHTING_PRESETS = {"light_left_right": 8, "light_right_left": 33, "light_down_up": 641, "light_up_down": 547,
                    "light_none": 28, "light_front": 34}
NAMES = ATTRIBUTES + tuple(LIGHTING_PRESETS)


class StyleflowSpecError(ValueError):
    """A StyleFlow name, attribute override or attributes file that cannot be used."""


@dataclass(frozen=True)
class Target:
    """One `styleflow:NAME`: an attribute index (0..7) or a lighting preset row of light.npy."""

    name: str

    @property
    def attribute(self) -> int | None:
        return ATTRIBUTES.index(self.name) if self.name in ATTRIBUTES else None

    @property
    def preset_row(self) -> int | None:
        return LIGHTING_PRESETS.get(self.name)


def parse_name(name: str) -> Target:
    name = name.strip().lower()
    if name not in NAMES:
        raise StyleflowSpecError(f"styleflow:{name}: unknown; use one of {', '.join(NAMES)}")
    return Target(name)


def parse_overrides(texts: Sequence[str]) -> dict[str, float]:
    """['age=35', 'glasses=0'] -> {'age': 35.0, 'glasses': 0.0}."""
    out: dict[str, float] = {}
    for text in texts:
        name, eq, value = text.partition("=")
        name = name.strip().lower()
        if not eq or name not in ATTRIBUTES:
            raise StyleflowSpecError(f"--attribute {text!r}: use NAME=VALUE with NAME one of {', '.join(ATTRIBUTES)}")
        try:
            out[name] = float(value)
        except ValueError:
            raise StyleflowSpecError(f"--attribute {text!r}: {value!r} is not a number") from None
        if not math.isfinite(out[name]):
            raise StyleflowSpecError(f"--attribute {text!r}: the value must be finite")
    return out
