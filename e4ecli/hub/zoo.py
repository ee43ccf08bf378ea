"""The weights zoo: published checkpoints by name, fetched once into a local cache.

The registry is data, not code: `zoo.toml` next to this module lists each file's name, the file
name the e4e repository uses, its mirrors and (where known) its sha256 and size. Files land in
`cache_dir()` (`$E4E_HOME`, else `$XDG_CACHE_HOME/e4ecli`, else `~/.cache/e4ecli`).

Downloads, mirrors (`$E4E_MIRROR`, `E4E_URL_<NAME>`), verification (the published sha256 and
size, else the sha256 kept at the first download) and locking are `hub.fetch`'s; `check_content`
says when a loaded file does not hold what its zoo name promises.

Public API: `cache_dir`, `entries`, `resolve`, `download`, `Entry`, `ZooError` (plus the helpers
`lookup`, `is_cached`, `offline_message`, `load_registry`, `parse_registry`, `check_content`).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from e4ecli.hub import fetch as fetcher
from e4ecli.hub.fetch import FetchError, human_size, sha256_of, source_url  # noqa: F401 -- re-exported

KINDS = ("encoder", "generator", "identity", "flow", "parser", "data", "clip")
_GDRIVE = fetcher.GDRIVE
_DRIVE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")

ZooError = FetchError  # a zoo name, source or download that cannot be used; the message says what to do


@dataclass(frozen=True)
class Entry:
    """One published file of the zoo (a table of zoo.toml)."""

    name: str
    filename: str
    kind: str
    domain: str
    description: str
    sources: tuple[str, ...]
    sha256: str | None = None
    size: int | None = None  # exact published size in bytes, checked
    approx_size: int | None = None  # approximate published size in bytes, shown as such, never checked
    resolution: int | None = None  # the generator's output size in pixels (encoders and generators)
    licence: str | None = None  # shown by `e4e weights list` (recorded where it restricts use)

    @property
    def path(self) -> Path:
        """Where the file lives once cached (follows `E4E_HOME` at the time of the call)."""
        return cache_dir() / self.filename


# -- the registry -----------------------------------------------------------------------------
def parse_registry(text: str, origin: str = "zoo.toml") -> dict[str, Entry]:
    """Parse and validate registry TOML: one table per entry, keyed by the entry's name."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ZooError(f"{origin}: not valid TOML ({e})") from None
    registry: dict[str, Entry] = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise ZooError(f"{origin}: '{name}' must be a table of fields")
        registry[name] = _entry_from_table(name, table, origin)
    return registry


def _entry_from_table(name: str, table: dict[str, Any], origin: str) -> Entry:
    """Build one Entry, naming the entry and the field in every complaint."""
    where = f"{origin}: [{name}]"
    known = {"filename", "kind", "domain", "description", "sources", "sha256", "size", "approx_size", "resolution", "licence"}
    if extra := sorted(set(table) - known):
        raise ZooError(f"{where}: unknown field(s) {', '.join(extra)}")
    for field in ("filename", "kind", "domain", "description"):
        if not isinstance(table.get(field), str) or not table[field]:
            raise ZooError(f"{where}: '{field}' must be a non-empty string")
    if table["kind"] not in KINDS:
        raise ZooError(f"{where}: kind must be one of {', '.join(KINDS)}, not '{table['kind']}'")
    if "/" in table["filename"] or "\\" in table["filename"]:
        raise ZooError(f"{where}: filename must be a bare file name")
    sources = table.get("sources")
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) for s in sources):
        raise ZooError(f"{where}: 'sources' must be a non-empty list of strings")
    for source in sources:
        _check_source(source, where)
    sha256 = table.get("sha256")
    if sha256 is not None and not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-fA-F]{64}", sha256)):
        raise ZooError(f"{where}: sha256 must be 64 hex digits")
    for field in ("size", "approx_size", "resolution"):
        value = table.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise ZooError(f"{where}: {field} must be a positive integer")
    licence = table.get("licence")
    if licence is not None and (not isinstance(licence, str) or not licence):
        raise ZooError(f"{where}: licence must be a non-empty string")
    return Entry(
        name=name,
        filename=table["filename"],
        kind=table["kind"],
        domain=table["domain"],
        description=table["description"],
        sources=tuple(sources),
        sha256=sha256.lower() if sha256 else None,
        size=table.get("size"),
        approx_size=table.get("approx_size"),
        resolution=table.get("resolution"),
        licence=licence,
    )


def _check_source(source: str, where: str) -> None:
    """Accept http(s) URLs, `gdrive:<id>` and `hf:<owner>/<repo>/<path>`; anything else is a ZooError naming `where`."""
    fetcher.check_source(source, where)


def load_registry() -> dict[str, Entry]:
    """Read the packaged zoo.toml. Tests replace this function to point the zoo elsewhere."""
    text = resources.files("e4ecli.hub").joinpath("zoo.toml").read_text(encoding="utf-8")
    return parse_registry(text)


def entries() -> dict[str, Entry]:
    """All zoo entries by name, in registry order."""
    return dict(load_registry())


def lookup(name: str) -> Entry:
    """The entry called `name` (or whose file name is `name`); ZooError listing the known names."""
    registry = entries()
    if name in registry:
        return registry[name]
    for entry in registry.values():
        if entry.filename == name:
            return entry
    raise ZooError(f"unknown weights '{name}'; known names: {', '.join(registry) or '(none)'}")


# -- the cache --------------------------------------------------------------------------------
def cache_dir() -> Path:
    """`$E4E_HOME`, else `$XDG_CACHE_HOME/e4ecli`, else `~/.cache/e4ecli` (not created here)."""
    home = os.environ.get("E4E_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec says relative values are to be ignored
        return Path(xdg) / "e4ecli"
    return Path.home() / ".cache" / "e4ecli"


def is_cached(entry: Entry) -> bool:
    """True when the entry's file is at its cache path (with the recorded size, when known)."""
    path = entry.path
    return path.is_file() and (entry.size is None or path.stat().st_size == entry.size)


def remote(entry: Entry, sources: tuple[str, ...] | None = None) -> fetcher.Remote:
    """The entry as the fetcher sees it (its sources, or `sources` instead)."""
    return fetcher.Remote(
        name=f"'{entry.name}'", filename=entry.filename, sources=sources or entry.sources, sha256=entry.sha256,
        size=entry.size, extra_hint=(f"Or set E4E_HOME to a folder that already holds {entry.filename}, "
                                     f"or run `e4e weights download {entry.name}` where the internet is reachable.",))


def offline_message(entry: Entry, headline: str | None = None) -> list[str]:
    """Exactly which file to put where, for machines that cannot (or may not) download it (the message's lines)."""
    if headline is None and not entry.path.is_file():
        headline = f"weights '{entry.name}' ({entry.filename}) are not in the cache ({cache_dir()})."
    return fetcher.offline_message(remote(entry), entry.path, headline)


def published_size(entry: Entry) -> str:
    """The size `e4e weights list` shows: exact when recorded, '~1.1 GiB' when only approximately known."""
    if entry.size is not None:
        return human_size(entry.size)
    return f"~{human_size(entry.approx_size)}" if entry.approx_size else "?"


# -- resolving --------------------------------------------------------------------------------
def resolve(name_or_path: str, download: bool = True, progress: bool = True) -> Path:
    """An existing file path as-is; a zoo name as its cached file (verified), downloaded if missing.

    With download=False a missing file raises ZooError with the offline message. A string that
    is neither an existing file nor a zoo name raises ZooError listing the known names.
    """
    as_path = Path(name_or_path).expanduser()
    if as_path.is_file():
        entry = cached_entry(as_path)
        if entry is not None:  # a zoo file given by its path is checked like one given by name
            fetcher.verify_cached(remote(entry), as_path)
        return as_path
    try:
        entry = lookup(name_or_path)
    except ZooError as e:
        raise ZooError(f"'{name_or_path}' is neither an existing file nor a zoo name: {e}") from None
    if not download and not is_cached(entry):
        raise ZooError(offline_message(entry), name=entry.name, dest=entry.path)
    return fetcher.fetch(remote(entry, _sources_for(entry, None)), entry.path, download=download, progress=progress)


def cached_entry(path: Path) -> Entry | None:
    """The zoo entry whose cache file `path` is, if it is one."""
    try:
        resolved = path.resolve()
        return next((e for e in entries().values() if e.path.resolve() == resolved), None)
    except (OSError, ZooError):
        return None


# -- downloading ------------------------------------------------------------------------------
def override_env_var(name: str) -> str:
    """The environment variable that overrides an entry's sources: E4E_URL_<NAME upper>."""
    return "E4E_URL_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def download(name: str, url: str | None = None, force: bool = False, *, progress: bool = True) -> Path:
    """Fetch a zoo entry into the cache and return its path.

    `url` (or the environment variable `E4E_URL_<NAME>`) replaces the registry's sources: an
    http(s) URL, a Google Drive link, `gdrive:<id>` or `hf:<owner>/<repo>/<path>`. Without `force`
    a cached file is verified and returned; with it the file is fetched again from scratch.
    """
    entry = lookup(name)
    return fetcher.fetch(remote(entry, _sources_for(entry, url)), entry.path, force=force, progress=progress)


def _sources_for(entry: Entry, url: str | None) -> tuple[str, ...]:
    """The sources to try, in order: the url argument, else the env override, else the registry's."""
    env_var = override_env_var(entry.name)
    override, origin = (url, "the url given") if url else (os.environ.get(env_var), env_var)
    if not override:
        return entry.sources
    return (check_override(override, origin),)


def check_override(url: str, where: str) -> str:
    """A source that replaces the registry's (a Drive share link becomes `gdrive:<id>`); ZooError naming `where`
    when it is no source the fetcher reads."""
    source = _drive_link_to_source(url.strip())
    _check_source(source, where)
    return source


def _drive_link_to_source(url: str) -> str:
    """Google Drive share links become `gdrive:<id>`, so gdown handles the confirm page."""
    if not any(f"://{host}/" in url for host in _DRIVE_HOSTS):
        return url
    match = re.search(r"/d/([\w-]+)", url) or re.search(r"[?&]id=([\w-]+)", url)
    return _GDRIVE + match.group(1) if match else url


def content_problem(path: Path, kind: str, resolution: int, domain_short: str | None) -> str | None:
    """Why the file at `path`, if it is a zoo entry's cache file, does not hold what the entry's name promises.

    kind: 'encoder' or 'generator' (what the file holds); resolution: its generator's output size;
    domain_short: its domain ('ffhq', 'cars', ...; None when the file does not say). None: it fits, or
    `path` is not a zoo file.
    """
    entry = cached_entry(path)
    if entry is None or entry.kind not in ("encoder", "generator"):
        return None
    found, promised = [], []
    if kind != entry.kind:
        found.append(("an " if kind[0] in "aeiou" else "a ") + kind)
        promised.append(("an " if entry.kind[0] in "aeiou" else "a ") + entry.kind)
    if entry.resolution is not None and resolution != entry.resolution:
        found.append(f"a {resolution} px generator")
        promised.append(f"a {entry.resolution} px generator")
    if domain_short is not None and entry.domain not in ("any", domain_short):
        found.append(f"the {domain_short} domain")
        promised.append(f"the {entry.domain} domain")
    if not found:
        return None
    return (f"{path} is cached as the zoo's '{entry.name}' ({entry.description}), which has {', '.join(promised)}, but "
            f"this file has {', '.join(found)}. Delete it and run `e4e weights download {entry.name}`, or keep your own "
            "file under another name and pass its path.")
