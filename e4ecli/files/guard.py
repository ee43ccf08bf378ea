"""Checks made before any work starts, so that a run either cannot start (and creates nothing) or cannot
lose data: an output folder/file that can be written, outputs that never land on the command's own inputs
nor on each other, and one writer per output folder at a time (a lock).
"""
from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

SYSTEM_ROOTS = ("/proc", "/sys", "/dev")


class OutputLocked(RuntimeError):
    """Another e4e process holds the output `folder` (the caller says what to do: wait, or write elsewhere)."""

    def __init__(self, folder: "str | Path"):
        self.folder = Path(folder)
        super().__init__(f"another e4e is writing into {folder}")


def _nearest_existing(path: Path) -> Path:
    p = Path(os.path.abspath(path))
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def _system_path(path: Path) -> bool:
    real = os.path.realpath(path)
    return any(real == root or real.startswith(root + "/") for root in SYSTEM_ROOTS)


def _writable_folder_problem(folder: Path, shown: Path) -> str | None:
    """Why files cannot be created inside the existing `folder` (None if they can)."""
    if not folder.is_dir():
        return f"{shown} is not a folder"
    if _system_path(folder):
        return f"{shown} is a system folder ({os.path.realpath(folder)})"
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f"{shown} is on a read-only file system"
    except OSError as e:
        return f"{shown}: {os.strerror(e.errno or errno.EIO).lower()}"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{shown} is not writable"
    return None


def out_dir_problem(out: Path) -> str | None:
    """Why `out` cannot serve as an output folder (it, or the first of its parents that exists, must be a
    writable folder outside /proc, /sys and /dev); None when it can. Creates nothing."""
    out = Path(out)
    if os.path.lexists(out):
        if not out.exists():
            return f"{out} is a broken link"
        if not out.is_dir():
            return f"{out} is a file, not a folder"
        return _writable_folder_problem(out, out)
    base = _nearest_existing(out)
    if not base.is_dir():
        return f"{base} is a file, not a folder (cannot create {out} under it)"
    return _writable_folder_problem(base, base)


def out_file_problem(out: Path) -> str | None:
    """Why the output file `out` cannot be written (replaced atomically); None when it can."""
    out = Path(out)
    if out.is_dir():
        return f"{out} is a folder; give a file name"
    if os.path.lexists(out) and _system_path(out):
        return f"{out} is a system file ({os.path.realpath(out)})"
    return out_dir_problem(out.parent if str(out.parent) else Path("."))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def overwritten_inputs(inputs: Iterable[Path], outputs: Iterable[Path]) -> list[tuple[Path, Path]]:
    """(input, output) pairs where an output would replace one of the inputs (same file, also through
    links); only outputs that exist already can be inputs."""
    by_id: dict[tuple[int, int], Path] = {}
    for src in inputs:
        ident = _identity(src)
        if ident is not None:
            by_id.setdefault(ident, Path(src))
    hits = []
    for out in outputs:
        ident = _identity(out) if os.path.lexists(out) else None
        if ident is not None and ident in by_id:
            hits.append((by_id[ident], Path(out)))
    return hits


def shared_outputs(planned: Mapping[object, Sequence[Path]]) -> list[tuple[Path, list[object]]]:
    """Output paths (compared without case: macOS/Windows file systems) claimed by more than one owner;
    `planned` maps each owner (an input) to every file it will write -> [(path, owners)]."""
    owners: dict[str, list[object]] = {}
    shown: dict[str, Path] = {}
    for owner, paths in planned.items():
        for p in paths:
            key = os.path.normpath(os.path.abspath(p)).casefold()
            shown.setdefault(key, Path(p))
            if owner not in owners.setdefault(key, []):
                owners[key].append(owner)
    return [(shown[k], v) for k, v in owners.items() if len(v) > 1]


# -- one writer per output folder ---------------------------------------------------------------
_held: dict[str, int] = {}


def lock_output(folder: Path) -> bool:
    """Take the output folder for this process (flock on the folder itself; released when the process
    ends, also on kill -9). Returns False when the folder does not exist yet (nothing to lock: call again
    after creating it); raises OutputLocked when another process holds it. Re-entrant."""
    key = os.path.realpath(folder)
    if key in _held:
        return True
    try:
        fd = os.open(key, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutputLocked(folder) from None
    except OSError:  # a file system without flock: run unlocked rather than not at all
        os.close(fd)
        return True
    _held[key] = fd
    return True


def unlock_output(folder: Path) -> None:
    fd = _held.pop(os.path.realpath(folder), None)
    if fd is not None:
        os.close(fd)


def release_all() -> None:
    """Release every folder this process holds (end of a command; also for in-process test runners)."""
    for key in list(_held):
        os.close(_held.pop(key))
