"""`--direction` specs and `--strength` values -> ready-to-apply edits.

Direction specs:
  NAME                      a registry name (`e4e directions list`): InterFaceGAN or named GANSpace
  FILE.pt / FILE.npy        a direction shaped (512,), (1, 512) or (n_styles, 512): w + s * d
  ganspace:COMP:START:END   GANSpace component COMP on styles [START, END) with `--pca FILE` or the
                            model domain's registered PCA
  sefa:K[:LAYERS]           the K-th SeFa direction (0 = largest eigenvalue) of the loaded generator,
                            for LAYERS ('all' (default), '2,3,4,5' or '2-5'), applied to those styles
  styleflow:NAME            StyleFlow attribute NAME set to the strength (its own units), or a lighting
                            preset moved to by the strength (edits.styleflow; needs per-latent conditions)
  stylespace:LAYER:CHANNEL  one StyleSpace channel moved by strength x its std (edits.stylespace)
  text:TARGET               StyleCLIP's global direction from --neutral to TARGET (edits.stylespace; needs
                            CLIP and a relevance matrix)

StyleSpace and text edits leave the W+ latent as it is and carry offsets of the style vectors
(`Edit.style_offsets`), added after every W+ edit when rendering.

Strengths: a number, or a sweep `A:B:N` (N evenly spaced values from A to B inclusive).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from e4ecli.hub.directions import DirectionError

if TYPE_CHECKING:  # torch is imported where a tensor is made: parsing and checking specs stays torch-free (a typo is answered fast)
    import torch

    from e4ecli.edits import ops


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

    @property
    def in_stylespace(self) -> bool:
        return self.s_direction is not None

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


# -- directions ---------------------------------------------------------------------------------
DIRECTION_SUFFIXES = (".pt", ".pth", ".npy", ".npz")


def _ints(parts: list[str], spec: str, usage: str) -> list[int]:
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise DirectionError(f"direction {spec!r}: use {usage}") from None


def _ganspace_numbers(spec: str, rest: str) -> tuple[int, int, int]:
    """COMP, START, END of `ganspace:COMP:START:END` (rest = what follows 'ganspace:'); DirectionError when malformed."""
    usage = "ganspace:COMP:START:END (e.g. ganspace:54:7:8)"
    parts = rest.split(":")
    if len(parts) != 3:
        raise DirectionError(f"direction {spec!r}: use {usage}")
    comp, start, end = _ints(parts, spec, usage)
    if not 0 <= start < end:
        raise DirectionError(f"direction {spec!r}: styles [START, END) must satisfy 0 <= START < END")
    return comp, start, end


def _registry_edit(name: str, fetch: Callable) -> Edit:
    from e4ecli.hub import directions as hub

    entry = hub.lookup(name)
    if entry.kind == "pca":
        raise DirectionError(f"'{name}' is a PCA file, not an edit; use --direction ganspace:COMP:START:END --pca {name}")
    styles = tuple(range(*entry.styles)) if entry.styles else None
    if entry.kind == "interfacegan":
        d = hub.load_direction(fetch(entry))
        return Edit(name, "interfacegan", entry.strength, entry.range, entry.domain, direction=d, styles=styles)
    pca_entry = hub.lookup(entry.pca)  # type: ignore[arg-type]
    pca = hub.load_pca(fetch(pca_entry))
    return Edit(name, "ganspace", entry.strength, entry.range, entry.domain, styles=styles, pca=pca, component=entry.component)


def resolve_pca(pca: str | Path | None, domain_name: str, fetch: Callable) -> ops.PCA:
    """--pca FILE or registry name, else the registered PCA of the model's domain."""
    from e4ecli.hub import directions as hub

    if pca is not None:
        if Path(pca).is_file():
            return hub.load_pca(pca)
        registry = hub.load_registry()
        if str(pca) in registry and registry[str(pca)].kind == "pca":
            return hub.load_pca(fetch(registry[str(pca)]))
        raise DirectionError(f"--pca {pca}: neither an existing file nor a registered PCA "
                             f"({', '.join(n for n, e in registry.items() if e.kind == 'pca')})")
    entry = hub.pca_for_domain(domain_name)
    if entry is None:
        raise DirectionError(f"no registered GANSpace PCA for the model's domain '{domain_name}'; give --pca FILE "
                             "(`e4e directions ganspace` makes one)")
    return hub.load_pca(fetch(entry))


class OtherDomain(DirectionError):
    """A registered direction found for another domain than the model's. Fields: `name`, `direction_domain`, `model_domain`."""

    def __init__(self, name: str, direction_domain: str, model_domain: str):
        self.name, self.direction_domain, self.model_domain = name, direction_domain, model_domain
        super().__init__(f"'{name}' is a direction for {direction_domain} models, and this model's domain is {model_domain}: "
                         "the edit would change something else, or nothing")


def _npz_row(path: Path, k: int, spec: str) -> Edit:
    """Row K of an .npz of directions (as `e4e directions sefa` writes: directions (k, 512), layers)."""
    from e4ecli.hub import directions as hub

    data = hub.read_array(path)
    arrays = {n: v for n, v in data.items() if v.ndim == 2}
    rows = data.get("directions", next(iter(arrays.values())) if len(arrays) == 1 else None)
    if rows is None or rows.ndim != 2:
        raise DirectionError(f"{spec}: {path.name} holds no 'directions' array of rows (found {', '.join(data) or 'nothing'})")
    if not 0 <= k < rows.shape[0]:
        raise DirectionError(f"{spec}: row {k} out of range ({path.name} has rows 0..{rows.shape[0] - 1})")
    import torch

    row = rows[k].float()
    if not torch.isfinite(row).all():
        raise DirectionError(f"{spec}: row {k} contains NaN or infinite values")
    layers = tuple(int(v) for v in data["layers"].reshape(-1)) if "layers" in data else None
    return Edit(spec, "sefa", 10.0, (-15.0, 15.0), direction=row, styles=layers)


def _is_file(path: Path) -> bool:
    """Path.is_file, False for names the OS cannot even look up (a 10k-character text: prompt is not a file)."""
    try:
        return path.is_file()
    except OSError:
        return False


def precheck(spec: str, pca: str | Path | None = None, text=None) -> float | None:
    """Check a `--direction` spec without a model (syntax, files, registry names); returns its default
    strength when known without the model (registry entries, sefa), else None. Raises DirectionError.
    Mirrors `resolve`: a new kind of spec gets its branch in both."""
    import re

    from e4ecli.hub import directions as hub

    spec = spec.strip()
    head, _, rest = spec.partition(":")
    path = Path(spec)
    if head == "ganspace" and not _is_file(path):
        _ganspace_numbers(spec, rest)
        if pca is not None and not Path(pca).is_file():
            registry = hub.load_registry()
            if str(pca) not in registry or registry[str(pca)].kind != "pca":
                raise DirectionError(f"--pca {pca}: neither an existing file nor a registered PCA "
                                     f"({', '.join(n for n, e in registry.items() if e.kind == 'pca')})")
        return None
    if head == "styleflow" and not _is_file(path):
        from e4ecli.edits.syntax import StyleflowSpecError, parse_name

        try:
            parse_name(rest)
        except StyleflowSpecError as e:
            raise DirectionError(str(e)) from None
        return None
    if head == "sefa" and not _is_file(path):
        _ints([rest.partition(":")[0]], spec, "sefa:K or sefa:K:LAYERS (e.g. sefa:0:2,3,4,5 or sefa:1:all)")
        return 10.0
    if head == "stylespace" and not _is_file(path):
        from e4ecli.edits.prompts import parse_channel_spec

        parse_channel_spec(spec, rest)
        return None
    if head == "text" and not _is_file(path):
        from e4ecli.edits.prompts import TEXT_STRENGTH, precheck_text

        precheck_text(rest, text)
        return TEXT_STRENGTH
    if (row := re.fullmatch(r"(.+\.npz):(\d+)", spec, re.IGNORECASE)) and _is_file(Path(row.group(1))):
        return 10.0
    if _is_file(path):
        if path.suffix.lower() not in DIRECTION_SUFFIXES:
            raise DirectionError(f"{spec}: a direction file must be {', '.join(DIRECTION_SUFFIXES)}")
        return None
    if path.suffix.lower() in DIRECTION_SUFFIXES or "/" in spec or "\\" in spec:
        raise DirectionError(f"{spec}: no such direction file")
    entry = hub.lookup(spec)
    if entry.kind == "pca":
        raise DirectionError(f"'{spec}' is a PCA file, not an edit; use --direction ganspace:COMP:START:END --pca {spec}")
    return entry.strength


def resolve(spec: str, generator, *, pca: str | Path | None = None, domain_name: str = "ffhq_encode",
            sefa_cache_key: str | None = None, download: bool = True, force: bool = False, text=None) -> Edit:
    """A direction spec -> Edit for `generator` (used for SeFa and for shape checks). `text`: an
    edits.stylespace.TextOptions for text:... specs (CLIP, relevance file, neutral prompt, beta).

    A registered direction of another domain than `domain_name`'s raises OtherDomain unless `force`.
    """
    import re

    from e4ecli.domains import domain_for
    from e4ecli.hub import directions as hub

    def fetch(entry):
        return hub.fetch(entry, download=download)

    spec = spec.strip()
    head, _, rest = spec.partition(":")
    path = Path(spec)
    if head == "ganspace" and not _is_file(path):
        comp, start, end = _ganspace_numbers(spec, rest)
        edit = Edit(spec, "ganspace", styles=tuple(range(start, end)), pca=resolve_pca(pca, domain_name, fetch), component=comp)
    elif head == "styleflow" and not _is_file(path):
        from e4ecli.edits.styleflow import StyleflowSpecError, parse_name

        try:
            target = parse_name(rest)
        except StyleflowSpecError as e:
            raise DirectionError(str(e)) from None
        edit = Edit(f"styleflow:{target.name}", "styleflow", domain="ffhq")
    elif head == "sefa" and not _is_file(path):
        usage = "sefa:K or sefa:K:LAYERS (e.g. sefa:0:2,3,4,5 or sefa:1:all)"
        k_text, _, layers = rest.partition(":")
        (k,) = _ints([k_text], spec, usage)
        try:
            result = sefa_cached(generator, layers or "all", sefa_cache_key)
        except ValueError as e:
            raise DirectionError(f"direction {spec!r}: {e}") from None
        if not 0 <= k < result.directions.shape[0]:
            raise DirectionError(f"direction {spec!r}: K must be in 0..{result.directions.shape[0] - 1}")
        edit = Edit(spec, "sefa", 10.0, (-15.0, 15.0), direction=result.directions[k], styles=result.layers)
    elif head == "stylespace" and not _is_file(path):
        from e4ecli.edits import stylespace as ss

        layer, channel = ss.parse_channel_spec(spec, rest)
        stats = ss.style_stats_cached(generator, sefa_cache_key)
        d = ss.channel_direction(generator.style_channels(), layer, channel, stats.std, spec)
        edit = Edit(f"stylespace:{layer}:{channel}", "stylespace", s_direction=d)
    elif head == "text" and not _is_file(path):
        from e4ecli.edits import stylespace as ss

        label, offsets, settings = ss.text_direction(rest, generator, text, domain_short=domain_for(domain_name).short,
                                                     stats_key=sefa_cache_key, download=download, force=force)
        edit = Edit(label, "text", ss.TEXT_STRENGTH, ss.TEXT_RANGE, s_direction=offsets, settings=settings)
    elif (row := re.fullmatch(r"(.+\.npz):(\d+)", spec, re.IGNORECASE)) and _is_file(Path(row.group(1))):
        edit = _npz_row(Path(row.group(1)), int(row.group(2)), spec)
    elif _is_file(path):
        if path.suffix.lower() not in DIRECTION_SUFFIXES:
            raise DirectionError(f"{spec}: a direction file must be {', '.join(DIRECTION_SUFFIXES)}")
        edit = Edit(path.name, "interfacegan", direction=hub.load_direction(path))
    elif path.suffix.lower() in DIRECTION_SUFFIXES or "/" in spec or "\\" in spec:
        raise DirectionError(f"{spec}: no such direction file")
    else:
        edit = _registry_edit(spec, fetch)
        model_domain = domain_for(domain_name).short
        if edit.domain not in (None, "", "any", model_domain) and not force:
            raise OtherDomain(spec, edit.domain, model_domain)
    edit.check(generator.n_latent, generator.style_dim)
    return edit


# -- SeFa with a per-checkpoint cache -----------------------------------------------------------
_SEFA_MEMO: dict[Path, ops.Sefa] = {}  # by cache file: one per checkpoint hash, layers and cache folder


def sefa_cached(generator, layers: str, cache_key: str | None) -> ops.Sefa:
    """ops.sefa, cached in memory and (with a checkpoint hash as cache_key) on disk under
    `$E4E_HOME/sefa/<hash>-<layers>.npz`. Without a key it is computed every time."""
    import numpy as np
    import torch

    from e4ecli.edits import ops

    chosen = tuple(ops.parse_layers(layers, len(ops.styled_convs(generator))))
    if cache_key is None:
        return ops.sefa(generator, chosen)
    from e4ecli.files.batch import atomic_output
    from e4ecli.hub.directions import cache_root

    safe_key = "".join(c if c.isalnum() else "_" for c in cache_key)
    path = cache_root() / "sefa" / f"{safe_key}-{'_'.join(map(str, chosen))}.npz"
    if path in _SEFA_MEMO:
        return _SEFA_MEMO[path]
    result = None
    if _is_file(path):
        try:
            with np.load(path, allow_pickle=False) as z:
                if tuple(int(x) for x in z["layers"]) == chosen:
                    result = ops.Sefa(torch.from_numpy(z["eigenvalues"]), torch.from_numpy(z["directions"]), chosen)
        except (OSError, ValueError, KeyError):
            result = None  # a damaged cache file is recomputed and replaced
    if result is None:
        result = ops.sefa(generator, chosen)
        try:
            with atomic_output(path) as tmp:
                np.savez(tmp, eigenvalues=result.eigenvalues.numpy(), directions=result.directions.numpy(), layers=np.array(chosen))
        except OSError:
            pass  # the cache is an optimisation; an unwritable cache folder is not an error
    _SEFA_MEMO[path] = result
    return result


def domain_short(domain_name: str) -> str:
    """'ffhq_encode' -> 'ffhq' (the Domain's short name)."""
    from e4ecli.domains import domain_for

    return domain_for(domain_name).short
