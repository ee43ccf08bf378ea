"""What is remembered about a weights file without opening it as a model: its content id (and facts such as a
passed pickle scan), kept in the weights cache under the file's path, size, mtime and inode. No torch here: a
run can name the checkpoint it would load (e4ecli.runs.video_edit) before loading anything."""
from __future__ import annotations

import json
import os
from pathlib import Path

from e4ecli.hub import zoo
from e4ecli.hub.fetch import recorded_sha256, sha256_of

FILE_IDS = "file_ids.json"  # in the weights cache: what is known about checkpoints already read
FILE_IDS_KEPT = 256


def remembered(path: str | Path, fact: str, compute) -> str:
    """`compute()` for this file, remembered in the weights cache under the file's absolute path, size,
    modification time (ns) and inode: a rewritten or replaced file is looked at again. Used for the
    content hash (about a second for the published 1.2 GB file) and the pickle bomb scan (about 0.4 s).
    A `compute` that raises stores nothing. An unwritable cache only means computing every time."""
    path = Path(path)
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    store = zoo.cache_dir() / FILE_IDS
    try:
        known = json.loads(store.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    facts = known.get(key)
    facts = {"id": facts} if isinstance(facts, str) else facts if isinstance(facts, dict) else {}
    if isinstance(facts.get(fact), str):
        return facts[fact]
    value = compute()
    known.pop(key, None)
    known = dict(list(known.items())[-(FILE_IDS_KEPT - 1):] + [(key, {**facts, fact: value})])
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_name(f".{FILE_IDS}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known), encoding="utf-8")
        os.replace(tmp, store)
    except OSError:
        pass
    return value


def file_id(path: str | Path) -> str:
    """Short content hash used to identify a checkpoint in manifests and caches (remembered per file)."""
    return remembered(path, "id", lambda: (recorded_sha256(Path(path)) or sha256_of(Path(path)))[:16])  # a fetched file's sha256 is kept beside it
