"""Published editing directions: the registry (`directions/registry.toml`), the cache, loading.

The registry is data shipped with the package (`directions/` at the repository root, packaged as
`e4ecli/directions/`). Published files are fetched on first use through `hub.fetch` (mirrors,
the recorded sha256, atomic rename, a lock) into `$E4E_HOME/directions/` (the weights cache's
folder). A folder named by `$E4E_DIRECTIONS` is looked in first (offline machines, tests);
its files must match the recorded sha256 too.

Direction files are read with `safe_load` (`torch.load(weights_only=True)`) or
`np.load(allow_pickle=False)`; nothing in them is ever executed. Also here: the arrays cached per checkpoint
(`read_cached` / `write_cached`: SeFa factorisations, StyleSpace channel statistics) and StyleCLIP relevance
files (`read_relevance`). What is made of the arrays (PCA, edits) is `edits/`'s: this module only reads and writes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from e4ecli.errors import SettingError
from e4ecli.hub.fetch import FetchError, Remote, sha256_of
from e4ecli.hub.fetch import fetch as fetch_file
from e4ecli.hub.zoo import cache_dir as zoo_cache_dir

KINDS = ("interfacegan", "pca", "ganspace")
ENV_DIR = "E4E_DIRECTIONS"
MAX_ARRAY_ELEMENTS = 1 << 26  # 64 M values: far beyond any direction or PCA (a 512-d PCA holds ~263 k)
REGISTRY_FILE = "registry.toml"


class DirectionError(SettingError):
    """A direction name, file or download that cannot be used; the message says what to do (the settings it
    names, {pca}, {neutral}, ..., spelled by the interface that shows it: e4ecli.errors)."""


@dataclass(frozen=True)
class DirectionEntry:
    """One table of the registry."""

    name: str
    kind: str  # interfacegan | pca | ganspace
    domain: str
    description: str
    url: str | None = None
    sha256: str | None = None
    styles: tuple[int, int] | None = None  # [start, end); None: every style
    strength: float | None = None
    range: tuple[float, float] | None = None
    pca: str | None = None  # ganspace: the registry name of its PCA file
    component: int | None = None  # ganspace

    @property
    def filename(self) -> str | None:
        return self.url.rsplit("/", 1)[-1] if self.url else None

    @property
    def has_file(self) -> bool:
        return self.url is not None


# -- the registry -------------------------------------------------------------------------------
def registry_path() -> Path:
    """The packaged registry file (falls back to the source tree's `directions/`)."""
    from importlib import resources

    try:
        packaged = resources.files("e4ecli").joinpath("directions").joinpath(REGISTRY_FILE)
        if packaged.is_file():
            return Path(str(packaged))
    except (FileNotFoundError, NotADirectoryError):
        pass
    source_tree = Path(__file__).resolve().parents[2] / "directions" / REGISTRY_FILE
    if source_tree.is_file():
        return source_tree
    raise DirectionError(f"the directions registry ({REGISTRY_FILE}) is missing from this installation; reinstall e4ecli")


def _number_pair(value: Any, where: str, field: str, integer: bool = False) -> tuple:
    kind = int if integer else (int, float)
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)):
        raise DirectionError(f"{where}: '{field}' must be a list of two {'integers' if integer else 'numbers'}")
    return (int(value[0]), int(value[1])) if integer else (float(value[0]), float(value[1]))


def _entry(name: str, table: dict, origin: str) -> DirectionEntry:
    where = f"{origin}: [{name}]"
    kind = table.get("kind")
    if kind not in KINDS:
        raise DirectionError(f"{where}: kind must be one of {', '.join(KINDS)}")
    fields: dict[str, Any] = {"name": name, "kind": kind, "domain": str(table.get("domain", "any")),
                              "description": str(table.get("description", ""))}
    if kind in ("interfacegan", "pca"):
        url, sha = table.get("url"), table.get("sha256")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise DirectionError(f"{where}: 'url' must be an http(s) URL")
        if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdefABCDEF" for c in sha)):
            raise DirectionError(f"{where}: 'sha256' must be 64 hex digits")
        fields.update(url=url, sha256=sha.lower())
    if kind in ("interfacegan", "ganspace"):
        styles = table.get("styles", "all")
        fields["styles"] = None if styles == "all" else _number_pair(styles, where, "styles", integer=True)
        if not isinstance(table.get("strength"), (int, float)):
            raise DirectionError(f"{where}: 'strength' (the default strength) must be a number")
        fields["strength"] = float(table["strength"])
        fields["range"] = _number_pair(table.get("range"), where, "range")
    if kind == "ganspace":
        if not isinstance(table.get("pca"), str) or not isinstance(table.get("component"), int):
            raise DirectionError(f"{where}: a ganspace edit needs 'pca' (a registry name) and 'component' (an integer)")
        if fields["styles"] is None:
            raise DirectionError(f"{where}: a ganspace edit needs styles = [start, end]")
        fields.update(pca=table["pca"], component=int(table["component"]))
    return DirectionEntry(**fields)


def parse_registry(text: str, origin: str = REGISTRY_FILE) -> dict[str, DirectionEntry]:
    """Registry TOML -> entries by name, validated (ganspace edits must name a registered PCA)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DirectionError(f"{origin}: not valid TOML ({e})") from None
    entries = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise DirectionError(f"{origin}: '{name}' must be a table")
        entries[name] = _entry(name, table, origin)
    for e in entries.values():
        if e.kind == "ganspace" and (e.pca not in entries or entries[e.pca].kind != "pca"):
            raise DirectionError(f"{origin}: [{e.name}] names pca = '{e.pca}', which is not a pca entry")
    return entries


def load_registry() -> dict[str, DirectionEntry]:
    path = registry_path()
    return parse_registry(path.read_text(encoding="utf-8"), str(path))


def lookup(name: str) -> DirectionEntry:
    registry = load_registry()
    if name in registry:
        return registry[name]
    edits = [n for n, e in registry.items() if e.kind != "pca"]
    raise DirectionError(f"unknown direction '{name}'; registered: {', '.join(edits)} (or give a .pt/.npy file, "
                         "ganspace:COMP:START:END or sefa:K[:LAYERS]; see `e4e directions list`)")


def pca_for_domain(domain_name: str) -> DirectionEntry | None:
    """The registry PCA for a model domain ('ffhq_encode' -> ffhq_pca), if there is one."""
    from e4ecli.domains import domain_for

    short = domain_for(domain_name).short
    for e in load_registry().values():
        if e.kind == "pca" and e.domain == short:
            return e
    return None


# -- the cache ----------------------------------------------------------------------------------
def cache_root() -> Path:
    """The weights cache (`$E4E_HOME`, else `$XDG_CACHE_HOME/e4ecli`, else `~/.cache/e4ecli`)."""
    return zoo_cache_dir()


def cache_dir() -> Path:
    return cache_root() / "directions"


def remote(entry: DirectionEntry) -> Remote:
    assert entry.url and entry.filename
    return Remote(f"direction file {entry.filename} ('{entry.name}')", entry.filename, (entry.url,), entry.sha256,
                  extra_hint=(f"Or put it in a folder named by ${ENV_DIR}.",))


def local_copy(entry: DirectionEntry) -> Path | None:
    """The entry's file in $E4E_DIRECTIONS or the cache, if present (not verified here)."""
    assert entry.filename
    env = os.environ.get(ENV_DIR)
    candidates = ([Path(env).expanduser() / entry.filename] if env else []) + [cache_dir() / entry.filename]
    for path in candidates:
        if path.is_file():
            return path
    return None


def fetch(entry: DirectionEntry, download: bool = True) -> Path:
    """The entry's verified local file: from $E4E_DIRECTIONS, the cache, or downloaded into the cache."""
    if not entry.has_file:
        raise DirectionError(f"'{entry.name}' is a {entry.kind} edit, not a file")
    found = local_copy(entry)
    try:
        if found is not None and found.parent != cache_dir():
            if sha256_of(found) != entry.sha256:
                raise DirectionError(f"{found} is not the published {entry.filename} (sha256 {sha256_of(found)}, expected "
                                     f"{entry.sha256}); delete it to download it again from {entry.url}")
            return found
        return fetch_file(remote(entry), cache_dir() / entry.filename, download=download, progress=False)  # type: ignore[operator]
    except FetchError as e:
        raise DirectionError(str(e)) from None


# -- reading direction files --------------------------------------------------------------------
def _npy_shape(f) -> tuple[int, ...] | None:
    """The shape in an .npy header (None when the member is not an .npy; np.load reports that)."""
    from numpy.lib import format as npy_format

    try:
        version = npy_format.read_magic(f)
        read = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, _, _ = read(f)
    except Exception:  # noqa: BLE001 -- numpy's header parser raises ValueError, SyntaxError, TokenError, ...
        return None
    return tuple(int(s) for s in shape)


def read_array(path: str | Path) -> Any:
    """A .pt (tensor or dict of tensors, weights_only) or .npy/.npz (no pickles) file -> its content.

    .npz files become a dict of tensors; .npy files a tensor.
    """
    import numpy as np
    import torch

    from e4ecli.hub.checkpoints import CheckpointError, safe_load

    from e4ecli.files.latents import LatentError, read_header

    path = Path(path)
    if not path.is_file():
        raise DirectionError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            shape, _ = read_header(path)  # before np.load: a few bytes can claim terabytes
            if np.prod(shape, dtype=np.float64) > MAX_ARRAY_ELEMENTS:
                raise DirectionError(f"{path}: an array of shape {shape} is far too large for a direction")
            return torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32))
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if sum(info.file_size for info in z.zip.infolist()) > 4 * MAX_ARRAY_ELEMENTS * 8:
                    raise DirectionError(f"{path}: its arrays are far too large for a direction or PCA file")
                total = 0
                for info in z.zip.infolist():  # the .npy headers, before np.load sizes arrays by them
                    with z.zip.open(info) as member:
                        shape = _npy_shape(member)
                    total += int(np.prod(shape, dtype=np.float64)) if shape is not None else 0
                    if total > MAX_ARRAY_ELEMENTS:
                        raise DirectionError(f"{path}: {info.filename} claims an array of shape {shape}, far too large for a direction or PCA file")
                return {k: torch.from_numpy(np.asarray(z[k])) for k in z.files}
        return safe_load(path)
    except CheckpointError as e:
        raise DirectionError(str(e)) from None
    except LatentError as e:
        raise DirectionError(f"{path}: {str(e).replace('latents', 'direction', 1)}") from None
    except DirectionError:
        raise
    except Exception as e:  # noqa: BLE001 -- numpy/zipfile errors on a damaged file (ValueError, TokenError, BadZipFile, MemoryError, ...)
        raise DirectionError(f"{path}: cannot read ({type(e).__name__}: {e}; object arrays are never unpickled)") from None


def load_direction(path: str | Path):
    """A direction file -> float32 tensor ((512,), (1, 512), (n_styles, 512) or (1, n_styles, 512))."""
    import torch

    data = read_array(path)
    if isinstance(data, dict):
        tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
        if len(tensors) != 1:
            raise DirectionError(f"{path}: holds {len(data)} entries ({', '.join(map(str, data))}); a direction file holds one array")
        data = tensors[0]
    if not isinstance(data, torch.Tensor) or not data.is_floating_point():
        raise DirectionError(f"{path}: a direction must be a float tensor or array, found {type(data).__name__}")
    if not torch.isfinite(data).all():
        raise DirectionError(f"{path}: the direction contains NaN or infinite values")
    return data.float()


def read_pca(path: str | Path) -> dict:
    """A GANSpace PCA file ({'mean', 'comp', 'std'} as .pt or .npz) -> its arrays (tensors) by name; the shapes are
    edits.ops.PCA.from_published's to check."""
    data = read_array(path)
    if not isinstance(data, dict):
        raise DirectionError(f"{path}: a GANSpace PCA file holds a dict with 'mean', 'comp' and 'std', found {type(data).__name__}")
    return data


# -- arrays cached per checkpoint -------------------------------------------------------------------
def cached_path(kind: str, key: str, tag: str) -> Path:
    """`$E4E_HOME/<kind>/<key>-<tag>.npz` (key: a checkpoint hash, made safe for a file name; tag: what else the
    arrays depend on, e.g. SeFa's layers '2_3_4_5')."""
    return cache_root() / kind / ("".join(c if c.isalnum() else "_" for c in key) + f"-{tag}.npz")


def read_cached(kind: str, key: str, tag: str) -> dict | None:
    """The arrays (numpy) cached under kind/key, or None when there are none or the file is damaged (it is then
    recomputed and replaced)."""
    import numpy as np

    path = cached_path(kind, key, tag)
    try:
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as z:
            return {name: z[name] for name in z.files}
    except Exception:  # noqa: BLE001 -- a damaged file (OSError, ValueError, BadZipFile, EOFError, ...): a cache is only an optimisation
        return None


def write_cached(kind: str, key: str, tag: str, **arrays) -> None:
    """Cache numpy arrays under kind/key-tag (atomically); an unwritable cache folder is not an error."""
    import numpy as np

    from e4ecli.files.batch import atomic_output

    try:
        with atomic_output(cached_path(kind, key, tag)) as tmp:
            np.savez(tmp, **arrays)
    except OSError:
        pass  # the cache is an optimisation


# -- StyleCLIP relevance files ---------------------------------------------------------------------
RELEVANCE_FORMAT = "e4ecli-styleclip-relevance-1"


@dataclass
class Relevance:
    """The relevance matrix (rows: conv channels in layer order) and what it was made for."""

    matrix: Any  # torch.Tensor (C, D)
    channels: tuple[int, ...]  # channels of each conv layer, in order
    domain: str | None = None  # the model domain's short name, when recorded
    path: Path | None = None


def read_relevance(path: str | Path) -> Relevance:
    """A relevance file: `e4e directions styleclip`'s .npz (fs3, channels, domain) or StyleCLIP's bare fs3.npy
    (its layout then only known by its row count). DirectionError naming the file otherwise."""
    import numpy as np
    import torch

    path = Path(path)
    if not path.is_file():
        raise DirectionError(f"relevance file {path}: no such file (`e4e directions styleclip -o {path.name}` computes one)")
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                if "fs3" not in data.files:
                    raise DirectionError(f"relevance file {path}: holds no 'fs3' array (found {', '.join(data.files) or 'nothing'})")
                matrix = data["fs3"]
                channels = tuple(int(c) for c in data["channels"]) if "channels" in data.files else None
                domain = str(data["domain"]) if "domain" in data.files else None
                if "done" in data.files and not bool(np.all(data["done"])):
                    raise DirectionError(f"relevance file {path}: unfinished ({int(np.sum(data['done']))} of {data['done'].size} "
                                         "channels); run `e4e directions styleclip` again with the same -o to finish it")
        else:
            matrix, channels, domain = data, None, None
    except DirectionError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise DirectionError(f"relevance file {path}: not a readable .npy/.npz ({e})") from None
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.floating):
        raise DirectionError(f"relevance file {path}: 'fs3' must be a 2-d float matrix (channels x CLIP dims), got {matrix.dtype} {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise DirectionError(f"relevance file {path}: contains NaN or infinite values")
    if channels is not None and sum(channels) != matrix.shape[0]:
        raise DirectionError(f"relevance file {path}: its layout names {sum(channels)} channels but it has {matrix.shape[0]} rows")
    return Relevance(torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32)), channels or (matrix.shape[0],), domain, path)
