"""Labelled latents for fitting InterFaceGAN boundaries (`e4e directions fit`): the labels CSV and the latents
it names, read into arrays (`edits.fit` fits them)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

POSITIVE = {"1", "true", "yes", "y", "pos", "positive", "+1"}
NEGATIVE = {"0", "-1", "false", "no", "n", "neg", "negative"}
MAX_STYLES = 64  # a 1024 px generator has 18; the first latent's header is trusted only up to this


class FitError(ValueError):
    """Labels or latents that cannot be fitted; the message says why."""


def parse_label(text: str) -> int | None:
    t = text.strip().lower()
    if t in POSITIVE:
        return 1
    if t in NEGATIVE:
        return 0
    return None


def read_labels(path: str | Path) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
    """CSV rows `name,label` (a header row is skipped) -> ([(name, 0/1)], problems [(where, reason)]).

    `name` is a latent's path relative to the latents folder, with or without `.npy`; labels are
    1/0, true/false, yes/no, pos/neg (also -1 for negative)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise FitError(f"{path}: cannot read the labels ({e})") from None
    rows, problems = [], []
    for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 2:
            problems.append((f"{path}:{lineno}", "expected two columns: name,label"))
            continue
        label = parse_label(row[1])
        if label is None:
            if lineno == 1 or not rows and not problems:
                continue  # a header
            problems.append((f"{path}:{lineno}", f"label {row[1].strip()!r} is not 1/0, true/false, yes/no or pos/neg"))
            continue
        rows.append((row[0].strip(), label))
    return rows, problems


def gather(latents_dir: Path, rows: list[tuple[str, int]], n_styles: int | None = None, style_dim: int = 512
           ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Load the labelled latents -> (codes (N, S, D), labels (N,), problems [(file, reason)]).

    With n_styles None, the first readable latent decides it."""
    import numpy as np  # here: a wrong labels file is answered without numpy

    from e4ecli.files.latents import LatentError, load_latent, read_header

    codes, labels, problems = [], [], []
    for name, label in rows:
        path = latents_dir / name
        if path.suffix.lower() != ".npy":
            path = path.with_name(path.name + ".npy")
        if not path.is_file():
            problems.append((str(path), "no such latent file (named in the labels)"))
            continue
        try:
            if n_styles is None:
                shape, _ = read_header(path)  # never np.load an unchecked file: its header may claim terabytes
                styles = int(shape[-2]) if len(shape) >= 2 and shape[-1] == style_dim else 1
                if not 1 <= styles <= MAX_STYLES:
                    raise LatentError(f"latents shape {shape} is not a W+ code (at most {MAX_STYLES} styles of {style_dim})")
                n_styles = styles
            codes.append(load_latent(path, n_styles, style_dim))
        except (LatentError, ValueError, OSError) as e:
            problems.append((str(path), str(e)))
            continue
        labels.append(label)
    if not codes:
        return np.zeros((0, n_styles or 1, style_dim), np.float32), np.zeros(0, np.int64), problems
    return np.stack(codes), np.asarray(labels, dtype=np.int64), problems
