"""Invert images into W+ latents: OUT/<key>.npy (float32 (n_styles, 512), latent_avg included),
optionally with the reconstruction OUT/<key>.png; with an aligner, faces are aligned in memory first
and the alignment sidecar is written as OUT/<key>.json."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from e4ecli.alignment import AlignError
from e4ecli.files.batch import Item, save_image, save_npy, write_text
from e4ecli.files.images import ImageError, area_resize, load_rgb, to_uint8
from e4ecli.hub.checkpoints import LoadedCheckpoint
from e4ecli.runtime import autocast, store_for
from e4ecli.pipelines.align import sidecar_text
from e4ecli.pipelines.common import Result, decoded_batches, outputs_for, split_finished, partition


def set_stage(encoder: torch.nn.Module, stage: int) -> None:
    """Limit an e4e encoder to w plus its first `stage` offsets; ValueError for other encoders / out of range."""
    if not hasattr(encoder, "set_progressive_stage"):
        raise ValueError(f"a {type(encoder).__name__} predicts every style independently and has no progressive stages; "
                         "only e4e (Encoder4Editing) checkpoints have them")
    if not 0 <= stage < encoder.style_count:
        raise ValueError(f"stage {stage} is out of range: this encoder has stages 0 (pure W) to {encoder.style_count - 1} (the full code)")
    encoder.set_progressive_stage(stage)


class _Preprocess:
    """Picklable decode function for DataLoader workers: file -> (model input (3, H, W), sidecar or None).

    aligner: file -> [AlignedFace] (e4ecli.pipelines.align.FaceAligner), or None to use the file as is."""

    def __init__(self, domain, aligner: Callable[[Path], list] | None = None):
        self.domain, self.aligner = domain, aligner

    def __call__(self, path: Path) -> tuple[torch.Tensor, dict[str, Any] | None]:
        if self.aligner is None:
            return self.domain.preprocess(load_rgb(path)), None
        face = self.aligner(path)[0]
        return self.domain.preprocess(face.image), face.info


def invert(items: Sequence[Item], ckpt: LoadedCheckpoint, out_dir: Path, *, device: torch.device, precision: str = "fp32", batch_size: int = 4,
           workers: int = 0, save_reconstructions: bool = False, size: int | None = None, overwrite: bool = False,
           aligner: Callable[[Path], list] | None = None, stage: int | None = None) -> Iterator[Result]:
    """Yield one Result per item, in order of completion (skipped ones first).

    stage: e4e's progressive stage K (w plus offsets 1..K; 0 = pure W); None: the full code."""
    suffixes = [".npy"] + ([".png"] if save_reconstructions else []) + ([".json"] if aligner else [])
    todo, skipped = split_finished(items, out_dir, suffixes, overwrite)
    yield from skipped
    model = store_for(ckpt.inverter().to(device), device, precision)
    if stage is not None:
        set_stage(model.encoder, stage)
    for batch in decoded_batches(todo, _Preprocess(ckpt.domain, aligner), batch_size, workers, expected=(ImageError, AlignError)):
        decoded, failed = partition(batch)
        yield from failed
        good = [(it, x, sidecar) for it, (x, sidecar) in decoded]
        if not good:
            continue
        x = torch.stack([x for _, x, _ in good]).to(device)
        with torch.inference_mode(), autocast(device, precision):
            latents = model.encode(x)
            images = None
            if save_reconstructions:
                images = ckpt.domain.crop(model.decode(latents))
                if size:
                    images = area_resize(images, size)
        lat = latents.float().cpu().numpy()
        pix = to_uint8(images) if images is not None else None
        for j, (it, _, info) in enumerate(good):
            outs = outputs_for(it, out_dir, suffixes)
            try:
                save_npy(outs[0], lat[j])
                if pix is not None:
                    save_image(outs[1], pix[j])
                if info is not None:
                    write_text(outs[-1], sidecar_text(dict(info, output=outs[0].name)))
            except OSError as e:
                yield Result(it, "failed", error=f"cannot write output: {e}")
                continue
            yield Result(it, "ok", outs)
