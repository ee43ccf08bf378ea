"""InterFaceGAN boundaries: a linear SVM separating latents by a binary attribute.

The boundary is the SVM's normal vector, scaled to unit length and oriented towards the positive
label, as InterFaceGAN uses it (`w + strength * n`). It is fitted on a training split; the
held-out split's accuracy says how well the attribute is linearly separable in W. The labels and
latents are read by `files.labels` (read_labels, gather).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from e4ecli.files.labels import FitError  # noqa: F401 -- re-exported: one error for labels, latents and the fit


@dataclass(frozen=True)
class Boundary:
    direction: np.ndarray  # (1, D) or (S, D), unit Frobenius norm, towards label 1
    accuracy: float  # on the held-out split
    train_accuracy: float
    n_train: int
    n_val: int
    n_positive: int
    n_negative: int


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
