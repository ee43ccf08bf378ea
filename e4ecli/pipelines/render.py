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
from e4ecli.pipelines.plans import RENDER_SUFFIXES, RenderConfig


class RenderPipeline:
    """W+ latents -> images with a checkpoint's generator, built once, then called on items:

        pipe = RenderPipeline.from_checkpoint("stylegan2-ffhq-config-f.pt", RenderConfig(size=256), device="cuda")
        for result in pipe(items, out_dir, finished=run.start(pipe.settings(checkpoint_id))): ..."""

    suffixes = RENDER_SUFFIXES

    def __init__(self, ckpt: LoadedCheckpoint, config: RenderConfig = RenderConfig(), *, device: torch.device | str = "cpu"):
        self.ckpt, self.config, self.device = ckpt, config, torch.device(device)

    @classmethod
    def from_checkpoint(cls, ckpt: LoadedCheckpoint | str | Path, config: RenderConfig | None = None, **kw) -> "RenderPipeline":
        """A loaded checkpoint or a checkpoint file (hub.checkpoints.load_checkpoint) -> the pipeline."""
        if not isinstance(ckpt, LoadedCheckpoint):
            from e4ecli.hub.checkpoints import load_checkpoint

            ckpt = load_checkpoint(ckpt)
        return cls(ckpt, config or RenderConfig(), **kw)

    def settings(self, checkpoint_id: str):
        """The run's Settings (e4ecli.files.provenance): everything that changes the outputs' bytes."""
        from e4ecli.files.provenance import Settings

        return Settings("render", checkpoint=checkpoint_id, precision=self.config.precision, size=self.config.size)

    def __call__(self, items: Sequence[Item], out_dir: Path, finished: Finished | None = None) -> Iterator[Result]:
        """Yield one Result per item (skipped ones first); finished: see pipelines.common.Finished."""
        c, ckpt, device = self.config, self.ckpt, self.device
        out_dir = Path(out_dir)
        todo, skipped = split_finished(items, lambda it: outputs_for(it, out_dir, self.suffixes), finished)
        yield from skipped
        gen = ckpt.generator.to(device).eval()

        def compute(payloads):
            w = torch.from_numpy(np.stack(payloads)).to(device)
            with torch.inference_mode(), autocast(device, c.precision):
                images = ckpt.domain.crop(gen.synthesis(w))
                if c.size:
                    images = area_resize(images, c.size)
            return to_uint8(images)

        def write(it, _, pix):
            out = outputs_for(it, out_dir, self.suffixes)[0]
            save_image(out, pix)
            return [out]

        yield from run_batches(todo, LatentReader(gen.n_latent, gen.style_dim), c.batch_size, c.workers, (LatentError,), compute, write)


def render(items: Sequence[Item], ckpt: LoadedCheckpoint, out_dir: Path, *, device: torch.device, finished: Finished | None = None,
           **config) -> Iterator[Result]:
    """RenderPipeline in one call, for callers of the function form: `config` holds RenderConfig's fields."""
    return RenderPipeline(ckpt, RenderConfig(**config), device=device)(items, out_dir, finished)
