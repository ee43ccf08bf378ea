"""How the invert, edit and render pipelines run (their frozen configs) and what they write for each
input, without torch or numpy.

The CLI builds the config and plans every output (refusing collisions and outputs that would replace
inputs or sidecars) before any model loads, so a typo or a missing checkpoint is answered at `--help`
speed; the pipelines name their files with the same functions.

  invert   InvertConfig; OUT/<key>.npy, + .pti.safetensors (PTI per image), .png (reconstruction), .aligned.png, .json
           (alignment sidecar): `output_suffixes`; one shared PTI generator: OUT/pti_shared.safetensors
  edit     EditConfig; `plan_outputs` -> Plan (frames, sweep strip, latents, StyleSpace offsets, pasted images)
  render   RenderConfig; OUT/<key>.png: RENDER_SUFFIXES
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from e4ecli.files.batch import Item, output_path

if TYPE_CHECKING:
    from e4ecli.refine.options import RefineOptions

# -- invert ---------------------------------------------------------------------------------------------
PTI_SUFFIX = ".pti.safetensors"
SHARED_PTI_FILE = "pti_shared.safetensors"
ALIGNED_SUFFIX = ".aligned.png"


@dataclass(frozen=True)
class InvertConfig:
    """How an InvertPipeline runs. stage: e4e's progressive stage K (w plus offsets 1..K; 0 = pure W; None: the
    full code); save_reconstructions: also OUT/<key>.png (at width `size`, default native); save_aligned: with an
    aligner, also the aligned crop OUT/<key>.aligned.png."""

    precision: str = "fp32"
    batch_size: int = 4
    workers: int = 0
    stage: int | None = None
    save_reconstructions: bool = False
    size: int | None = None
    save_aligned: bool = False


def output_suffixes(save_reconstructions: bool, align: bool, save_aligned: bool, refine: "RefineOptions | None") -> list[str]:
    """What invert writes per image, the latent first."""
    pti = refine is not None and refine.is_pti and not refine.shared
    return [".npy"] + [PTI_SUFFIX] * pti + [".png"] * save_reconstructions + [ALIGNED_SUFFIX] * (align and save_aligned) + [".json"] * align


# -- render ---------------------------------------------------------------------------------------------
RENDER_SUFFIXES = [".png"]


@dataclass(frozen=True)
class RenderConfig:
    """How a RenderPipeline runs: renders at `precision` (fp32, or fp16/bf16 autocast), `batch_size` latents per
    generator call, `workers` background readers, output width `size` by area averaging (None: native)."""

    precision: str = "fp32"
    batch_size: int = 4
    workers: int = 0
    size: int | None = None


# -- edit -----------------------------------------------------------------------------------------------
PASTED_SUFFIX = ".pasted.png"
OFFSETS_SUFFIX = ".s.npz"


@dataclass(frozen=True)
class EditConfig:
    """How an EditPipeline runs. size: output width (default native); save_latents: also the edited latents
    OUT/<key>.npy (and, for StyleSpace / text steps, their offsets OUT/<key>.s.npz); latents_only: only those,
    no renders; paste_back: also OUT/<key>.pasted.png, the edit blended into the original photo through its
    alignment sidecar, with a soft edge of `feather` (a fraction of the aligned square's side); precision:
    the renders' (the edits themselves stay fp32)."""

    precision: str = "fp32"
    batch_size: int = 4
    workers: int = 0
    size: int | None = None
    save_latents: bool = False
    latents_only: bool = False
    paste_back: bool = False
    feather: float = 0.1

    @property
    def renders(self) -> bool:
        return not self.latents_only


def offsets_beside(latent: Path | str) -> Path:
    """K.npy -> K.s.npz: where `e4e edit --save-latents` puts a latent's StyleSpace offsets (and `e4e render` reads them)."""
    return Path(latent).with_suffix(OFFSETS_SUFFIX)


def format_strength(value: float) -> str:
    """3.0 -> '+3', -1.5 -> '-1.5', 0 -> '+0' (file names and labels)."""
    text = f"{value:+.3f}".rstrip("0").rstrip(".")
    return "+0" if text in ("-0", "+0", "") else text


@dataclass
class Plan:
    """Every output one input will have."""

    item: Item
    images: list[Path] = field(default_factory=list)  # one per frame (empty with latents_only)
    latents: list[Path] = field(default_factory=list)  # one per frame (empty unless saved)
    offsets: list[Path] = field(default_factory=list)  # one per frame: StyleSpace offsets beside saved latents
    pasted: list[Path] = field(default_factory=list)  # one per frame when a sidecar was found
    strip: Path | None = None
    sidecar: Path | None = None

    def all_outputs(self) -> list[Path]:
        return [p for p in (self.strip, *self.images, *self.latents, *self.offsets, *self.pasted) if p is not None]


def plan_outputs(item: Item, out_dir: Path, values: Sequence[float], sweep: bool, *, save_latents: bool,
                 latents_only: bool, sidecar: Path | None, stylespace: bool = False) -> Plan:
    """An edit's outputs for one input: one frame per strength value (a sweep: OUT/K/NN_s<value>.*, and the
    labelled strip OUT/K.png), else OUT/K.*."""
    plan = Plan(item, sidecar=sidecar)
    if not sweep:
        stems = [item.key]
    else:
        stems = [f"{item.key}/{i:02d}_s{format_strength(v)}" for i, v in enumerate(values)]
        if not latents_only:
            plan.strip = output_path(out_dir, item.key, ".png")
    for stem in stems:
        if not latents_only:
            plan.images.append(output_path(out_dir, stem, ".png"))
            if sidecar is not None:
                plan.pasted.append(output_path(out_dir, stem, PASTED_SUFFIX))
        if save_latents or latents_only:
            plan.latents.append(output_path(out_dir, stem, ".npy"))
            if stylespace:
                plan.offsets.append(output_path(out_dir, stem, OFFSETS_SUFFIX))
    return plan
