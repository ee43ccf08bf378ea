"""StyleCLIP's channel relevance matrix for a generator, computed in resumable chunks.

The output .npz (`e4e directions styleclip -o FILE`):
  fs3       (C, D) float32  relevance rows, conv channels in layer order (edits.stylespace.all_channels)
  done      (C,)   bool     rows computed so far (a file with rows left is refused by text edits)
  channels  (L,)   int      channels of each conv layer (the layout text edits check)
  domain, checkpoint, clip, samples, seed, alpha: what the rows were computed from; a rerun with the same -o
            continues only when these match
Every chunk of rows is written atomically (temp + rename): an interrupted run loses at most one chunk.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from e4ecli.edits import stylespace as ss
from e4ecli.hub.directions import DirectionError


def parse_rows(text: str | None, total: int) -> list[int]:
    """'0-99,200-209' (inclusive ranges or single rows of the relevance matrix) -> sorted rows; None: every row.
    DirectionError starting with the text given (the caller names its option)."""
    if text is None:
        return list(range(total))
    rows: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        a, sep, b = part.partition("-")
        try:
            lo, hi = int(a), int(b) if sep else int(a)
        except ValueError:
            raise DirectionError(f"{text!r}: use rows or ranges of rows, e.g. 0-99,512-515") from None
        if not 0 <= lo <= hi < total:
            raise DirectionError(f"{text!r}: rows must lie in 0..{total - 1} (this generator's conv channels)")
        rows.update(range(lo, hi + 1))
    return sorted(rows)


def _meta(generator, domain: str, checkpoint: str, clip_id: str, samples: int, seed: int, alpha: float) -> dict:
    return {"channels": np.array(ss.conv_layout(generator), dtype=np.int64), "domain": np.array(domain), "checkpoint": np.array(checkpoint),
            "clip": np.array(clip_id), "samples": np.array(samples), "seed": np.array(seed), "alpha": np.array(alpha)}


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.all(a == b))


def open_state(out: Path, meta: dict, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(fs3, done) from an earlier run of the same settings, or fresh; DirectionError when `out` holds another run."""
    total = int(meta["channels"].sum())
    if out.is_file():
        try:
            with np.load(out, allow_pickle=False) as z:
                old = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise DirectionError("{out} {path}: exists and is not a relevance file ({why}); choose another {out} or delete it",
                                 path=out, why=e) from None
        for key, value in meta.items():
            if key not in old or not _same(old[key], value):
                raise DirectionError("{out} {path}: holds a relevance matrix of other settings ({key} differs); "
                                     "choose another {out}, or delete it to start again", path=out, key=key)
        if "fs3" not in old or old["fs3"].shape != (total, dim) or "done" not in old or old["done"].shape != (total,):
            raise DirectionError("{out} {path}: not a relevance file of this layout; choose another {out} or delete it", path=out)
        return old["fs3"].astype(np.float32), old["done"].astype(bool)
    return np.zeros((total, dim), np.float32), np.zeros(total, bool)


def write_state(out: Path, fs3: np.ndarray, done: np.ndarray, meta: dict) -> None:
    from e4ecli.files.batch import atomic_output

    with atomic_output(out) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, fs3=fs3, done=done, **meta)


def compute_relevance(generator, clip, out: Path, *, samples: int, seed: int = 0, rows: Sequence[int] | None = None,
                      alpha: float = ss.RELEVANCE_ALPHA, domain: str = "", checkpoint: str = "", stats_key: str | None = None,
                      chunk: int = 16, batch_size: int = 8, on_rows: Callable[[int], None] | None = None) -> tuple[int, int]:
    """Compute the missing rows (of `rows`, default all) into `out`, chunk by chunk; returns (rows computed now, rows
    still missing in the file). `on_rows(k)`: progress, called after every row."""
    meta = _meta(generator, domain, checkpoint, clip.identity, samples, seed, alpha)
    fs3, done = open_state(out, meta, clip.dim)
    targets = ss.all_channels(generator)
    wanted = [r for r in (rows if rows is not None else range(len(targets))) if not done[r]]
    from e4ecli.pipelines.directions import style_stats_cached

    stats = style_stats_cached(generator, stats_key)
    styles = ss.sample_styles(generator, samples, seed)
    for start in range(0, len(wanted), chunk):
        part = wanted[start:start + chunk]
        for r in part:
            fs3[r] = ss.channel_rows(generator, styles, stats, [targets[r]], clip.embed_images, alpha, batch_size)[0].numpy()
            done[r] = True
            if on_rows is not None:
                on_rows(1)
        write_state(out, fs3, done, meta)
    if not wanted:
        write_state(out, fs3, done, meta)
    return len(wanted), int((~done).sum())
