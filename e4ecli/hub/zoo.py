"""The weights zoo: published checkpoints by name, fetched once into a local cache.

The registry is data, not code: `zoo.toml` next to this module lists each file's name, the file
name the e4e repository uses, its mirrors and (where known) its sha256 and size. Files land in
`cache_dir()` (`$E4E_HOME`, else `$XDG_CACHE_HOME/e4ecli`, else `~/.cache/e4ecli`).

Downloads go to `<cache>/<filename>.part` (plain HTTP(S), resumed with a Range request) or through
gdown for Google Drive ids, are checked against the recorded size and sha256, and only then renamed
into place, so a file at its final path is always complete. A lock file per entry serialises
concurrent downloads of the same file by several processes.

Public API: `cache_dir`, `entries`, `resolve`, `download`, `Entry`, `ZooError` (plus the helpers
`lookup`, `is_cached`, `offline_message`, `load_registry`, `parse_registry`).
"""
from __future__ import annotations

import hashlib
import inspect
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from e4ecli import __version__

KINDS = ("encoder", "generator", "identity")
TIMEOUT_S = 30.0  # seconds to connect and between two reads
CHUNK_BYTES = 1 << 20
USER_AGENT = f"e4ecli/{__version__} (+https://github.com/omertov/encoder4editing weights)"
_GDRIVE = "gdrive:"
_DRIVE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")


class ZooError(RuntimeError):
    """A zoo name, source or download that cannot be used; the message says what to do instead."""


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
    size: int | None = None

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
    known = {"filename", "kind", "domain", "description", "sources", "sha256", "size"}
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
    size = table.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise ZooError(f"{where}: size must be a positive number of bytes")
    return Entry(
        name=name,
        filename=table["filename"],
        kind=table["kind"],
        domain=table["domain"],
        description=table["description"],
        sources=tuple(sources),
        sha256=sha256.lower() if sha256 else None,
        size=size,
    )


def _check_source(source: str, where: str) -> None:
    """Accept `gdrive:<id>` and http(s) URLs; anything else is a ZooError naming `where`."""
    if source.startswith(_GDRIVE):
        if not re.fullmatch(r"[\w-]+", source[len(_GDRIVE):]):
            raise ZooError(f"{where}: '{source}' is not a Google Drive file id")
    elif not re.match(r"https?://[^/\s]+", source):
        raise ZooError(f"{where}: unsupported source '{source}' (use http(s):// URLs or gdrive:<file id>)")


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


def human_size(n: int | None) -> str:
    """1234567 -> '1.2 MiB'; None -> '?'."""
    if n is None:
        return "?"
    if n < 1024:
        return f"{n} B"
    size, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.1f} {unit}"


def source_url(source: str) -> str:
    """A source as a person would open it in a browser."""
    if source.startswith(_GDRIVE):
        return f"https://drive.google.com/file/d/{source[len(_GDRIVE):]}/view"
    return source


def offline_message(entry: Entry, headline: str | None = None) -> str:
    """Exactly which file to put where, for machines that cannot (or may not) download it.

    `headline` replaces the first line, which by default says why the file is not usable.
    """
    path = entry.path
    if headline is None:
        headline = (
            f"weights '{entry.name}': {path} has the wrong size ({path.stat().st_size} bytes, expected {entry.size})."
            if path.is_file()
            else f"weights '{entry.name}' ({entry.filename}) are not in the cache ({cache_dir()})."
        )
    expect = [f"sha256 {entry.sha256}" if entry.sha256 else "sha256 not recorded"]
    if entry.size is not None:
        expect.append(f"size {entry.size} bytes ({human_size(entry.size)})")
    lines = [
        headline,
        f"To work offline, download {entry.filename} from one of:",
        *(f"  {source_url(s)}" for s in entry.sources),
        "and place it at:",
        f"  {path}",
        f"(expected: {', '.join(expect)}).",
        (
            f"Or set E4E_HOME to a folder that already holds {entry.filename}, "
            f"or run `e4e weights download {entry.name}` where the internet is reachable."
        ),
    ]
    return "\n".join(lines)


# -- resolving --------------------------------------------------------------------------------
def resolve(name_or_path: str, download: bool = True, progress: bool = True) -> Path:
    """An existing file path as-is; a zoo name as its cached file, downloaded if missing.

    With download=False a missing file raises ZooError with the offline message. A string that
    is neither an existing file nor a zoo name raises ZooError listing the known names.
    """
    as_path = Path(name_or_path).expanduser()
    if as_path.is_file():
        return as_path
    try:
        entry = lookup(name_or_path)
    except ZooError as e:
        raise ZooError(f"'{name_or_path}' is neither an existing file nor a zoo name: {e}") from None
    if is_cached(entry):
        return entry.path
    if not download:
        raise ZooError(offline_message(entry))
    return _download_entry(entry, _sources_for(entry, None), force=False, progress=progress)


# -- downloading ------------------------------------------------------------------------------
class _SourceFailed(Exception):
    """One source could not deliver the file; the next one is tried."""


def override_env_var(name: str) -> str:
    """The environment variable that overrides an entry's sources: E4E_URL_<NAME upper>."""
    return "E4E_URL_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def download(name: str, url: str | None = None, force: bool = False, *, progress: bool = True) -> Path:
    """Fetch a zoo entry into the cache and return its path.

    `url` (or the environment variable `E4E_URL_<NAME>`) replaces the registry's sources: an
    http(s) URL, a Google Drive link or `gdrive:<id>`. Without `force` a cached file is returned
    as is; with it the file is fetched again from scratch.
    """
    entry = lookup(name)
    return _download_entry(entry, _sources_for(entry, url), force=force, progress=progress)


def _sources_for(entry: Entry, url: str | None) -> tuple[str, ...]:
    """The sources to try, in order: the url argument, else the env override, else the registry's."""
    env_var = override_env_var(entry.name)
    override, origin = (url, "--url") if url else (os.environ.get(env_var), env_var)
    if not override:
        return entry.sources
    override = _drive_link_to_source(override.strip())
    _check_source(override, origin)
    return (override,)


def _drive_link_to_source(url: str) -> str:
    """Google Drive share links become `gdrive:<id>`, so gdown handles the confirm page."""
    if not any(f"://{host}/" in url for host in _DRIVE_HOSTS):
        return url
    match = re.search(r"/d/([\w-]+)", url) or re.search(r"[?&]id=([\w-]+)", url)
    return _GDRIVE + match.group(1) if match else url


def _download_entry(entry: Entry, sources: tuple[str, ...], force: bool, progress: bool) -> Path:
    """Fetch `entry` into the cache under its lock; cache I/O failures become a ZooError."""
    dest = entry.path
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(dest, entry.name, progress):
            if force:
                _discard_partials(dest)
            elif is_cached(entry):  # possibly fetched by another process while we waited
                return dest
            failures = _try_sources(entry, sources, progress)
    except OSError as e:
        raise ZooError(f"cannot write the cache folder {dest.parent} ({e}); set E4E_HOME to a writable folder") from None
    if not failures:
        return dest
    headline = "\n".join([f"could not download '{entry.name}':", *failures])
    raise ZooError(offline_message(entry, headline))


def _try_sources(entry: Entry, sources: tuple[str, ...], progress: bool) -> list[str]:
    """Try each source until one delivers a verified file, which is moved into place.

    Returns one line per failed source (so an empty list means success).
    """
    failures = []
    for source in sources:
        try:
            fetched = _fetch(source, entry, progress)
            _verify(entry, fetched, progress)
        except _SourceFailed as e:
            failures.append(f"  {source}: {e}")
            continue
        os.replace(fetched, entry.path)
        return []
    return failures


def _fetch(source: str, entry: Entry, progress: bool) -> Path:
    """Fetch one source into a staging file next to the destination; return that file."""
    if source.startswith(_GDRIVE):
        return _fetch_gdrive(source[len(_GDRIVE):], entry, progress)
    part = entry.path.with_name(entry.filename + ".part")
    _fetch_http(source, part, entry.size, progress)
    return part


def _discard_partials(dest: Path) -> None:
    """Remove our .part file and gdown's staging files for `dest` (used by force)."""
    for stale in [dest.with_name(dest.name + ".part"), *dest.parent.glob(dest.name + ".gdown*")]:
        stale.unlink(missing_ok=True)


def _verify(entry: Entry, path: Path, progress: bool) -> None:
    """Check the recorded size and sha256; a file that fails is deleted."""
    actual_size = path.stat().st_size
    if entry.size is not None and actual_size != entry.size:
        path.unlink(missing_ok=True)
        raise _SourceFailed(f"size mismatch: expected {entry.size} bytes, got {actual_size}; partial file deleted")
    actual = sha256_of(path)
    if entry.sha256 is not None and actual != entry.sha256:
        path.unlink(missing_ok=True)
        raise _SourceFailed(f"sha256 mismatch: expected {entry.sha256}, got {actual}; downloaded file deleted")
    if entry.sha256 is None and progress:
        print(
            f"note: {entry.name} has no recorded sha256; this copy is sha256 {actual}, size {actual_size}",
            file=sys.stderr,
        )


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _exclusive(dest: Path, name: str, progress: bool) -> Iterator[None]:
    """Hold an exclusive lock on `<dest>.lock` (POSIX flock; a no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; concurrent downloads of one file are not supported
        yield
        return
    with open(dest.with_name(dest.name + ".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                print(f"waiting for another process downloading {name} ...", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# -- plain HTTP(S) ----------------------------------------------------------------------------
def _fetch_http(url: str, part: Path, expected_size: int | None, progress: bool) -> None:
    """Complete `part` from `url`, resuming with a Range request when it already holds bytes."""
    offset = part.stat().st_size if part.is_file() else 0
    if expected_size is not None and offset > expected_size:
        part.unlink()
        offset = 0
    if expected_size is not None and offset == expected_size:
        return  # a previous run got every byte; _verify decides whether they are the right ones
    response = _open(url, offset)
    if response is None:  # 416: the server has nothing past `offset`
        if _range_total(url) == offset:
            return
        part.unlink(missing_ok=True)
        offset = 0
        response = _open(url, 0)
        assert response is not None
    with response:
        start, total = _start_and_total(response, offset)
        if expected_size is not None and total is not None and total != expected_size:
            raise _SourceFailed(f"the server offers {total} bytes, the zoo expects {expected_size}")
        _copy(response, part, start, total if total is not None else expected_size, progress)


def _open(url: str, offset: int) -> Any:
    """urlopen with a Range header from `offset`; None for 416 (range not satisfiable)."""
    import http.client
    from urllib.error import HTTPError, URLError
    from urllib.request import Request, urlopen

    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urlopen(Request(url, headers=headers), timeout=TIMEOUT_S)
    except HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            return None
        raise _SourceFailed(f"HTTP {e.code} {e.reason}") from None
    except (URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise _SourceFailed(f"cannot connect ({reason})") from None


def _range_total(url: str) -> int | None:
    """The total size a server reports for `url` (HEAD request), to judge a 416 answer."""
    from urllib.error import URLError
    from urllib.request import Request, urlopen

    try:
        with urlopen(Request(url, method="HEAD", headers={"User-Agent": USER_AGENT}), timeout=TIMEOUT_S) as r:
            length = r.headers.get("Content-Length")
    except (URLError, OSError):
        return None
    return int(length) if length and length.isdigit() else None


def _start_and_total(response: Any, offset: int) -> tuple[int, int | None]:
    """Where the body starts in the file and the file's total size, from the response headers.

    206 must continue exactly at `offset`; 200 means the server sent the whole file (it ignored
    or was not asked for a Range), so the part file starts over.
    """
    if response.status == 206:
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", "").strip())
        if not match or int(match.group(1)) != offset:
            raise _SourceFailed(f"the server answered a resume from byte {offset} with a different range")
        return offset, None if match.group(3) == "*" else int(match.group(3))
    length = response.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None


def _copy(response: IO[bytes], part: Path, start: int, total: int | None, progress: bool) -> None:
    """Write the body into `part` from byte `start`, with a progress bar; short bodies fail."""
    import http.client

    from tqdm import tqdm

    done = start
    with open(part, "ab" if start else "wb") as out, tqdm(
        total=total,
        initial=start,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=part.name.removesuffix(".part"),
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    ) as bar:
        try:
            for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                out.write(chunk)
                done += len(chunk)
                bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as e:
            raise _SourceFailed(_interrupted(part, done, total, f"{type(e).__name__}: {e}")) from None
    if total is not None and done < total:
        raise _SourceFailed(_interrupted(part, done, total, "connection closed early"))


def _interrupted(part: Path, done: int, total: int | None, why: str) -> str:
    """The message for a transfer that stopped midway (the part file is kept for a resume)."""
    of = f" of {total}" if total is not None else ""
    return f"transfer interrupted after {done}{of} bytes ({why}); {part} is kept, run again to resume"


# -- Google Drive -----------------------------------------------------------------------------
def _fetch_gdrive(file_id: str, entry: Entry, progress: bool) -> Path:
    """Fetch a Drive file with gdown (it handles the confirm page and resumes its own parts)."""
    try:
        import gdown
        import requests
    except ImportError:
        raise _SourceFailed("gdown is not installed (pip install gdown)") from None
    staging = entry.path.with_name(entry.filename + ".gdown")
    errors: tuple[type[BaseException], ...] = (OSError, ValueError, RuntimeError, requests.RequestException)
    retrieval = getattr(getattr(gdown, "exceptions", None), "FileURLRetrievalError", None)
    if retrieval is not None:
        errors += (retrieval,)
    options: dict[str, Any] = {"quiet": not progress, "resume": True}
    if "timeout" in inspect.signature(gdown.download).parameters:  # newer gdown releases
        options["timeout"] = TIMEOUT_S
    try:
        out = gdown.download(id=file_id, output=str(staging), **options)
    except errors as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _SourceFailed(f"Google Drive: {first}") from None
    if out is None or not staging.is_file():
        raise _SourceFailed("Google Drive refused the file (quota exceeded or not shared publicly)")
    return staging
