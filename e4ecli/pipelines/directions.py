"""Direction specs -> ready-to-apply edits, over the one parser (`edits.syntax.parse_direction`):

  check(spec, pca, text)            what can be known without a model: the syntax, the registry, the files named;
                                    the default strength when known. Torch-free: a typo is answered before torch loads.
  resolve(spec, generator, ...)     the Edit for this generator (tensors made, shapes checked).

Files, downloads and the per-checkpoint caches (SeFa, StyleSpace channel statistics) go through
`hub.directions`; CLIP through `hub.clip`; the maths is `edits/`'s. Errors are `DirectionError`s naming the
settings they concern as {pca}, {neutral}, {beta}, ... (`e4ecli.errors`): the interface words them.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from e4ecli.edits.prompts import TEXT_RANGE, TEXT_STRENGTH, TextOptions, check_text_options, clean_prompt, neutral_for
from e4ecli.edits.specs import Edit, OtherDomain
from e4ecli.edits.syntax import Channel, DirectionFile, DirectionSpec, GanSpace, NpzRow, Registered, Sefa, StyleFlow, Text, parse_direction
from e4ecli.errors import SettingError
from e4ecli.hub.directions import DirectionError

if TYPE_CHECKING:
    import torch

    from e4ecli.edits import ops
    from e4ecli.edits.stylespace import StyleStats

SEFA_STRENGTH, SEFA_RANGE = 10.0, (-15.0, 15.0)  # SeFa directions are unit vectors; the e4e paper's edits move about this far


def parsed(spec: str | DirectionSpec) -> DirectionSpec:
    return parse_direction(spec) if isinstance(spec, str) else spec


# -- the early check ------------------------------------------------------------------------------
def check(spec: str | DirectionSpec, pca: str | Path | None = None, text: TextOptions | None = None) -> float | None:
    """Check a direction spec without a model (syntax, files, registry names); returns its default strength when
    known without the model (registry entries, sefa, text), else None. Raises DirectionError."""
    d = parsed(spec)
    if isinstance(d, GanSpace):
        if pca is not None and not Path(pca).is_file():
            registered_pca(pca)
        return None
    if isinstance(d, (Sefa, NpzRow)):
        return SEFA_STRENGTH
    if isinstance(d, Text):
        check_text(text)
        return TEXT_STRENGTH
    if isinstance(d, Registered):
        return registered_edit(d.name).strength
    return None  # styleflow, stylespace, a direction file: no default strength


def check_text(text: TextOptions | None) -> None:
    """A text direction's options: the neutral description, beta, and the files they name (present or not)."""
    check_text_options(text)
    text = text or TextOptions()
    if text.relevance is None:
        raise DirectionError("text directions need the generator's relevance matrix: give {relevance} FILE "
                             "(`e4e directions styleclip -o FILE` computes it; README: Text edits)", settings=True)
    if not Path(text.relevance).is_file():
        raise DirectionError("{relevance} {path}: no such file (`e4e directions styleclip -o {path}` computes it)", path=text.relevance)
    if text.clip_weights is not None and not Path(text.clip_weights).is_file():
        raise DirectionError("{clip_weights} {path}: no such file", path=text.clip_weights)


def registered_pca(name: str | Path):
    """The registry's PCA entry named `name`; DirectionError listing the registered PCAs otherwise."""
    from e4ecli.hub import directions as hub

    registry = hub.load_registry()
    if str(name) in registry and registry[str(name)].kind == "pca":
        return registry[str(name)]
    raise DirectionError("{pca} {name}: neither an existing file nor a registered PCA ({names})", name=name,
                         names=", ".join(n for n, e in registry.items() if e.kind == "pca"))


def registered_edit(name: str):
    """The registry entry of an edit named `name` (not a PCA file); DirectionError otherwise."""
    from e4ecli.hub import directions as hub

    entry = hub.lookup(name)
    if entry.kind == "pca":
        raise DirectionError("'{name}' is a PCA file, not an edit; use {direction} ganspace:COMP:START:END {pca} {name}", name=name)
    return entry


# -- resolving --------------------------------------------------------------------------------------
def resolve(spec: str | DirectionSpec, generator, *, pca: str | Path | None = None, domain_name: str = "ffhq_encode",
            sefa_cache_key: str | None = None, download: bool = True, force: bool = False, text: TextOptions | None = None) -> Edit:
    """A direction spec -> Edit for `generator` (used for SeFa and for shape checks). `text`: the options of
    text:... specs (CLIP, relevance file, neutral prompt, beta). A registered direction of another domain than
    `domain_name`'s raises OtherDomain unless `force`."""
    from e4ecli.domains import domain_for
    from e4ecli.hub import directions as hub

    def fetch(entry):
        return hub.fetch(entry, download=download)

    d = parsed(spec)
    if isinstance(d, GanSpace):
        edit = Edit(d.label, "ganspace", styles=tuple(range(d.start, d.end)), pca=resolve_pca(pca, domain_name, fetch), component=d.component, spec=d)
    elif isinstance(d, StyleFlow):
        edit = Edit(d.label, "styleflow", domain="ffhq", spec=d)
    elif isinstance(d, Sefa):
        try:
            result = sefa_cached(generator, d.layers, sefa_cache_key)
        except ValueError as e:
            raise DirectionError(f"direction {d.spec!r}: {e}") from None
        if not 0 <= d.k < result.directions.shape[0]:
            raise DirectionError(f"direction {d.spec!r}: K must be in 0..{result.directions.shape[0] - 1}")
        edit = Edit(d.label, "sefa", SEFA_STRENGTH, SEFA_RANGE, direction=result.directions[d.k], styles=result.layers, spec=d)
    elif isinstance(d, Channel):
        from e4ecli.edits import stylespace as ss

        stats = style_stats_cached(generator, sefa_cache_key)
        offsets = ss.channel_direction(generator.style_channels(), d.layer, d.channel, stats.std, d.spec)
        edit = Edit(d.label, "stylespace", s_direction=offsets, spec=d)
    elif isinstance(d, Text):
        offsets, settings = text_direction(d, generator, text, domain_short=domain_for(domain_name).short,
                                           stats_key=sefa_cache_key, download=download, force=force)
        edit = Edit(d.label, "text", TEXT_STRENGTH, TEXT_RANGE, s_direction=offsets, settings=settings, spec=d)
    elif isinstance(d, NpzRow):
        edit = _npz_row(d)
    elif isinstance(d, DirectionFile):
        edit = Edit(d.label, "interfacegan", direction=hub.load_direction(d.path), spec=d)
    else:
        edit = replace(_registry_edit(d.name, fetch), spec=d)
        model_domain = domain_for(domain_name).short
        if edit.domain not in (None, "", "any", model_domain) and not force:
            raise OtherDomain(d.name, edit.domain, model_domain)
    edit.check(generator.n_latent, generator.style_dim)
    return edit


def load_pca(path: str | Path) -> ops.PCA:
    """A GANSpace PCA file -> ops.PCA (its layout checked)."""
    from e4ecli.edits.ops import PCA
    from e4ecli.hub import directions as hub

    try:
        return PCA.from_published(hub.read_pca(path))
    except ValueError as e:
        if isinstance(e, DirectionError):
            raise
        raise DirectionError(f"{path}: {e}") from None


def resolve_pca(pca: str | Path | None, domain_name: str, fetch: Callable) -> ops.PCA:
    """The PCA file or registry name `pca`, else the registered PCA of the model's domain."""
    from e4ecli.hub import directions as hub

    if pca is not None:
        if Path(pca).is_file():
            return load_pca(pca)
        return load_pca(fetch(registered_pca(pca)))
    entry = hub.pca_for_domain(domain_name)
    if entry is None:
        raise DirectionError("no registered GANSpace PCA for the model's domain '{domain}'; give {pca} FILE "
                             "(`e4e directions ganspace` makes one)", domain=domain_name)
    return load_pca(fetch(entry))


def _registry_edit(name: str, fetch: Callable) -> Edit:
    from e4ecli.hub import directions as hub

    entry = registered_edit(name)
    styles = tuple(range(*entry.styles)) if entry.styles else None
    if entry.kind == "interfacegan":
        d = hub.load_direction(fetch(entry))
        return Edit(name, "interfacegan", entry.strength, entry.range, entry.domain, direction=d, styles=styles)
    pca_entry = hub.lookup(entry.pca)  # type: ignore[arg-type]
    return Edit(name, "ganspace", entry.strength, entry.range, entry.domain, styles=styles, pca=load_pca(fetch(pca_entry)),
                component=entry.component)


def _npz_row(d: NpzRow) -> Edit:
    """Row K of an .npz of directions (as `e4e directions sefa` writes: directions (k, 512), layers)."""
    import torch

    from e4ecli.hub import directions as hub

    path, k, spec = d.path, d.row, d.spec
    data = hub.read_array(path)
    arrays = {n: v for n, v in data.items() if v.ndim == 2}
    rows = data.get("directions", next(iter(arrays.values())) if len(arrays) == 1 else None)
    if rows is None or rows.ndim != 2:
        raise DirectionError(f"{spec}: {path.name} holds no 'directions' array of rows (found {', '.join(data) or 'nothing'})")
    if not 0 <= k < rows.shape[0]:
        raise DirectionError(f"{spec}: row {k} out of range ({path.name} has rows 0..{rows.shape[0] - 1})")
    row = rows[k].float()
    if not torch.isfinite(row).all():
        raise DirectionError(f"{spec}: row {k} contains NaN or infinite values")
    layers = tuple(int(v) for v in data["layers"].reshape(-1)) if "layers" in data else None
    return Edit(spec, "sefa", SEFA_STRENGTH, SEFA_RANGE, direction=row, styles=layers, spec=d)


# -- what is computed once per checkpoint (in memory, and on disk with a checkpoint hash) ----------------
_SEFA_MEMO: dict[Path, ops.Sefa] = {}  # by cache file: one per checkpoint hash, layers and cache folder
_STATS_MEMO: dict[Path, StyleStats] = {}


def sefa_cached(generator, layers: str, cache_key: str | None) -> ops.Sefa:
    """ops.sefa, cached in memory and (with a checkpoint hash as cache_key) on disk under
    `$E4E_HOME/sefa/<hash>-<layers>.npz`. Without a key it is computed every time."""
    import numpy as np
    import torch

    from e4ecli.edits import ops
    from e4ecli.hub import directions as hub

    chosen = tuple(ops.parse_layers(layers, len(ops.styled_convs(generator))))
    if cache_key is None:
        return ops.sefa(generator, chosen)
    tag = "_".join(map(str, chosen))
    path = hub.cached_path("sefa", cache_key, tag)
    if path in _SEFA_MEMO:
        return _SEFA_MEMO[path]
    result = None
    z = hub.read_cached("sefa", cache_key, tag)
    if z is not None and {"layers", "eigenvalues", "directions"} <= set(z) and tuple(int(x) for x in z["layers"]) == chosen:
        result = ops.Sefa(torch.from_numpy(z["eigenvalues"]), torch.from_numpy(z["directions"]), chosen)
    if result is None:
        result = ops.sefa(generator, chosen)
        hub.write_cached("sefa", cache_key, tag, eigenvalues=result.eigenvalues.numpy(), directions=result.directions.numpy(),
                         layers=np.array(chosen))
    _SEFA_MEMO[path] = result
    return result


def style_stats_cached(generator, cache_key: str | None) -> StyleStats:
    """edits.stylespace.style_stats, cached in memory and (with a checkpoint hash as cache_key) on disk under
    `$E4E_HOME/stylespace/<hash>-<samples>.npz` (like SeFa's cache)."""
    import numpy as np
    import torch

    from e4ecli.edits import stylespace as ss
    from e4ecli.hub import directions as hub

    if cache_key is None:
        return ss.style_stats(generator)
    tag = str(ss.STATS_SAMPLES)
    path = hub.cached_path("stylespace", cache_key, tag)
    if path in _STATS_MEMO:
        return _STATS_MEMO[path]
    channels = generator.style_channels()
    stats = None
    z = hub.read_cached("stylespace", cache_key, tag)
    if z is not None and "mean" in z and "std" in z:
        mean, std = z["mean"], z["std"]
        if mean.shape == std.shape == (sum(channels),) and np.isfinite(mean).all() and np.isfinite(std).all():
            cuts = np.cumsum(channels)[:-1]
            stats = ss.StyleStats(tuple(torch.from_numpy(m.copy()) for m in np.split(mean, cuts)),
                                  tuple(torch.from_numpy(s.copy()) for s in np.split(std, cuts)))
    if stats is None:
        stats = ss.style_stats(generator)
        hub.write_cached("stylespace", cache_key, tag, mean=torch.cat(stats.mean).numpy(), std=torch.cat(stats.std).numpy(),
                         channels=np.array(channels))
    _STATS_MEMO[path] = stats
    return stats


# -- text directions: CLIP and the direction ----------------------------------------------------------
_CLIP_MEMO: dict[tuple, object] = {}
_EMBED_MEMO: dict[tuple, torch.Tensor] = {}


def clip_cached(weights: Path | None, device: str, download: bool = True):
    """hub.clip.load_clip, once per (file, device) in this process."""
    from e4ecli.hub.clip import load_clip
    from e4ecli.hub.types import CheckpointError

    key = (str(weights) if weights else None, str(device))
    if key not in _CLIP_MEMO:
        try:
            _CLIP_MEMO[key] = load_clip(weights, device, download=download)
        except CheckpointError as e:  # its settings stay named for the interface to word (e4ecli.errors)
            raise (DirectionError(e.template, settings=True, **e.values) if isinstance(e, SettingError) and e.template else
                   DirectionError(str(e))) from None
    return _CLIP_MEMO[key]


def embedding_cached(clip, prompt: str) -> torch.Tensor:
    from e4ecli.edits.stylespace import prompt_embedding

    key = (clip.identity, prompt)
    if key not in _EMBED_MEMO:
        _EMBED_MEMO[key] = prompt_embedding(clip.encode_text, prompt).cpu()
    return _EMBED_MEMO[key]


def text_direction(d: Text, generator, text: TextOptions | None, *, domain_short: str, stats_key: str | None,
                   download: bool = True, force: bool = False) -> tuple[tuple[torch.Tensor, ...], dict]:
    """`text:TARGET` -> (per-layer style offsets at strength 1: StyleCLIP's global direction x the per-channel std,
    the settings that made it: prompt, neutral, beta, CLIP and relevance file ids)."""
    from e4ecli.edits import stylespace as ss
    from e4ecli.files.provenance import content_id
    from e4ecli.hub.directions import read_relevance

    text = text or TextOptions()
    check_text(text)
    neutral = clean_prompt(text.neutral, "neutral") if text.neutral is not None else neutral_for(domain_short)
    rel = read_relevance(text.relevance)  # type: ignore[arg-type]
    ss.check_relevance(rel, generator, rel.matrix.shape[1], domain_short, force)  # the layout, before CLIP loads
    clip = clip_cached(text.clip_weights, text.device, download)
    ss.check_relevance(rel, generator, clip.dim, domain_short, force)
    for setting, prompt in ((None, d.prompt), ("neutral", neutral)):
        ss.check_token_length(prompt, clip.encode, setting)
    delta = ss.text_delta(embedding_cached(clip, d.prompt), embedding_cached(clip, neutral), d.label)
    flat = ss.global_direction(rel.matrix, delta, text.beta, d.label)
    stats = style_stats_cached(generator, stats_key)
    offsets = ss.split_conv(flat, generator.style_channels(), ss.conv_layers(generator), stats.std)
    settings = {"prompt": d.prompt, "neutral": neutral, "beta": text.beta, "clip": clip.identity,
                "relevance": content_id(Path(text.relevance)), "channels": int((flat != 0).sum())}  # type: ignore[arg-type]
    return offsets, settings

