"""InterFaceGAN boundaries: a linear SVM separating latents by a binary attribute.

The boundary is the SVM's normal vector, scaled to unit length and oriented towards the positive
label, as InterFaceGAN uses it (`w + strength * n`). It is fitted on a training split; the
held-out split's accuracy says how well the attribute is linearly separable in W.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

POSITIVE = {"1", "true", "yes", "y", "pos", "positive", "+1"}
NEGATIVE = {"0", "-1", "false", "no", "n", "neg", "negative"}


MAX_STYLES = 64  # a 1024 px generator has 18; the first latent's header is trusted only up to this


class FitError(ValueError):
    """Labels or latents that cannot be fitted; the message says why."""


@dataclass(frozen=True)
class Boundary:
    direction: np.ndarray  # (1, D) or (S, D), unit Frobenius norm, towards label 1
    accuracy: float  # on the held-out split
    train_accuracy: float
    n_train: int
    n_val: int
    n_positive: int
    n_negative: int


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


def fit_boundary(codes: np.ndarray, labels: np.ndarray, *, wplus: bool = False, val_fraction: float = 0.2,
                 seed: int = 0, c: float = 1.0) -> Boundary:
    """codes (N, S, D), labels (N,) in {0, 1} -> Boundary.

    Default: fit on W (the mean over styles), direction (1, D). wplus: fit on the flattened W+,
    direction (S, D)."""
    from sklearn.model_selection import train_test_split
    from sklearn.svm import LinearSVC

    n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
    if min(n_pos, n_neg) < 2:
        raise FitError(f"need at least 2 latents of each label; got {n_pos} positive and {n_neg} negative")
    if not 0 < val_fraction < 1:
        raise FitError("the held-out fraction must be between 0 and 1")
    x = codes.reshape(len(codes), -1) if wplus else codes.mean(axis=1)
    n_val = max(2, int(round(len(x) * val_fraction)))
    if len(x) - n_val < 2:
        raise FitError(f"{len(x)} latents are too few to hold out {n_val} for validation")
    x_train, x_val, y_train, y_val = train_test_split(x, labels, test_size=n_val, random_state=seed, stratify=labels)
    if len(set(y_train.tolist())) < 2:
        raise FitError("the training split has only one label; give more latents of each label")
    clf = LinearSVC(C=c, dual="auto", max_iter=20_000, random_state=seed)
    clf.fit(x_train, y_train)
    normal = clf.coef_.reshape(-1).astype(np.float64)
    norm = np.linalg.norm(normal)
    if norm == 0:
        raise FitError("the SVM found no separating direction (all weights zero)")
    direction = (normal / norm).reshape(codes.shape[1] if wplus else 1, codes.shape[2]).astype(np.float32)
    return Boundary(direction, float(clf.score(x_val, y_val)), float(clf.score(x_train, y_train)),
                    len(x_train), len(x_val), n_pos, n_neg)
