"""What produced each output, so that a rerun never keeps a result the command no longer asks for.

Every batch command records, on each output's line of OUT/manifest.jsonl:
  settings     the run's settings that change the output's bytes (dict, JSON types)
  input        {"size", "mtime_ns"} of the input file the output was made from
  fingerprint  sha256 (16 hex) of settings + input: the value a rerun compares
  tool         "e4ecli <version>" (recorded for people; not compared, so an upgrade redoes nothing)
A rerun skips an output only when its files exist AND its line is "ok" (or "skipped") with the same
fingerprint; otherwise the output is redone (a changed setting, a changed input, or no line at all, as
with manifests written before this record existed) -- and the run says which settings changed.

How a command adds its settings
-------------------------------
Build one `Settings` per run from everything that changes the output's bytes -- the checkpoint's
content id, precision, size, directions and strengths, stages -- and nothing that does not (device,
batch size, workers, paths of the inputs; the input's own change is covered by `input`):

    settings = Settings("edit", checkpoint=ckpt_id, precision=precision, size=size, steps=[...])
    settings = settings.with_(refine={"steps": 100, "lr": 0.01})      # add keys for a new option

and hand it to the batch run (`e4ecli.runs.BatchRun.start(settings)` returns the predicate the
pipelines take as `finished=`; the manifest then records it). Rules that keep reruns stable:
  * values are JSON types; use `content_id(...)` for tensors, arrays or files (not their paths);
  * a key whose value is None is dropped, so a new option adds its key only when it is used and
    outputs made before the option existed still skip when it is not;
  * key order and int/float spelling (3 vs 3.0) do not matter.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping, Sequence

OK_STATUSES = ("ok", "skipped")


def _plain(value: Any) -> Any:
    """JSON-ready canonical form: dicts without None values, tuples as lists, integral floats as ints."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0])) if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalar
        return _plain(value.item())
    raise TypeError(f"setting value {value!r} is not a JSON type; use content_id() for arrays and files")


def stable_hash(value: Any, n: int = 16) -> str:
    text = json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:n]


def content_id(*parts: Any) -> str:
    """Short sha256 of tensors / numpy arrays (dtype, shape and bytes), bytes, files (Path) and JSON values."""
    import numpy as np

    h = hashlib.sha256()
    for part in parts:
        if hasattr(part, "detach"):  # torch tensor
            part = part.detach().cpu().contiguous().numpy()
        if isinstance(part, np.ndarray):
            h.update(f"{part.dtype.str}{part.shape}".encode())
            h.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, bytes):
            h.update(part)
        elif isinstance(part, Path):
            with open(part, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
        else:
            h.update(json.dumps(_plain(part), sort_keys=True).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


class Settings(dict):
    """The settings of one run of one command (see the module docstring). A dict; None values dropped."""

    def __init__(self, command: str, **values: Any):
        super().__init__(_plain({"command": command, **values}))

    def with_(self, **values: Any) -> "Settings":
        merged = Settings(self["command"])
        merged.update(_plain({**self, **values}))
        return merged


def ident_hash(ident: str) -> str:
    """A checkpoint's ident 'e4e_ffhq_encode.pt:0123abcd...' -> the content part (a renamed copy is the same checkpoint)."""
    return ident.rsplit(":", 1)[-1]


def base_record(path: Path | str, ident: str, given: str | None = None) -> dict:
    """What a tuned generator records of its base checkpoint: the resolved path, the content id, and the zoo name
    when the checkpoint was given by name (`given`: as the user named it; a path that exists is no zoo name)."""
    return {"path": str(Path(path).resolve()), "id": ident_hash(ident), "name": given if given is not None and not Path(given).exists() else None}


def input_stamp(path: Path | str | None) -> dict | None:
    """What identifies the state of an input file cheaply (like make): its size and mtime."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def tool_version() -> str:
    from e4ecli import __version__

    return f"e4ecli {__version__}"


def record_fields(settings: Mapping, source: Path | str | None) -> dict:
    """The fields added to an output's manifest line."""
    stamp = input_stamp(source)
    return {"settings": dict(settings), "input": stamp, "fingerprint": stable_hash({"settings": settings, "input": stamp}),
            "tool": tool_version()}


def read_records(paths: Iterable[Path]) -> dict[str, dict]:
    """Manifest lines by output (newest wins; a 'skipped' line never hides the line of the run that made
    the output). Torn or foreign lines are ignored."""
    records: dict[str, dict] = {}
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            try:
                rec = json.loads(line)
                out = str(rec["output"])
            except (ValueError, KeyError, TypeError):
                continue
            if not out or (rec.get("status") == "skipped" and out in records):
                continue
            records[out] = rec
    return records


def manifest_paths(out_dir: Path, name: str = "manifest.jsonl") -> list[Path]:
    """The manifest and the per-rank parts a killed torchrun run may have left."""
    out_dir = Path(out_dir)
    return [*sorted(out_dir.glob("manifest.rank*.jsonl")), out_dir / name]


class Previous:
    """What earlier runs recorded in a folder, judged against this run's settings.

    `finished(item, outputs)` is the predicate pipelines take: True when every output exists and its
    manifest line carries this run's fingerprint. `redo_reasons` counts why outputs are redone."""

    def __init__(self, out_dir: Path, settings: Mapping, overwrite: bool = False, manifest: str = "manifest.jsonl"):
        self.out_dir, self.settings, self.overwrite = Path(out_dir), dict(settings), overwrite
        self.records = read_records(manifest_paths(self.out_dir, manifest))  # --overwrite: still know what was written
        self.redo_reasons: Counter = Counter()
        self.keep: set[str] = set()  # realpaths never removed as obsolete (the run's inputs)

    def fields(self, source: Path | str | None) -> dict:
        return record_fields(self.settings, source)

    def key(self, output: Path) -> str:
        return Path(os.path.relpath(output, self.out_dir)).as_posix()

    def finished(self, item, outputs: Sequence[Path]) -> bool:
        return self.finished_source(getattr(item, "source", None), outputs)

    def finished_source(self, source: Path | str | None, outputs: Sequence[Path]) -> bool:
        if self.overwrite or not outputs or not all(Path(p).exists() for p in outputs):
            return False
        rec = self.records.get(self.key(outputs[0]))
        if rec is None or rec.get("status") not in OK_STATUSES or "fingerprint" not in rec:
            self.redo_reasons["no record in the manifest"] += 1
            return False
        mine = self.fields(source)
        if rec["fingerprint"] == mine["fingerprint"]:
            return True
        for name in changed_settings(rec.get("settings") or {}, self.settings):
            self.redo_reasons[name] += 1
        if rec.get("input") != mine["input"]:
            self.redo_reasons["input file changed"] += 1
        return False

    def obsolete(self, outputs: Sequence[Path], keep: Collection[str] = ()) -> list[Path]:
        """Files the earlier record of these outputs lists that this run did not write again (frames of a longer
        sweep, a latent no longer saved, faces no longer found): left in place they would pass for results of
        this command. Only existing files inside the folder; never a path in `keep` (realpaths of the inputs)."""
        if not outputs:
            return []
        rec = self.records.get(self.key(outputs[0])) or {}
        old = rec.get("files")
        if not isinstance(old, list):
            return []
        base = os.path.realpath(self.out_dir)
        now = {os.path.realpath(p) for p in outputs}
        stale = []
        for name in old:
            if not isinstance(name, str) or not name or name == "manifest.jsonl":
                continue
            path = os.path.realpath(self.out_dir / name)
            if os.path.commonpath([base, path]) != base or path == base or path in now or path in keep:
                continue
            if os.path.isfile(path) and not os.path.islink(self.out_dir / name):
                stale.append(Path(path))
        return stale

    def summary(self) -> str | None:
        """'settings changed (strength: 2), input file changed (1)' or None."""
        if not self.redo_reasons:
            return None
        return ", ".join(f"{name} ({n})" for name, n in self.redo_reasons.most_common())


def changed_settings(old: Mapping, new: Mapping) -> list[str]:
    """Names of the settings that differ between two runs ('strength', 'checkpoint', ...)."""
    old, new = _plain(dict(old)), _plain(dict(new))
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
