"""What a run leaves in --exp-dir besides checkpoints (written by rank 0 only):

  metrics.jsonl                 one JSON object per logged step: step, split ('train' | 'val'),
                                progressive_stage and the original's loss names
  logs/                         TensorBoard events ('train/<loss>', 'test/<loss>' as the original)
  logs/images/train/faces/S.jpg input | reconstruction grids; validation: logs/images/test/faces/B_S.jpg
  opt.json                      the resolved options
  checkpoints/timestamp.txt     the original's one line per saved checkpoint
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from e4ecli.files.batch import save_image, write_text
from e4ecli.files.images import to_uint8

DISPLAY_COUNT = 2  # samples per image grid, as the original


class RunLog:
    def __init__(self, exp_dir: Path, purge_step: int | None = None):
        """purge_step: when resuming, drop what an interrupted run logged from this step on."""
        self.exp_dir = Path(exp_dir)
        self.log_dir = self.exp_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.exp_dir / "metrics.jsonl"
        if purge_step is not None and self.metrics_path.exists():
            self._truncate(purge_step)
        self._metrics = open(self.metrics_path, "a", encoding="utf-8")
        self.note: str | None = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)
        except ImportError:
            self.tb = None
            self.note = "tensorboard is not installed: no TensorBoard events (pip install tensorboard)"

    def _truncate(self, purge_step: int) -> None:
        kept = []
        for line in self.metrics_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                if int(json.loads(line)["step"]) < purge_step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a kill
        write_text(self.metrics_path, "".join(line + "\n" for line in kept))

    def metrics(self, split: str, step: int, stage: int, values: Mapping[str, float]) -> None:
        """One metrics.jsonl line and TensorBoard scalars ('train/<key>', 'test/<key>' for val)."""
        record = {"step": int(step), "split": split, "progressive_stage": int(stage)}
        record.update({k: _finite(v) for k, v in values.items()})
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        if self.tb is not None:
            prefix = "test" if split == "val" else split
            for k, v in values.items():
                self.tb.add_scalar(f"{prefix}/{k}", float(v), step)

    def images(self, title: str, step: int, x: torch.Tensor, y_hat: torch.Tensor, subscript: str | None = None) -> Path:
        """Grid of the first samples: each row input | reconstruction. x, y_hat: (N, 3, H, W) in [-1, 1]."""
        grid = image_grid(x[:DISPLAY_COUNT], y_hat[:DISPLAY_COUNT])
        name = f"{subscript}_{step:04d}.jpg" if subscript else f"{step:04d}.jpg"
        path = self.log_dir / title / name
        save_image(path, grid)
        if self.tb is not None:
            self.tb.add_image(title if not subscript else f"{title}/{subscript}", grid, step, dataformats="HWC")
        return path

    def timestamp(self, line: str) -> None:
        with open(self.exp_dir / "checkpoints" / "timestamp.txt", "a", encoding="utf-8") as f:
            f.write(line)

    def close(self) -> None:
        if not self._metrics.closed:
            self._metrics.close()
        if self.tb is not None:
            self.tb.close()


def _finite(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def image_grid(x: torch.Tensor, y_hat: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) pairs -> uint8 (N*H, 2*W, 3): input left, reconstruction right."""
    a, b = to_uint8(x), to_uint8(y_hat)
    if a.shape != b.shape:  # never for the shapes training makes; keep the log readable anyway
        h = min(a.shape[1], b.shape[1])
        a, b = a[:, :h], b[:, :h]
    return np.concatenate([np.concatenate([a[i], b[i]], axis=1) for i in range(len(a))], axis=0)
