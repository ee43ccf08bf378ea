"""Render W+ latents (.npy) through a StyleGAN2 generator: OUT/<key>.png."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from e4ecli.files.batch import Item, save_image
from e4ecli.files.images import area_resize, to_uint8
from e4ecli.files.latents import LatentError, LatentReader
from e4ecli.hub.checkpoints import LoadedCheckpoint
from e4ecli.runtime import autocast
from e4ecli.pipelines.common import Finished, Result, outputs_for, run_batches, split_finished


def render(items: Sequence[Item], ckpt: LoadedCheckpoint, out_dir: Path, *, device: torch.device, precision: str = "fp32", batch_size: int = 4,
           size: int | None = None, finished: Finished | None = None, workers: int = 0) -> Iterator[Result]:
    """Yield one Result per item (skipped ones first); finished: see pipelines.common.Finished."""
    todo, skipped = split_finished(items, lambda it: outputs_for(it, out_dir, [".png"]), finished)
    yield from skipped
    gen = ckpt.generator.to(device).eval()

    def compute(payloads):
        w = torch.from_numpy(np.stack(payloads)).to(device)
        with torch.inference_mode(), autocast(device, precision):
            images = ckpt.domain.crop(gen.synthesis(w))
            if size:
                images = area_resize(images, size)
        return to_uint8(images)

    def write(it, _, pix):
        out = outputs_for(it, out_dir, [".png"])[0]
        save_image(out, pix)
        return [out]

    yield from run_batches(todo, LatentReader(gen.n_latent, gen.style_dim), batch_size, workers, (LatentError,), compute, write)
