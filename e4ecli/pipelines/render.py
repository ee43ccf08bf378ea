"""Render W+ latents (.npy) through a StyleGAN2 generator: OUT/<key>.png.

A latent K.npy with StyleSpace offsets beside it (K.s.npz, written by `e4e edit --save-latents` for
StyleSpace and text edits) is rendered with them, as `e4e edit` rendered it; the offsets file's size and
mtime are recorded on the output's manifest line (`style_offsets`) and a rerun redoes the output when the
file appears, changes or goes."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from e4ecli.files.batch import Item, save_image
from e4ecli.files.images import area_resize, to_uint8
from e4ecli.files.latents import LatentError, load_latent, load_style_offsets
from e4ecli.hub.checkpoints import LoadedCheckpoint
from e4ecli.runtime import autocast
from e4ecli.pipelines.common import Finished, Result, outputs_for, run_batches, split_finished
from e4ecli.pipelines.plans import RENDER_SUFFIXES, RenderConfig, offsets_beside


class _LatentWithOffsets:
    """Picklable decode function for DataLoader workers: K.npy -> (float32 (n_styles, style_dim), the
    StyleSpace offsets of K.s.npz beside it (one (C_l,) per layer) or None, that file's stamp or None)."""

    def __init__(self, n_styles: int, style_dim: int, channels: list[int]):
        self.n_styles, self.style_dim, self.channels = n_styles, style_dim, list(channels)

    def __call__(self, path: str | Path):
        from e4ecli.files.provenance import input_stamp

        w = load_latent(path, self.n_styles, self.style_dim)
        side = offsets_beside(path)
        if not side.is_file():
            return w, None, None
        stamp = input_stamp(side)  # before reading: a file replaced meanwhile is redone next time
        return w, load_style_offsets(side, self.channels), stamp


def recorded_offsets(out_dir: Path) -> dict[str, dict | None]:
    """output (relative to out_dir) -> the StyleSpace offsets stamp its manifest line records (None: none used)."""
    from e4ecli.files.provenance import manifest_paths, read_records

    return {key: rec.get("style_offsets") for key, rec in read_records(manifest_paths(out_dir)).items()}


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
        import os

        from e4ecli.files.provenance import input_stamp

        c, ckpt, device = self.config, self.ckpt, self.device
        out_dir = Path(out_dir)
        if finished is not None:  # offsets that appeared, changed or went redo the output
            recorded, settings_same = recorded_offsets(out_dir), finished

            def finished(it: Item, outs: Sequence[Path]) -> bool:
                key = Path(os.path.relpath(outs[0], out_dir)).as_posix()
                side = offsets_beside(it.source)
                return settings_same(it, outs) and recorded.get(key) == (input_stamp(side) if side.is_file() else None)

        todo, skipped = split_finished(items, lambda it: outputs_for(it, out_dir, self.suffixes), finished)
        yield from skipped
        gen = ckpt.generator.to(device).eval()

        def synthesize(w, offsets=None):
            images = ckpt.domain.crop(gen.synthesis(w, style_offsets=offsets))
            return area_resize(images, c.size) if c.size else images

        def compute(payloads):
            w = torch.from_numpy(np.stack([p[0] for p in payloads])).to(device)
            with torch.inference_mode(), autocast(device, c.precision):
                shifted = [i for i, p in enumerate(payloads) if p[1] is not None]
                if not shifted:
                    return to_uint8(synthesize(w))
                plain = [i for i, p in enumerate(payloads) if p[1] is None]  # rendered as before, without offsets
                images = [None] * len(payloads)
                if plain:
                    for i, img in zip(plain, synthesize(w[plain])):
                        images[i] = img
                offsets = [torch.from_numpy(np.stack([payloads[i][1][k] for i in shifted])).to(device) for k in range(len(payloads[shifted[0]][1]))]
                for i, img in zip(shifted, synthesize(w[shifted], offsets)):
                    images[i] = img
                return to_uint8(torch.stack(images))

        stamps: dict = {}

        def write(it, payload, pix):
            out = outputs_for(it, out_dir, self.suffixes)[0]
            save_image(out, pix)
            if payload[2] is not None:
                stamps[it] = payload[2]
            return [out]

        reader = _LatentWithOffsets(gen.n_latent, gen.style_dim, gen.style_channels())
        for result in run_batches(todo, reader, c.batch_size, c.workers, (LatentError,), compute, write):
            if result.status == "ok" and result.item in stamps:
                result.extra = {"style_offsets": stamps.pop(result.item)}
            yield result


def render(items: Sequence[Item], ckpt: LoadedCheckpoint, out_dir: Path, *, device: torch.device, finished: Finished | None = None,
           **config) -> Iterator[Result]:
    """RenderPipeline in one call, for callers of the function form: `config` holds RenderConfig's fields."""
    return RenderPipeline(ckpt, RenderConfig(**config), device=device)(items, out_dir, finished)
