"""Temporal coherence of an edited clip against its source (STIT's metrics plus a flicker figure).

Identity (unit face embeddings per frame, e.g. ArcFace's, of the aligned face):
  TL-ID  mean over consecutive frames t, t+1 of  sim(out_t, out_t+1) / sim(src_t, src_t+1)
  TG-ID  mean over every ordered pair i != j of   sim(out_i, out_j)  / sim(src_i, src_j)
with sim the cosine similarity: the ratio is taken pair by pair, then averaged (STIT's metric script:
the element-wise ratio of the two similarity matrices, its first off-diagonal for TL-ID, all of its off-diagonal
for TG-ID). 1 means as coherent as the source; below 1, the identity wavers more than in the source.
Frames without a face (NaN embeddings) leave out the pairs they are in.

Flicker (pixels, grey levels 0-255):
  flicker_output  mean |out_t+1 - out_t| over the face region's pixels and channels, over all consecutive pairs
  flicker_source  the same for the source, over the same pixels
  flicker         flicker_output / flicker_source (1: as steady as the source; 0 / 0 counts as 1, x / 0 as
                  undefined, None)
The face region of a pair is the union of the two frames' face masks (frame coordinates).
"""
from __future__ import annotations

import numpy as np


def relative_similarity(out_features, src_features) -> np.ndarray:
    """(N, D) unit embeddings of the output and the source -> (N, N) sim_out / sim_src, pair by pair."""
    out = np.asarray(out_features, dtype=np.float64)
    src = np.asarray(src_features, dtype=np.float64)
    if out.shape != src.shape or out.ndim != 2:
        raise ValueError(f"output and source embeddings must both be (N, D), got {out.shape} and {src.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return (out @ out.T) / (src @ src.T)


def tl_id(out_features, src_features) -> float | None:
    """STIT's TL-ID (module docstring); None when no consecutive pair has a face in both clips."""
    rel = np.diagonal(relative_similarity(out_features, src_features), offset=1)
    rel = rel[np.isfinite(rel)]
    return float(rel.mean()) if rel.size else None


def tg_id(out_features, src_features) -> float | None:
    """STIT's TG-ID (module docstring); None with fewer than two usable frames."""
    rel = relative_similarity(out_features, src_features)
    rel = rel[~np.eye(len(rel), dtype=bool) & np.isfinite(rel)]
    return float(rel.mean()) if rel.size else None


def flicker_ratio(output: float | None, source: float | None) -> float | None:
    if output is None or source is None:
        return None
    if source == 0:
        return 1.0 if output == 0 else None
    return output / source


class FlickerMeter:
    """Streams frame pairs: add(out_frame, src_frame, region) per frame, in order; region: bool (H, W) face mask
    in frame coordinates, or None for a frame without a face (the pairs it is in are left out)."""

    def __init__(self):
        self.prev: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.out_sum = 0.0
        self.src_sum = 0.0
        self.count = 0  # region pixels x channels summed over pairs
        self.pairs = 0

    def add(self, out_frame: np.ndarray, src_frame: np.ndarray, region: np.ndarray | None) -> None:
        if out_frame.shape != src_frame.shape:
            raise ValueError(f"output frame {out_frame.shape} and source frame {src_frame.shape} differ in size")
        if region is not None and self.prev is not None:
            p_out, p_src, p_region = self.prev
            both = region | p_region
            n = int(both.sum())
            if n:
                self.out_sum += float(np.abs(out_frame[both].astype(np.int16) - p_out[both]).sum())
                self.src_sum += float(np.abs(src_frame[both].astype(np.int16) - p_src[both]).sum())
                self.count += n * out_frame.shape[-1]
                self.pairs += 1
        self.prev = None if region is None else (out_frame, src_frame, region)

    def report(self) -> dict:
        out = self.out_sum / self.count if self.count else None
        src = self.src_sum / self.count if self.count else None
        return {"flicker": flicker_ratio(out, src), "flicker_output": out, "flicker_source": src, "flicker_pairs": self.pairs}
