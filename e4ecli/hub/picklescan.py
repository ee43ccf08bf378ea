"""Bombs in pickles, found before any unpickler runs.

A few bytes of pickle can make an unpickler allocate gigabytes (a memo index of 2**31 sizes the C
unpickler's memo table to match) or build a structure so deeply nested that hashing or comparing it
overflows the C stack (a 200,000-deep tuple used as a dict key kills the process with SIGSEGV, whatever
the unpickler's allow-list). `check_file` walks the opcode stream with `pickletools.genops` -- which
never builds an object -- and tracks only how deep each value on the pickle machine's stack is and which
memo slots exist; it refuses a file whose nesting exceeds MAX_DEPTH or whose memo indices run far ahead
of the values memoised. Torch zip checkpoints (every *.pkl member), legacy torch files (the pickles
before the raw storage bytes) and plain pickles are covered.

`check_tensors` then refuses tensors that claim more elements than their storage holds (a stride-0
"expanded" view of 2**30 elements saved in 1.6 KB), before anything materialises them.
"""
from __future__ import annotations

import io
import pickletools
import zipfile
from pathlib import Path
from typing import IO, Any

MAX_DEPTH = 1000  # published checkpoints nest < 30 deep; Python's own recursion limit is 1000
MEMO_SLACK = 1024  # picklers number memo slots 0, 1, 2, ...: an index far beyond the count is a bomb
_MARK = object()
_MEMO_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GET = {"GET", "BINGET", "LONG_BINGET"}
_IN_PLACE = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}


class PickleBomb(ValueError):
    """The pickle would exhaust memory or the C stack; the message says which and where."""


class _Bounded:
    """A reader that never asks for more than the bytes left (an opcode claiming 2**60 bytes of argument
    must not make the scanner allocate them)."""

    def __init__(self, f: IO[bytes], size: int):
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        return data

    def readline(self, limit: int = -1) -> bytes:
        limit = self.left if limit is None or limit < 0 else min(limit, self.left)
        data = self.f.readline(limit)
        self.left -= len(data)
        return data


def check_stream(f: IO[bytes], where: str, max_depth: int = MAX_DEPTH) -> bool:
    """Walk one pickle (up to its STOP) from `f`. Raises PickleBomb; returns False when the bytes are not a
    well-formed pickle (the real loader reports that), True otherwise."""
    stack: list[Any] = []
    memo: dict[int, list[int]] = {}
    puts = 0
    try:
        for op, arg, _pos in pickletools.genops(f):  # f: a _Bounded reader
            name = op.name
            if name in _MEMO_PUT or name == "MEMOIZE":
                key = len(memo) if name == "MEMOIZE" else int(arg)
                puts += 1
                if key > 2 * puts + MEMO_SLACK:
                    raise PickleBomb(f"{where}: a pickle memo index of {key} after {puts} memoised value(s) "
                                     "(it would make the unpickler allocate memory for every slot below it)")
                if stack and stack[-1] is not _MARK:
                    memo[key] = stack[-1]
                continue
            if name in _MEMO_GET:
                stack.append(memo.get(int(arg), [0]))
                continue
            before, after = op.stack_before, op.stack_after
            popped: list[Any] = []
            if pickletools.markobject in before:
                while stack and stack[-1] is not _MARK:
                    popped.append(stack.pop())
                if not stack:
                    return False
                stack.pop()
                below = before.index(pickletools.markobject)
            else:
                below = len(before)
            for _ in range(below):
                if not stack:
                    return False
                popped.append(stack.pop())
            if any(p is _MARK for p in popped):
                return False
            if name in _IN_PLACE:  # the container (deepest popped) grows by its new items
                container, items = popped[-1], popped[:-1]
                container[0] = max(container[0], 1 + max((p[0] for p in items), default=0))
                stack.append(container)
                depth = container[0]
            elif name == "DUP":
                stack.extend([popped[0], popped[0]])
                depth = popped[0][0]
            else:
                depth = 1 + max((p[0] for p in popped), default=0) if popped else 0
                for item in after:
                    stack.append(_MARK if item is pickletools.markobject else [depth])
            if depth > max_depth:
                raise PickleBomb(f"{where}: values nested more than {max_depth} deep (unpickling or hashing them "
                                 "could overflow the C stack and kill the process)")
            if name == "STOP":
                return True
    except PickleBomb:
        raise
    except (ValueError, EOFError, TypeError, IndexError, KeyError, OverflowError):
        return False
    return False


def check_file(path: str | Path, max_depth: int = MAX_DEPTH) -> None:
    """Every pickle in a torch checkpoint (zip or legacy), a plain pickle, or an .npz never unpickled."""
    path = Path(path)
    with open(path, "rb") as f:
        if zipfile.is_zipfile(f):
            f.seek(0)
            with zipfile.ZipFile(f) as z:
                for info in z.infolist():
                    if info.filename.endswith(".pkl"):
                        with z.open(info) as member:
                            check_stream(_Bounded(member, info.file_size), f"{path} ({info.filename})", max_depth)
            return
        f.seek(0)
        check_sequence(f, str(path), max_depth)


def check_sequence(f: IO[bytes], where: str, max_depth: int = MAX_DEPTH, limit: int = 6) -> None:
    """The pickles one after another at the start of `f` (a legacy torch.save file holds five before the
    raw storage bytes; a plain pickle one)."""
    end = f.seek(0, io.SEEK_END)
    f.seek(0)
    for _ in range(limit):
        start = f.tell()
        if start >= end:
            return
        if not check_stream(_Bounded(f, end - start), where, max_depth):
            return


def check_bytes(data: bytes, where: str, max_depth: int = MAX_DEPTH) -> None:
    check_sequence(io.BytesIO(data), where, max_depth)


def check_tensors(obj: Any, where: str) -> None:
    """Refuse tensors that claim more elements than their storage holds (stride-0 or overlapping views
    that would expand to gigabytes when copied). Walks dicts, lists and tuples iteratively."""
    import torch

    todo = [("", obj)]
    while todo:
        key, value = todo.pop()
        if isinstance(value, torch.Tensor):
            if value.layout != torch.strided or value.numel() == 0:
                continue
            need = value.numel() * value.element_size()
            have = value.untyped_storage().nbytes()
            if need > have:
                name = f" '{key}'" if key else ""
                raise PickleBomb(f"{where}: tensor{name} of shape {tuple(value.shape)} claims {need:,} bytes over a storage of "
                                 f"{have:,} (a stride-0 or overlapping view; copying it would allocate the difference)")
        elif isinstance(value, dict):
            todo.extend((f"{key}.{k}" if key else str(k), v) for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            todo.extend((f"{key}[{i}]", v) for i, v in enumerate(value))
        elif hasattr(value, "__dict__") and not isinstance(value, type):
            todo.extend((f"{key}.{k}" if key else str(k), v) for k, v in vars(value).items())
