"""The one way a published file reaches this machine: verified, resumable, locked.

Every file e4ecli downloads -- zoo checkpoints, editing directions, face-alignment's landmark
weights, the InceptionV3 of FID and LPIPS's ImageNet backbone -- goes through `fetch(remote, dest)`:

  * sources are tried in order: `$E4E_MIRROR/<file name>` first when that variable names a base
    URL, then the file's own mirrors: http(s) URLs (resumed with a Range request from
    `<dest>.part`), `gdrive:<id>` (gdown) and `hf:<owner>/<repo>/<path>` (the Hugging Face Hub,
    at `$HF_ENDPOINT`, default https://huggingface.co);
  * a web page delivered instead of the file (Google Drive's quota or virus-scan page) is
    recognised and discarded, and the next mirror is tried;
  * the size and sha256 are checked when known; the file is renamed into place only then, so a
    file at its final path is always complete;
  * the sha256 of the first complete copy is kept beside it (`<dest>.sha256`, sha256sum's format
    plus the size and mtime it had) and later uses verify the file against it (trust on first use);
  * one lock file per destination serialises processes fetching the same file;
  * offline, `FetchError` says which file to put where.

Public API: `Remote`, `FetchError`, `fetch`, `verify_cached`, `offline_message`, `sha256_of`, `recorded_sha256`,
`human_size`, `source_url`, `check_source`, `looks_like_html`, `MIRROR_ENV`.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from e4ecli.hub import transfer
from e4ecli.hub.transfer import SourceFailed

MIRROR_ENV = "E4E_MIRROR"
CHUNK_BYTES = 1 << 20
GDRIVE = "gdrive:"
HF = "hf:"
HTML_SNIFF_BYTES = 1024


class FetchError(RuntimeError):
    """A file that could not be fetched or verified; str() says what to do.

    Fields: `name` (the file's label), `dest` (where it belongs), `failures` (one line per source tried),
    `lines` (the message's lines: a message given as a sequence of lines is laid out on several lines; a string
    is one line, whatever it holds, so that a name with a line break cannot forge a line).
    """

    def __init__(self, message: str | Sequence[str], *, name: str = "", dest: Path | None = None, failures: tuple[str, ...] = ()):
        self.lines: tuple[str, ...] = (message,) if isinstance(message, str) else tuple(message)
        super().__init__("\n".join(self.lines))
        self.name, self.dest, self.failures = name, dest, failures


@dataclass(frozen=True)
class Remote:
    """A published file: a label for messages, its file name, its mirrors and what is known of it."""

    name: str
    filename: str
    sources: tuple[str, ...]
    sha256: str | None = None
    size: int | None = None  # exact size in bytes (checked); None: not recorded
    extra_hint: tuple[str, ...] = field(default=())  # lines added to the offline message


# -- sources ------------------------------------------------------------------------------------
def check_source(source: str, where: str) -> None:
    """Accept http(s) URLs, `gdrive:<id>` and `hf:<owner>/<repo>/<path>`; FetchError naming `where` otherwise."""
    if source.startswith(GDRIVE):
        if not re.fullmatch(r"[\w-]+", source[len(GDRIVE):]):
            raise FetchError(f"{where}: '{source}' is not a Google Drive file id")
    elif source.startswith(HF):
        if not re.fullmatch(r"[\w.-]+/[\w.-]+/\S+", source[len(HF):]):
            raise FetchError(f"{where}: '{source}' is not hf:<owner>/<repo>/<path in the repository>")
    elif not re.match(r"https?://[^/\s]+", source):
        raise FetchError(f"{where}: unsupported source '{source}' (use http(s):// URLs, gdrive:<file id> or hf:<owner>/<repo>/<path>)")


def hf_url(source: str) -> str:
    """`hf:<owner>/<repo>/<path>` -> `$HF_ENDPOINT/<owner>/<repo>/resolve/main/<path>` (HF_ENDPOINT as huggingface_hub reads it)."""
    owner, repo, path = source[len(HF):].split("/", 2)
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    return f"{endpoint}/{owner}/{repo}/resolve/main/{path}"


def source_url(source: str) -> str:
    """A source as a person would open it in a browser."""
    if source.startswith(GDRIVE):
        return f"https://drive.google.com/file/d/{source[len(GDRIVE):]}/view"
    if source.startswith(HF):
        return hf_url(source)
    return source


def sources_for(remote: Remote) -> tuple[str, ...]:
    """`$E4E_MIRROR/<file name>` (when set) followed by the remote's own sources."""
    base = os.environ.get(MIRROR_ENV, "").strip()
    if not base:
        return remote.sources
    mirror = f"{base.rstrip('/')}/{remote.filename}"
    check_source(mirror, MIRROR_ENV)
    return (mirror, *(s for s in remote.sources if s != mirror))


# -- messages -----------------------------------------------------------------------------------
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


def offline_message(remote: Remote, dest: Path, headline: str | Sequence[str] | None = None) -> list[str]:
    """Exactly which file to put where, for machines that cannot (or may not) download it: the lines of the
    message (FetchError lays them out one per line)."""
    if headline is None:
        headline = (f"{remote.name}: {dest} has the wrong size ({dest.stat().st_size} bytes, expected {remote.size})."
                    if dest.is_file() else f"{remote.name} ({remote.filename}) is not downloaded.")
    expect = [f"sha256 {remote.sha256}" if remote.sha256 else "sha256 not recorded"]
    if remote.size is not None:
        expect.append(f"size {remote.size} bytes ({human_size(remote.size)})")
    return [
        *([headline] if isinstance(headline, str) else headline),
        f"To work offline, download {remote.filename} from one of:",
        *(f"  {source_url(s)}" for s in remote.sources),
        "and place it at:",
        f"  {dest}",
        f"(expected: {', '.join(expect)}).",
        f"A mirror of your own: set {MIRROR_ENV} to a base URL that serves {remote.filename}.",
        *remote.extra_hint,
    ]


# -- verification -------------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def _read_record(dest: Path) -> tuple[str, int, int] | None:
    """(sha256, size, mtime_ns) kept for `dest`, or None (missing or unreadable)."""
    try:
        lines = record_path(dest).read_text(encoding="utf-8").splitlines()
        sha = lines[0].split()[0]
        stamp = dict(part.split("=", 1) for part in lines[1].lstrip("# ").split())
        if re.fullmatch(r"[0-9a-f]{64}", sha):
            return sha, int(stamp["size"]), int(stamp["mtime_ns"])
    except (OSError, IndexError, KeyError, ValueError):
        pass
    return None


def recorded_sha256(path: Path) -> str | None:
    """The sha256 kept beside `path` when the file is unchanged since (same size and mtime), else None."""
    record = _read_record(path)
    st = path.stat()
    return record[0] if record is not None and record[1:] == (st.st_size, st.st_mtime_ns) else None


def _write_record(dest: Path, sha: str) -> None:
    """`<sha>  <file name>` (sha256sum -c reads it) and a line with the size and mtime it was checked at.
    Best effort: a cache that cannot be written is not an error."""
    st = dest.stat()
    tmp = record_path(dest).with_name(record_path(dest).name + f".{os.getpid()}.tmp")
    try:
        tmp.write_text(f"{sha}  {dest.name}\n# size={st.st_size} mtime_ns={st.st_mtime_ns}\n", encoding="utf-8")
        os.replace(tmp, record_path(dest))
    except OSError:  # a read-only or odd cache only means hashing the file again next time
        tmp.unlink(missing_ok=True)


def verify_cached(remote: Remote, dest: Path) -> None:
    """Check a file already at `dest` against the recorded sha256, else the one kept at its first use.

    The hash is recomputed only when the file's size or mtime differ from when it was last checked.
    FetchError (the file is left in place) when it does not match.
    """
    st = dest.stat()
    if remote.size is not None and st.st_size != remote.size:
        raise FetchError(offline_message(remote, dest), name=remote.name, dest=dest)
    record = _read_record(dest)
    if record is not None and record[1:] == (st.st_size, st.st_mtime_ns) and record[0] == (remote.sha256 or record[0]):
        return
    actual = sha256_of(dest)
    expected, origin = (remote.sha256, "the published sha256") if remote.sha256 else (
        (record[0], f"the sha256 kept at its first download ({record_path(dest)})") if record else (actual, ""))
    if actual != expected:
        raise FetchError(f"{dest} is not the {remote.name} file it was: sha256 {actual}, {origin} is {expected}. "
                         f"Delete it to download it again.", name=remote.name, dest=dest)
    _write_record(dest, actual)


def looks_like_html(path: Path) -> bool:
    """True when the file starts like a web page (what Drive serves instead of a file over quota)."""
    with open(path, "rb") as f:
        head = f.read(HTML_SNIFF_BYTES).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<meta", b"<?xml")) or b"<html" in head[:256]


def _web_page_failure(source: str, others: list[str]) -> str:
    host = "Google Drive" if source.startswith(GDRIVE) or "google.com" in source else re.sub(r"^\w+://([^/]+).*", r"\1", source)
    hint = f"try the mirror {others[0]}" if others else f"set {MIRROR_ENV} to a mirror, or download it in a browser"
    cause = "quota exceeded? " if host == "Google Drive" else ""
    return f"{host} returned a web page, not the file: {cause}{hint}"


def _check(remote: Remote, path: Path, source: str, others: list[str], progress: bool) -> str:
    """Size, web page and sha256 checks of a fetched file; a file that fails is deleted. -> its sha256."""
    actual_size = path.stat().st_size
    if looks_like_html(path):
        path.unlink(missing_ok=True)
        raise SourceFailed(_web_page_failure(source, others))
    if remote.size is not None and actual_size != remote.size:
        path.unlink(missing_ok=True)
        raise SourceFailed(f"size mismatch: expected {remote.size} bytes, got {actual_size}; partial file deleted")
    actual = sha256_of(path)
    if remote.sha256 is not None and actual != remote.sha256:
        path.unlink(missing_ok=True)
        raise SourceFailed(f"sha256 mismatch: expected {remote.sha256}, got {actual}; downloaded file deleted")
    if remote.sha256 is None and progress:
        print(f"note: {remote.name} has no published sha256; this copy is sha256 {actual}, size {actual_size} "
              "(kept, and checked on later uses)", file=sys.stderr)
    return actual


# -- fetching -----------------------------------------------------------------------------------
def fetch(remote: Remote, dest: Path, *, download: bool = True, force: bool = False, progress: bool = True) -> Path:
    """`dest`, verified; fetched from the remote's sources first when missing (or when `force`).

    download=False: FetchError with the offline message instead of fetching. Cache folder
    failures (not writable) are FetchErrors too.
    """
    dest = Path(dest)
    if not force and dest.is_file() and remote.size in (None, dest.stat().st_size):
        verify_cached(remote, dest)
        return dest
    if not download:
        raise FetchError(offline_message(remote, dest), name=remote.name, dest=dest)
    sources = sources_for(remote)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(dest, remote.name, progress):
            if force:
                _discard_partials(dest)
            elif dest.is_file() and remote.size in (None, dest.stat().st_size):  # fetched by another process meanwhile
                verify_cached(remote, dest)
                return dest
            failures = _try_sources(remote, dest, sources, progress)
    except OSError as e:
        raise FetchError(f"cannot write {dest.parent} ({e}); set E4E_HOME to a writable folder",
                         name=remote.name, dest=dest) from None
    if failures:
        headline = [f"could not download {remote.name}:", *failures]
        raise FetchError(offline_message(remote, dest, headline), name=remote.name, dest=dest, failures=tuple(failures))
    return dest


def _try_sources(remote: Remote, dest: Path, sources: tuple[str, ...], progress: bool) -> list[str]:
    """Try each source until one delivers a verified file, moved into place -> failure lines ([] on success).
    A failure that shows there is no network here (SourceFailed.no_network) ends the tries: the other mirrors
    are listed as not tried (an offline machine learns it after one source, not after each one's timeouts)."""
    failures = []
    for i, source in enumerate(sources):
        try:
            if source.startswith(GDRIVE):
                staged = transfer.gdrive(source[len(GDRIVE):], dest.with_name(dest.name + ".gdown"), progress)
            else:
                staged = dest.with_name(dest.name + ".part")
                url = hf_url(source) if source.startswith(HF) else source
                transfer.http(url, staged, remote.size, progress, dest.name)
            sha = _check(remote, staged, source, [source_url(s) for s in sources[i + 1:]], progress)
        except SourceFailed as e:
            why = f"{_web_page_failure(source, [source_url(s) for s in sources[i + 1:]])} ({e})" if e.web_page else str(e)
            failures.append(f"  {source_url(source)}: {why}")
            if e.no_network:
                failures += [f"  {source_url(s)}: not tried (no network)" for s in sources[i + 1:]]
                break
            continue
        os.replace(staged, dest)
        _write_record(dest, sha)
        return []
    return failures


def _discard_partials(dest: Path) -> None:
    """Remove the .part file, gdown's staging files and the kept sha256 for `dest` (used by force)."""
    for stale in [dest.with_name(dest.name + ".part"), record_path(dest), *dest.parent.glob(dest.name + ".gdown*")]:
        stale.unlink(missing_ok=True)


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
