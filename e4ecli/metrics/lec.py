"""Latent Editing Consistency (e4e, section 5.2):
LEC(w) = || w - (E(G(w + s d)) - s d) ||_2 over all styles (the flattened (n_styles, 512) difference).

For any edit f (InterFaceGAN, GANSpace, SeFa) the edit's displacement f(w) - w plays the part of s d.
G's output is cropped to the domain and area-averaged to the encoder's input size before re-encoding.
"""
from __future__ import annotations


import numpy as np
import torch


def lec_per_image(latents: torch.Tensor, edited: torch.Tensor, reencoded: torch.Tensor) -> torch.Tensor:
    """latents w, edited f(w), reencoded E(G(f(w))): (N, n_styles, 512) -> (N,) distances."""
    undone = reencoded - (edited - latents)
    return (latents - undone).flatten(1).norm(dim=1)


def percentile_filtered_mean(values: np.ndarray, low: float = 1.0, high: float = 99.0) -> float:
    """The original LEC script's outlier filter: the mean of values within [P_low, P_high]."""
    lo, hi = np.percentile(values, [low, high])
    kept = values[(values >= lo) & (values <= hi)]
    return float(kept.mean()) if kept.size else float(values.mean())
