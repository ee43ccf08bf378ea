"""Seconds per stitching-tuning step (refine.stitch) at a given generator size, seeded weights (timing does not
depend on the values): `python benchmarks/stitch_step.py --size 256 --steps 3 [--device cuda]`.

Each step is one render of the edit, the masked losses, a backward pass through the synthesis network and an Adam
update; the figure is the median over the steps after a first (warm-up) one, plus the mask/blend set-up."""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from e4ecli.models.stylegan2 import Generator
from e4ecli.refine.stitch import StitchConfig, stitch_frame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    gen = Generator(args.size).eval().to(args.device)
    w = gen.mapping(torch.randn(1, 512, device=args.device)).detach().unsqueeze(1).repeat(1, gen.n_latent, 1)
    mask = np.zeros((args.size, args.size), np.float32)
    q = args.size // 4
    mask[q:3 * q, q:3 * q] = 1
    stamps: list[float] = []

    def tick(step: int, loss: float) -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    t0 = time.perf_counter()
    res = stitch_frame(gen, w[0] + 0.5, w[0], mask, StitchConfig(steps=args.steps + 1, border_threshold=0.0), on_step=tick)
    total = time.perf_counter() - t0
    per_step = statistics.median(np.diff(stamps[1:])) if len(stamps) > 2 else float("nan")
    print(f"size {args.size} on {args.device} (torch threads {torch.get_num_threads()}): {per_step:.3f} s per stitch step "
          f"(median of {len(stamps) - 2}); {args.steps + 1} steps + set-up {total:.2f} s; border loss "
          f"{res.border_loss_start:.4f} -> {res.border_loss:.4f}")


if __name__ == "__main__":
    main()
