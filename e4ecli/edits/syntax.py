"""What editing options may say, checked without torch (so that a typo is answered before torch loads):
direction specs (`parse_direction`: the one parser of direction specs, for the early check, the resolver and the
page's command box), easing names, SeFa layer selections (`ops` re-exports both), StyleFlow names and attribute
overrides (`edits.styleflow` re-exports them).

Direction specs (`parse_direction`; checked and resolved by `pipelines.directions`):
  NAME                      a registry name (`e4e directions list`): InterFaceGAN or named GANSpace
  FILE.pt / FILE.npy        a direction shaped (512,), (1, 512) or (n_styles, 512): w + s * d
  FILE.npz:K                row K of an .npz of directions (as `e4e directions sefa` writes them)
  ganspace:COMP:START:END   GANSpace component COMP on styles [START, END) with a PCA file or name (the
                            `pca` setting), else the model domain's registered PCA
  sefa:K[:LAYERS]           the K-th SeFa direction (0 = largest eigenvalue) of the loaded generator,
                            for LAYERS ('all' (default), '2,3,4,5' or '2-5'), applied to those styles
  styleflow:NAME            StyleFlow attribute NAME set to the strength (its own units), or a lighting
                            preset moved to by the strength (edits.styleflow; needs per-latent conditions)
  stylespace:LAYER:CHANNEL  one StyleSpace channel moved by strength x its std (edits.stylespace)
  text:TARGET               StyleCLIP's global direction from the neutral description to TARGET (edits.stylespace; needs
                            CLIP and a relevance matrix)
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

from e4ecli.errors import SettingError

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


class StyleflowSpecError(SettingError):
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
            raise StyleflowSpecError("{attribute} {text!r}: use NAME=VALUE with NAME one of {names}", text=text, names=", ".join(ATTRIBUTES))
        try:
            out[name] = float(value)
        except ValueError:
            raise StyleflowSpecError("{attribute} {text!r}: {value!r} is not a number", text=text, value=value) from None
        if not math.isfinite(out[name]):
            raise StyleflowSpecError("{attribute} {text!r}: the value must be finite", text=text)
    return out


# -- direction specs ------------------------------------------------------------------------------
# What a `--direction` may say (e4e edit's help lists them); one frozen dataclass per kind. `parse_direction`
# decides the kind and checks the syntax without torch or a model; `pipelines.directions` checks what needs the
# registry or files (`check`) and makes the tensors (`resolve`) from the same object.
DIRECTION_SUFFIXES = (".pt", ".pth", ".npy", ".npz")
GANSPACE_USAGE = "ganspace:COMP:START:END (e.g. ganspace:54:7:8)"
SEFA_USAGE = "sefa:K or sefa:K:LAYERS (e.g. sefa:0:2,3,4,5 or sefa:1:all)"
CHANNEL_USAGE = "stylespace:LAYER:CHANNEL (e.g. stylespace:6:501, the StyleSpace paper's smile channel at 1024 px)"


@dataclass(frozen=True)
class Registered:
    """NAME: a registry entry (`e4e directions list`); whether it exists is the registry's to say."""

    spec: str
    name: str
    kind = "registered"

    @property
    def label(self) -> str:
        return self.name


@dataclass(frozen=True)
class DirectionFile:
    """FILE.pt / .pth / .npy / .npz: one direction, w + s * d."""

    spec: str
    path: Path
    kind = "file"

    @property
    def label(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class NpzRow:
    """FILE.npz:K: row K of an .npz of directions (as `e4e directions sefa` writes)."""

    spec: str
    path: Path
    row: int
    kind = "npz_row"

    @property
    def label(self) -> str:
        return self.spec


@dataclass(frozen=True)
class GanSpace:
    """ganspace:COMP:START:END: PCA component COMP on styles [START, END)."""

    spec: str
    component: int
    start: int
    end: int
    kind = "ganspace"

    @property
    def label(self) -> str:
        return self.spec


@dataclass(frozen=True)
class Sefa:
    """sefa:K[:LAYERS]: the K-th SeFa direction of the loaded generator's LAYERS ('all' when not given)."""

    spec: str
    k: int
    layers: str
    kind = "sefa"

    @property
    def label(self) -> str:
        return self.spec


@dataclass(frozen=True)
class StyleFlow:
    """styleflow:NAME: a StyleFlow attribute or lighting preset."""

    spec: str
    target: Target
    kind = "styleflow"

    @property
    def label(self) -> str:
        return f"styleflow:{self.target.name}"


@dataclass(frozen=True)
class Channel:
    """stylespace:LAYER:CHANNEL: one StyleSpace channel."""

    spec: str
    layer: int
    channel: int
    kind = "stylespace"

    @property
    def label(self) -> str:
        return f"stylespace:{self.layer}:{self.channel}"


@dataclass(frozen=True)
class Text:
    """text:TARGET: StyleCLIP's global direction towards the description `prompt` (as CLIP will read it)."""

    spec: str
    prompt: str
    kind = "text"

    @property
    def label(self) -> str:
        return f"text:{self.prompt}"


DirectionSpec = Union[Registered, DirectionFile, NpzRow, GanSpace, Sefa, StyleFlow, Channel, Text]
HEADS = {"ganspace": GanSpace, "sefa": Sefa, "styleflow": StyleFlow, "stylespace": Channel, "text": Text}


def is_file(path: Path) -> bool:
    """Path.is_file, False for names the OS cannot even look up (a 10k-character text: prompt is not a file)."""
    try:
        return path.is_file()
    except OSError:
        return False


def direction_kind(spec: str) -> str:
    """The kind of a direction spec without checking the rest of it: 'ganspace', 'sefa', 'styleflow', 'stylespace',
    'text' (a `HEAD:` spec that is no existing file), 'npz_row', 'file' or 'registered'."""
    spec = spec.strip()
    head = spec.partition(":")[0]
    if head in HEADS and not is_file(Path(spec)):
        return HEADS[head].kind
    if (row := re.fullmatch(r"(.+\.npz):(\d+)", spec, re.IGNORECASE)) and is_file(Path(row.group(1))):
        return NpzRow.kind
    path = Path(spec)
    if is_file(path) or path.suffix.lower() in DIRECTION_SUFFIXES or "/" in spec or "\\" in spec:
        return DirectionFile.kind
    return Registered.kind


# DirectionError (hub.directions) is imported where an error is raised: the option checks that only need EASINGS
# or parse_layers stay light.
def _ints(parts: list[str], spec: str, usage: str) -> list[int]:
    from e4ecli.hub.directions import DirectionError

    try:
        return [int(p) for p in parts]
    except ValueError:
        raise DirectionError(f"direction {spec!r}: use {usage}") from None


def parse_direction(spec: str) -> DirectionSpec:
    """A direction spec -> its typed form, its syntax checked (no torch, no model, no registry); DirectionError
    (one line saying what to write) when malformed, a file of the wrong type, or a path to no file."""
    from e4ecli.hub.directions import DirectionError

    spec = spec.strip()
    kind = direction_kind(spec)
    rest = spec.partition(":")[2]
    if kind == GanSpace.kind:
        parts = rest.split(":")
        if len(parts) != 3:
            raise DirectionError(f"direction {spec!r}: use {GANSPACE_USAGE}")
        comp, start, end = _ints(parts, spec, GANSPACE_USAGE)
        if not 0 <= start < end:
            raise DirectionError(f"direction {spec!r}: styles [START, END) must satisfy 0 <= START < END")
        return GanSpace(spec, comp, start, end)
    if kind == Sefa.kind:
        k_text, _, layers = rest.partition(":")
        (k,) = _ints([k_text], spec, SEFA_USAGE)
        try:
            parse_layers(layers or "all", None)
        except ValueError as e:
            raise DirectionError(f"direction {spec!r}: {e}") from None
        return Sefa(spec, k, layers or "all")
    if kind == StyleFlow.kind:
        try:
            return StyleFlow(spec, parse_name(rest))
        except StyleflowSpecError as e:
            raise DirectionError(str(e)) from None
    if kind == Channel.kind:
        layer, channel = parse_channel(spec, rest)
        return Channel(spec, layer, channel)
    if kind == Text.kind:
        from e4ecli.edits.prompts import clean_prompt

        return Text(spec, clean_prompt(rest))
    if kind == NpzRow.kind:
        path, _, row = spec.rpartition(":")
        return NpzRow(spec, Path(path), int(row))
    path = Path(spec)
    if kind == DirectionFile.kind:
        if not is_file(path):
            raise DirectionError(f"{spec}: no such direction file")
        if path.suffix.lower() not in DIRECTION_SUFFIXES:
            raise DirectionError(f"{spec}: a direction file must be {', '.join(DIRECTION_SUFFIXES)}")
        return DirectionFile(spec, path)
    return Registered(spec, spec)


def parse_channel(spec: str, rest: str) -> tuple[int, int]:
    """LAYER, CHANNEL of `stylespace:LAYER:CHANNEL` (rest: what follows 'stylespace:'); DirectionError when malformed."""
    from e4ecli.hub.directions import DirectionError

    parts = rest.split(":")
    if len(parts) != 2:
        raise DirectionError(f"direction {spec!r}: use {CHANNEL_USAGE}")
    try:
        layer, channel = int(parts[0]), int(parts[1])
    except ValueError:
        raise DirectionError(f"direction {spec!r}: use {CHANNEL_USAGE}") from None
    if layer < 0 or channel < 0:
        raise DirectionError(f"direction {spec!r}: LAYER and CHANNEL are counted from 0")
    return layer, channel
