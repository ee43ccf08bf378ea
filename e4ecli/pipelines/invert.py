"""Invert images into W+ latents: OUT/<key>.npy (float32 (n_styles, 512), latent_avg included),
optionally with the reconstruction OUT/<key>.png; with an aligner, faces are aligned in memory first
and the alignment sidecar is written as OUT/<key>.json (and the aligned crop OUT/<key>.aligned.png).
Optionally the codes are refined (latent optimisation or PTI) before they are written."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from e4ecli.alignment import AlignError
from e4ecli.files.batch import Item, save_image, save_npy, write_text
from e4ecli.files.images import ImageError, area_resize, load_rgb, to_uint8
from e4ecli.hub.checkpoints import LoadedCheckpoint
from e4ecli.hub.tuned import save_tuned
from e4ecli.runtime import autocast, store_for
from e4ecli.pipelines.align import sidecar_text
from e4ecli.pipelines.common import Finished, Result, decoded_batches, outputs_for, split_finished, partition
from e4ecli.pipelines.refine import RefineOptions, refine_batch
from e4ecli.refine.losses import LossNets
from e4ecli.refine.pti import tunable

PTI_SUFFIX = ".pti.safetensors"
SHARED_PTI_FILE = "pti_shared.safetensors"
ALIGNED_SUFFIX = ".aligned.png"


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

    def __init__(self, domain, aligner: Callable[[Path], list] | None = None, keep_face: bool = False):
        self.domain, self.aligner, self.keep_face = domain, aligner, keep_face

    def __call__(self, path: Path) -> tuple[torch.Tensor, dict[str, Any] | None, Any]:
        """-> (model input, sidecar or None, the aligned face image (PIL) when keep_face, else None)."""
        if self.aligner is None:
            return self.domain.preprocess(load_rgb(path)), None, None
        face = self.aligner(path)[0]
        return self.domain.preprocess(face.image), face.info, face.image if self.keep_face else None


def output_suffixes(save_reconstructions: bool, align: bool, save_aligned: bool, refine: RefineOptions | None) -> list[str]:
    """What invert writes per image, the latent first."""
    pti = refine is not None and refine.is_pti and not refine.shared
    return [".npy"] + [PTI_SUFFIX] * pti + [".png"] * save_reconstructions + [ALIGNED_SUFFIX] * (align and save_aligned) + [".json"] * align


def invert(items: Sequence[Item], ckpt: LoadedCheckpoint, out_dir: Path, *, device: torch.device, precision: str = "fp32", batch_size: int = 4,
           workers: int = 0, save_reconstructions: bool = False, size: int | None = None, finished: Finished | None = None,
           aligner: Callable[[Path], list] | None = None, stage: int | None = None, save_aligned: bool = False,
           refine: RefineOptions | None = None, nets: LossNets | None = None, base: dict | None = None,
           on_step: Callable[[int, float], None] | None = None) -> Iterator[Result]:
    """Yield one Result per item, in order of completion (skipped ones first).

    finished: which items an earlier run already did with these settings (None: redo every item).
    stage: e4e's progressive stage K (w plus offsets 1..K; 0 = pure W); None: the full code.
    save_aligned: with an aligner, also write the aligned crop OUT/<key>.aligned.png.
    refine: optimise each code after the encoder (e4ecli.pipelines.refine), with the loss networks `nets`;
    PTI writes OUT/<key>.pti.safetensors (or, shared, OUT/pti_shared.safetensors) recording `base`
    ({'path', 'id', 'name'}: the checkpoint the generator is tuned from)."""
    pti = refine is not None and refine.is_pti
    suffixes = output_suffixes(save_reconstructions, aligner is not None, save_aligned, refine)
    todo, skipped = split_finished(items, lambda it: outputs_for(it, out_dir, suffixes), finished)
    shared_file = out_dir / SHARED_PTI_FILE if pti and refine.shared else None
    if shared_file is not None and todo or (shared_file is not None and not shared_file.exists()):
        todo, skipped = list(items), []  # one generator serves every image: redo them all together
    yield from skipped
    model = store_for(ckpt.inverter().to(device), device, precision)
    if stage is not None:
        set_stage(model.encoder, stage)
    if refine is not None:
        for p in model.decoder.parameters():
            p.requires_grad_(False)
    pending: list = []  # --pti-shared: every decoded image waits for the one generator
    for batch in decoded_batches(todo, _Preprocess(ckpt.domain, aligner, save_aligned), batch_size, workers, expected=(ImageError, AlignError)):
        decoded, failed = partition(batch)
        yield from failed
        good = [(it, x, sidecar, face) for it, (x, sidecar, face) in decoded]
        if not good:
            continue
        x = torch.stack([x for _, x, _, _ in good]).to(device)
        with torch.inference_mode(), autocast(device, precision):
            latents = model.encode(x)
        latents = latents.float().clone()
        gens, infos = [None] * len(good), [{}] * len(good)
        if refine is not None:
            if shared_file is not None:
                pending.append((good, x, latents))
                continue
            with autocast(device, precision):
                r = refine_batch(refine, model.decoder, model.latent_avg, x, latents, nets, crop=ckpt.domain.crop, on_step=on_step)
            latents, infos = r.latents, r.info
            gens = [t.generator for t in r.tuned] if r.tuned else gens
        yield from _write(good, latents, gens, infos, out_dir, suffixes, model.decoder, ckpt, precision, device, save_reconstructions, size, refine, base)
    if pending:
        yield from _shared(pending, shared_file, out_dir, suffixes, model, ckpt, precision, device, save_reconstructions, size, refine, nets, base, on_step)


def _shared(pending, shared_file, out_dir, suffixes, model, ckpt, precision, device, save_reconstructions, size, refine, nets, base,
            on_step) -> Iterator[Result]:
    good = [g for p in pending for g in p[0]]
    x = torch.cat([p[1] for p in pending])
    with autocast(device, precision):
        r = refine_batch(refine, model.decoder, model.latent_avg, x, torch.cat([p[2] for p in pending]), nets, crop=ckpt.domain.crop, on_step=on_step)
    gen = r.tuned[0].generator
    try:
        save_tuned(shared_file, gen, model.decoder, tunable(gen), Path(base["path"]), base["id"], base.get("name"), {"refine": refine.settings()})
    except OSError as e:
        for it, *_ in good:
            yield Result(it, "failed", error=f"cannot write the shared generator {shared_file}: {e}")
        return
    infos = [dict(i, generator=shared_file.name) for i in r.info]
    yield from _write(good, r.latents, [gen] * len(good), infos, out_dir, suffixes, model.decoder, ckpt, precision, device, save_reconstructions, size,
                      refine, None)


def _write(good, latents, gens, infos, out_dir, suffixes, decoder, ckpt, precision, device, save_reconstructions, size, refine, base) -> Iterator[Result]:
    """Write each image's outputs (pivot/latent .npy, tuned generator, reconstruction, aligned crop, sidecar)."""
    lat = latents.float().cpu().numpy()
    for j, (it, _, sidecar, face) in enumerate(good):
        outs = dict(zip(suffixes, outputs_for(it, out_dir, suffixes)))
        gen = gens[j] or decoder
        try:
            if PTI_SUFFIX in outs and gens[j] is not None:
                save_tuned(outs[PTI_SUFFIX], gen, decoder, tunable(gen), Path(base["path"]), base["id"], base.get("name"), {"refine": refine.settings()})
            if ".png" in outs:
                with torch.inference_mode(), autocast(device, precision):
                    img = ckpt.domain.crop(gen.synthesis(latents[j:j + 1].to(device)))
                    img = area_resize(img, size) if size else img
                save_image(outs[".png"], to_uint8(img)[0])
            if ALIGNED_SUFFIX in outs:
                save_image(outs[ALIGNED_SUFFIX], np.asarray(face))
            if ".json" in outs:
                extra = {"aligned_image": outs[ALIGNED_SUFFIX].name} if ALIGNED_SUFFIX in outs else {}
                write_text(outs[".json"], sidecar_text(dict(sidecar, output=outs[".npy"].name, **extra)))
            save_npy(outs[".npy"], lat[j])  # last: an image counts as done only when every output is there
        except OSError as e:
            yield Result(it, "failed", error=f"cannot write output: {e}")
            continue
        info = dict(infos[j], refine=refine.settings()) if refine is not None else {}
        yield Result(it, "ok", list(outs.values()), extra=info)
