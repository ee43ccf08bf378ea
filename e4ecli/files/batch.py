"""Batch bookkeeping shared by every command: input discovery, output naming, atomic writes,
the manifest, and skipping finished work.

Naming rule (one place): an input file given directly maps to `OUT/<stem><suffix>`; a file found
inside a folder given as input maps to `OUT/<path inside that folder, extension replaced>`.
Outputs never escape OUT; overlong names are shortened with a hash so they stay unique.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Collection, Iterator, Sequence

MAX_COMPONENT_BYTES = 200  # leaves room for suffixes and temp-file decoration under NAME_MAX (255)


@dataclass(frozen=True)
class Item:
    """One unit of batch work: `source` is read, outputs are named `OUT/<key><suffix>`."""

    source: Path
    key: str  # POSIX relative path without extension, e.g. "sub/b"


def _safe_component(name: str) -> str:
    if name in ("", ".", ".."):
        name = f"_{name.replace('.', '_') or '_'}"
    name = name.replace("\x00", "_")
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > MAX_COMPONENT_BYTES:
        digest = hashlib.sha1(raw).hexdigest()[:10]
        name = raw[: MAX_COMPONENT_BYTES - 11].decode("utf-8", "ignore") + "~" + digest
    return name


def make_key(relative: PurePosixPath | str) -> str:
    """Relative path (with extension) -> output key: extension dropped, every component made safe."""
    rel = PurePosixPath(relative)
    parts = list(rel.parts[:-1]) + [rel.stem if rel.suffix else rel.name]
    return "/".join(_safe_component(p) for p in parts)


def _identity(path: Path | None) -> tuple[int, int] | None:
    try:
        st = os.stat(path) if path is not None else None
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if st is not None else None


def _walk(folder: Path, extensions: Collection[str], skip: Path | None = None) -> Iterator[Path]:
    """Files below folder with a wanted extension; follows symlinks but never loops; skips hidden entries
    and the folder `skip` (the output folder, when it lies inside an input folder)."""
    seen: set[tuple[int, int]] = set()
    skipped = _identity(skip)
    if skipped is not None and skipped != _identity(folder):
        seen.add(skipped)
    for root, dirs, files in os.walk(folder, followlinks=True):
        try:
            st = os.stat(root)
        except OSError:
            dirs[:] = []
            continue
        ident = (st.st_dev, st.st_ino)
        if ident in seen:  # a symlink loop, or a second way into the same directory
            dirs[:] = []
            continue
        seen.add(ident)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or Path(name).suffix.lower() not in extensions:
                continue
            yield Path(root) / name


def discover(inputs: Sequence[str | Path], extensions: Collection[str],
             exclude: Path | None = None) -> tuple[list[Item], list[tuple[str, str]]]:
    """Expand files and folders (recursively) into Items; returns (items, problems).

    problems: (input, reason) for inputs that do not exist. Files named directly are taken
    whatever their extension (they are validated when read); folder scans keep only `extensions`
    and do not enter `exclude` (the output folder: `-o photos/aligned` must not feed a rerun its
    own outputs) unless it is the input folder itself.
    """
    items: list[Item] = []
    problems: list[tuple[str, str]] = []
    exts = {e.lower() for e in extensions}
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            for f in _walk(path, exts, exclude):
                items.append(Item(f, make_key(PurePosixPath(f.relative_to(path).as_posix()))))
        elif path.is_file():
            items.append(Item(path, make_key(path.name)))
        elif path.exists() or path.is_symlink():
            problems.append((str(raw), "not a regular file or folder (broken link?)"))
        else:
            problems.append((str(raw), "no such file or folder"))
    unique: dict[tuple[str, str], Item] = {}
    for it in items:  # the same file reached twice (as a file and inside a folder) counts once
        unique.setdefault((os.path.realpath(it.source), it.key), it)
    return list(unique.values()), problems


def collisions(items: Sequence[Item]) -> dict[str, list[Path]]:
    """Output keys claimed by more than one source (e.g. a.jpg and a.png) -> those sources."""
    by_key: dict[str, list[Path]] = {}
    for it in items:
        by_key.setdefault(it.key.casefold(), []).append(it.source)
    return {k: v for k, v in by_key.items() if len({os.path.realpath(p) for p in v}) > 1}


def output_path(out_dir: Path, key: str, suffix: str) -> Path:
    """OUT/<key><suffix>, guaranteed to stay inside OUT."""
    out = Path(out_dir) / (key + suffix)
    base = os.path.abspath(out_dir)
    if os.path.commonpath([base, os.path.abspath(out)]) != base:
        raise ValueError(f"output name {key!r} would escape {out_dir}")
    return out


def shard(items: Sequence[Item], rank: int, world: int) -> list[Item]:
    """Deterministic round-robin share of `items` for one of `world` processes."""
    return [it for i, it in enumerate(items) if i % world == rank]


# -- atomic writes ----------------------------------------------------------------------------
def temp_name(path: Path) -> Path:
    """Hidden sibling temp file with the same suffix (so format detection by extension works)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(3)}.tmp{path.suffix}")


class WriteError(OSError):
    """An output that could not be written; str() is 'no space left on device writing OUT/a.png'."""

    def __str__(self) -> str:
        return str(self.strerror)


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temp path to write; on success it is fsynced and renamed onto `path`, else removed.

    A process killed at any moment leaves either the old state or the complete new file,
    never a truncated one under the final name (temp files are hidden and never picked up).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        if e.errno is None or e.filename not in (None, str(tmp)):
            raise
        # "No space left on device writing OUT/a.png", not the hidden temp file's name
        raise WriteError(e.errno, f"{os.strerror(e.errno).lower()} writing {path}", str(path)) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def save_npy(path: Path, array) -> None:
    import numpy as np

    with atomic_output(path) as tmp:
        np.save(tmp, np.ascontiguousarray(array), allow_pickle=False)


def save_image(path: Path, array) -> None:
    """uint8 (H, W, 3) -> image file (format from the suffix), atomically."""
    from PIL import Image

    with atomic_output(path) as tmp:
        Image.fromarray(array).save(tmp)


def save_torch(path: Path, obj) -> None:
    """torch.save, atomically, through a Python file object: a full disk raises OSError(ENOSPC) naming `path`
    (torch's own writer reports it as a C++ 'enforce fail' or 'basic_ios::clear' RuntimeError)."""
    import torch

    try:
        with atomic_output(path) as tmp, open(tmp, "wb") as f:
            torch.save(obj, f)
    except WriteError:
        raise
    except (OSError, RuntimeError) as e:
        cause: BaseException | None = e
        while cause is not None and not isinstance(cause, OSError):  # torch wraps the write error in a RuntimeError
            cause = cause.__cause__ or cause.__context__
        if cause is None or cause.errno is None:
            raise
        raise WriteError(cause.errno, f"{os.strerror(cause.errno).lower()} writing {path}", str(path)) from None


def write_text(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: Path) -> dict | None:
    """A JSON file this tool wrote (state, sidecars), or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# -- manifest ---------------------------------------------------------------------------------
def json_line(d: dict) -> str:
    """One JSON object on one line, UTF-8 encodable even for file names that are not valid UTF-8
    (os.fsdecode's lone surrogates are written as \\udcXX escapes, which read back to the same name)."""
    line = json.dumps(d, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(d, ensure_ascii=True)
    return line


@dataclass
class Record:
    source: str
    output: str
    status: str  # "ok" | "skipped" | "failed"
    error: str | None = None
    checkpoint: str | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        d = {"source": self.source, "output": self.output, "status": self.status, "error": self.error, "checkpoint": self.checkpoint}
        d.update(self.extra)
        return json_line(d)


def _record_key(output: str, source: str) -> str:
    """Manifest lines are kept one per output; inputs that have none (missing files) one per source."""
    return output if output else "\0" + source


class ManifestError(OSError):
    """A record could not be written (e.g. the disk is full); the manifest keeps whole lines only."""


class Manifest:
    """OUT/manifest.jsonl: one JSON line per input (source, output, status, error, checkpoint).

    Lines are appended and flushed as results arrive (a killed run keeps what it finished);
    `close()` compacts the file atomically to the newest line per output. Earlier runs' lines
    are kept, so a rerun that skips finished files still lists them.
    """

    def __init__(self, out_dir: Path, name: str = "manifest.jsonl"):
        self.path = Path(out_dir) / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._records: dict[str, str] = {}
        self._read(self.path)
        self._fh = open(self.path, "ab", buffering=0)
        if self.path.stat().st_size and not self._ends_with_newline():
            self._append(b"\n")  # a line torn by a kill must not swallow the first line appended now

    def _read(self, path: Path) -> None:
        if not path.exists():
            return
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
                out = _record_key(str(rec["output"]), str(rec.get("source")))
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a kill: dropped at compaction
            if rec.get("status") == "skipped" and out in self._records:
                continue
            self._records[out] = json_line(rec)

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def absorb_parts(self, pattern: str = "manifest.rank*.jsonl") -> None:
        """Fold the per-rank parts written under torchrun into this manifest, then delete them."""
        parts = sorted(self.path.parent.glob(pattern))
        for part in parts:
            self._read(part)
        self.close()
        for part in parts:
            part.unlink(missing_ok=True)

    def add(self, record: Record) -> None:
        line = record.to_json()
        key = _record_key(record.output, record.source)
        if record.status == "skipped" and key in self._records:
            return  # keep the record of the run that made it
        self._append((line + "\n").encode("utf-8"))
        self._records[key] = line

    def _append(self, data: bytes) -> None:
        """Append whole lines or nothing: on a write error (disk full) the partial line is cut off again
        and ManifestError says why."""
        fd = self._fh.fileno()
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as e:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise ManifestError(f"{os.strerror(e.errno).lower() if e.errno else e} writing {self.path}") from None

    def close(self) -> None:
        if self._fh.closed:
            return
        self._fh.close()
        try:
            write_text(self.path, "".join(line + "\n" for line in self._records.values()))
        except OSError:
            pass  # compaction is tidying only: the appended file already holds every record, whole lines

    def __enter__(self) -> "Manifest":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
