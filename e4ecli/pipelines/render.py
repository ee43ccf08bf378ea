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
from e4ecli.pipelines.common import Result, decoded_batches, outputs_for, split_finished, partition


def render(items: Sequence[Item], ckpt: LoadedCheckpoint, out_dir: Path, *, device: torch.device, precision: str = "fp32", batch_size: int = 4,
           size: int | None = None, overwrite: bool = False, workers: int = 0) -> Iterator[Result]:
    todo, skipped = split_finished(items, out_dir, [".png"], overwrite)
    yield from skipped
    gen = ckpt.generator.to(device).eval()
    read = LatentReader(gen.n_latent, gen.style_dim)
    for batch in decoded_batches(todo, read, batch_size, workers, expected=(LatentError,)):
        good, failed = partition(batch)
        yield from failed
        if not good:
            continue
        w = torch.from_numpy(np.stack([w for _, w in good])).to(device)
        with torch.inference_mode(), autocast(device, precision):
            images = ckpt.domain.crop(gen.synthesis(w))
            if size:
                images = area_resize(images, size)
        pix = to_uint8(images)
        for j, (it, _) in enumerate(good):
            out = outputs_for(it, out_dir, [".png"])[0]
            try:
                save_image(out, pix[j])
            except OSError as e:
                yield Result(it, "failed", error=f"cannot write output: {e}")
                continue
            yield Result(it, "ok", [out])
