"""Resolved edits (`Edit`: what a direction spec (edits.syntax) becomes for one generator) and strength values.

StyleSpace and text edits leave the W+ latent as it is and carry offsets of the style vectors
(`Edit.style_offsets`), added after every W+ edit when rendering.

Strengths: a number, or a sweep `A:B:N` (N evenly spaced values from A to B inclusive).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from e4ecli.hub.directions import DirectionError

if TYPE_CHECKING:  # torch is imported where a tensor is made: parsing and checking specs stays torch-free (a typo is answered fast)
    import torch

    from e4ecli.edits import ops
    from e4ecli.edits.syntax import DirectionSpec, Target


@dataclass(frozen=True)
class Edit:
    """One resolved edit. `apply(latents (N, S, D), strength float or (N,)) -> (N, S, D)`."""

    label: str  # short, for labels and tables: 'age', 'ganspace:54:7:8', 'sefa:0:2-5', 'my_dir.npy'
    kind: str  # interfacegan | ganspace | sefa | styleflow
    default_strength: float | None = None
    default_range: tuple[float, float] | None = None
    domain: str | None = None  # the registry's domain ('ffhq', 'cars'), None for files and SeFa
    direction: torch.Tensor | None = None  # interfacegan: (1 or S, D); sefa: (D,)
    styles: tuple[int, ...] | None = None  # None: every style
    pca: ops.PCA | None = field(default=None, repr=False)
    component: int | None = None
    context: Callable | None = field(default=None, repr=False, compare=False)  # styleflow: bound to latents' conditions
    s_direction: tuple[torch.Tensor, ...] | None = field(default=None, repr=False)  # stylespace/text: per-layer offsets at strength 1
    settings: dict | None = field(default=None, compare=False)  # text: prompt, neutral, beta, CLIP and relevance file ids
    spec: DirectionSpec | None = field(default=None, repr=False, compare=False)  # the parsed spec it was resolved from

    @property
    def in_stylespace(self) -> bool:
        return self.s_direction is not None

    @property
    def styleflow_target(self) -> Target:
        """The StyleFlow attribute or lighting preset of a styleflow edit (from its spec; else from its label)."""
        from e4ecli.edits.syntax import StyleFlow, parse_direction

        spec = self.spec if self.spec is not None else parse_direction(self.label)
        if not isinstance(spec, StyleFlow):
            raise ValueError(f"{self.label}: not a StyleFlow edit")
        return spec.target

    def style_offsets(self, strength: float | torch.Tensor, n: int) -> list[torch.Tensor]:
        """Offsets of the StyleSpace vectors for n latents (one (n, C_l) per layer); strength a float or (n,)."""
        import torch

        assert self.s_direction is not None
        k = torch.as_tensor(strength, dtype=torch.float32).reshape(-1, 1).expand(n, 1)
        return [k.to(d.device) * d[None] for d in self.s_direction]

    def apply(self, latents: torch.Tensor, strength: float | torch.Tensor) -> torch.Tensor:
        """The W+ part of the edit (StyleSpace and text edits: none; see style_offsets)."""
        if self.in_stylespace:
            return latents
        from e4ecli.edits import ops

        if self.kind == "styleflow":
            if self.context is None:
                raise ValueError(f"{self.label}: a StyleFlow edit needs each latent's attributes; bind it first (pipelines.styleflow.bind)")
            return self.context(latents, strength)
        if self.kind == "ganspace":
            assert self.pca is not None and self.component is not None and self.styles
            return ops.ganspace(latents, self.pca, self.component, self.styles[0], self.styles[-1] + 1, strength)
        assert self.direction is not None
        if self.kind == "sefa":
            return ops.sefa_edit(latents, self.direction, self.styles or range(latents.shape[1]), strength)
        if self.styles is None:
            return ops.interfacegan(latents, self.direction, strength)
        edited = ops.interfacegan(latents, self.direction, strength)
        out = latents.clone()
        idx = list(self.styles)
        out[:, idx] = edited[:, idx]
        return out

    def identity(self) -> dict:
        """What makes this edit move latents the way it does (for e4ecli.files.provenance): its kind, styles
        and a content id of its direction or PCA component -- not its file's path."""
        from e4ecli.files.provenance import content_id

        if self.kind == "ganspace":
            assert self.pca is not None
            content = content_id(self.pca.mean, self.pca.comp, self.pca.std, self.component)
        elif self.s_direction is not None:
            content = content_id(*self.s_direction)
        elif self.direction is not None:
            content = content_id(self.direction)
        else:  # styleflow: the label names the attribute; the flow's weights and conditions are run settings
            content = None
        out = {"label": self.label, "kind": self.kind, "styles": list(self.styles) if self.styles else None, "content": content}
        if self.settings:
            out.update(self.settings)
        return out

    def check(self, n_styles: int, style_dim: int) -> None:
        """Raise DirectionError when this edit cannot apply to latents (N, n_styles, style_dim)."""
        if self.in_stylespace:
            return
        from e4ecli.edits import ops

        if self.kind == "styleflow" and (n_styles, style_dim) != (18, 512):
            raise DirectionError(f"{self.label}: StyleFlow edits W+ latents of 18 styles of 512 (FFHQ 1024); "
                                 f"this generator's latents are {n_styles} x {style_dim}")
        if self.styles is not None and max(self.styles) >= n_styles:
            raise DirectionError(f"{self.label}: moves style {max(self.styles)}, but the generator has styles 0..{n_styles - 1}")
        if self.kind == "interfacegan":
            try:
                ops.as_wplus_direction(self.direction, n_styles, style_dim)  # type: ignore[arg-type]
            except ValueError as e:
                raise DirectionError(f"{self.label}: {e}") from None
        if self.kind == "ganspace":
            assert self.pca is not None and self.component is not None
            if self.pca.comp.shape[1] != style_dim:
                raise DirectionError(f"{self.label}: the PCA is of {self.pca.comp.shape[1]}-d codes, the generator's are {style_dim}-d")
            if not 0 <= self.component < self.pca.n_components:
                raise DirectionError(f"{self.label}: component {self.component} out of range (the PCA has {self.pca.n_components})")


# -- strengths ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Strength:
    """A single strength, or a sweep of values; `text` is what the user wrote."""

    values: tuple[float, ...]
    text: str
    is_sweep: bool


def parse_number(text: str, what: str = "strength") -> float:
    try:
        value = float(text)
    except ValueError:
        raise DirectionError(f"{what} {text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise DirectionError(f"{what} must be finite, got {text!r}")
    return value


def parse_strength(text: str) -> Strength:
    """'3' -> one value; 'A:B:N' -> N evenly spaced values from A to B (N >= 2)."""
    text = text.strip()
    parts = text.split(":")
    if len(parts) == 1:
        return Strength((parse_number(text),), text, False)
    if len(parts) != 3:
        raise DirectionError(f"strength {text!r}: use a number or a sweep A:B:N (e.g. -3:3:7)")
    a, b = parse_number(parts[0]), parse_number(parts[1])
    try:
        n = int(parts[2])
    except ValueError:
        raise DirectionError(f"strength {text!r}: N in A:B:N must be a whole number") from None
    if n < 2:
        raise DirectionError(f"strength {text!r}: a sweep needs N >= 2 values")
    return Strength(linspace(a, b, n), text, True)


def linspace(a: float, b: float, n: int) -> tuple[float, ...]:
    """n evenly spaced values from a to b inclusive, both ends exact (the first half stepped from a, the second
    from b, as torch.linspace does), without importing torch."""
    step = (b - a) / (n - 1)
    return tuple(a + step * i if i < n // 2 else b - step * (n - 1 - i) for i in range(n))


def parse_range(text: str) -> tuple[float, float]:
    """'A:B' -> (A, B); a single number S -> (0, S) (from the reconstruction to S)."""
    parts = text.strip().split(":")
    if len(parts) == 1:
        return 0.0, parse_number(parts[0])
    if len(parts) == 2:
        return parse_number(parts[0]), parse_number(parts[1])
    raise DirectionError(f"strength range {text!r}: use A:B (e.g. -3:3) or one number S for 0:S")


class OtherDomain(DirectionError):
    """A registered direction found for another domain than the model's. Fields: `name`, `direction_domain`, `model_domain`."""

    def __init__(self, name: str, direction_domain: str, model_domain: str):
        self.name, self.direction_domain, self.model_domain = name, direction_domain, model_domain
        super().__init__(f"'{name}' is a direction for {direction_domain} models, and this model's domain is {model_domain}: "
                         "the edit would change something else, or nothing")
