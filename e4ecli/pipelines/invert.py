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
from e4ecli.runtime import autocast, store_for
from e4ecli.pipelines.align import sidecar_text
from e4ecli.pipelines.common import Finished, Result, decoded_batches, outputs_for, split_finished, partition
from e4ecli.pipelines.plans import ALIGNED_SUFFIX, PTI_SUFFIX, SHARED_PTI_FILE, InvertConfig, output_suffixes  # noqa: F401  (named here too)
from e4ecli.pipelines.refine import RefineOptions, Refiner
from e4ecli.refine.losses import LossNets


class InvertError(ValueError):
    """A checkpoint or a setting the invert pipeline cannot work with (raised before any image is read)."""


class NoEncoder(InvertError):
    """The checkpoint holds only a generator: inverting needs an e4e/pSp encoder."""


class StageError(InvertError):
    """A progressive stage this encoder does not have (or an encoder without stages)."""


def set_stage(encoder: torch.nn.Module, stage: int) -> None:
    """Limit an e4e encoder to w plus its first `stage` offsets; StageError (a ValueError) for other encoders / out of range."""
    if not hasattr(encoder, "set_progressive_stage"):
        raise StageError(f"a {type(encoder).__name__} predicts every style independently and has no progressive stages; "
                         "only e4e (Encoder4Editing) checkpoints have them")
    if not 0 <= stage < encoder.style_count:
        raise StageError(f"stage {stage} is out of range: this encoder has stages 0 (pure W) to {encoder.style_count - 1} (the full code)")
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


class InvertPipeline:
    """Images -> W+ latents with an e4e/pSp checkpoint, built once, then called on items:

        pipe = InvertPipeline.from_checkpoint("e4e_ffhq_encode.pt", InvertConfig(stage=0), device="cuda")
        for result in pipe(items, out_dir, finished=run.start(pipe.settings(checkpoint_id))): ...

    aligner: file -> [AlignedFace] (pipelines.align.FaceAligner), to align faces in memory first (writes the
    sidecar OUT/<key>.json); refiner: the refinement strategy (pipelines.refine.Refiner) run after the encoder."""

    def __init__(self, ckpt: LoadedCheckpoint, config: InvertConfig = InvertConfig(), *, device: torch.device | str = "cpu",
                 aligner: Callable[[Path], list] | None = None, refiner: Refiner | None = None):
        self.ckpt, self.config, self.device = ckpt, config, torch.device(device)
        self.aligner, self.refiner = aligner, refiner

    @classmethod
    def from_checkpoint(cls, ckpt: LoadedCheckpoint | str | Path, config: InvertConfig | None = None, **kw) -> "InvertPipeline":
        """A loaded checkpoint or a checkpoint file (hub.checkpoints.load_checkpoint) -> the pipeline; raises
        NoEncoder (a bare generator) or StageError (config.stage out of range), both InvertErrors."""
        if not isinstance(ckpt, LoadedCheckpoint):
            from e4ecli.hub.checkpoints import load_checkpoint

            ckpt = load_checkpoint(ckpt)
        config = config or InvertConfig()
        if not ckpt.has_encoder:
            raise NoEncoder(f"{Path(ckpt.path).name} holds only a generator; inverting needs an e4e/pSp checkpoint")
        if config.stage is not None:
            set_stage(ckpt.encoder, config.stage)
        return cls(ckpt, config, **kw)

    @property
    def suffixes(self) -> list[str]:
        """What the pipeline writes per image, the latent first."""
        c = self.config
        return output_suffixes(c.save_reconstructions, self.aligner is not None, c.save_aligned, self.refiner.options if self.refiner else None)

    def settings(self, checkpoint_id: str):
        """The run's Settings (e4ecli.files.provenance): everything that changes the outputs' bytes."""
        from e4ecli.files.provenance import Settings

        c, a = self.config, self.aligner
        return Settings("invert", checkpoint=checkpoint_id, precision=c.precision, stage=c.stage,
                        reconstructions=({"size": c.size} if c.save_reconstructions else None),
                        align=({"detector": a.backend.name, "size": a.size, "supersample": a.supersample, "save_aligned": c.save_aligned}
                               if a is not None else None),
                        refine=self.refiner.settings() if self.refiner is not None else None)

    def __call__(self, items: Sequence[Item], out_dir: Path, finished: Finished | None = None) -> Iterator[Result]:
        """Yield one Result per item, in order of completion (skipped ones first); finished: which items an
        earlier run already did with these settings (None: redo every item)."""
        c, ckpt, device, refiner = self.config, self.ckpt, self.device, self.refiner
        out_dir = Path(out_dir)
        suffixes = self.suffixes
        todo, skipped = split_finished(items, lambda it: outputs_for(it, out_dir, suffixes), finished)
        shared_file = out_dir / SHARED_PTI_FILE if refiner is not None and refiner.shared else None
        if shared_file is not None and todo or (shared_file is not None and not shared_file.exists()):
            todo, skipped = list(items), []  # one generator serves every image: redo them all together
        yield from skipped
        model = store_for(ckpt.inverter().to(device), device, c.precision)
        if c.stage is not None:
            set_stage(model.encoder, c.stage)
        if refiner is not None:
            for p in model.decoder.parameters():
                p.requires_grad_(False)
        writer = _Writer(self, out_dir, suffixes, model.decoder)
        pending: list = []  # a shared PTI generator: every decoded image waits for the one generator
        decode = _Preprocess(ckpt.domain, self.aligner, c.save_aligned)
        for batch in decoded_batches(todo, decode, c.batch_size, c.workers, expected=(ImageError, AlignError)):
            decoded, failed = partition(batch)
            yield from failed
            good = [(it, x, sidecar, face) for it, (x, sidecar, face) in decoded]
            if not good:
                continue
            x = torch.stack([x for _, x, _, _ in good]).to(device)
            with torch.inference_mode(), autocast(device, c.precision):
                latents = model.encode(x)
            latents = latents.float().clone()
            gens, infos = [None] * len(good), [{}] * len(good)
            if refiner is not None:
                if shared_file is not None:
                    pending.append((good, x, latents))
                    continue
                with autocast(device, c.precision):
                    r = refiner(model.decoder, model.latent_avg, x, latents, crop=ckpt.domain.encoder_frame)
                latents, infos = r.latents, r.info
                gens = [t.generator for t in r.tuned] if r.tuned else gens
            yield from writer(good, latents, gens, infos)
        if pending:
            yield from self._shared(pending, shared_file, model, writer)

    def _shared(self, pending, shared_file: Path, model, writer: "_Writer") -> Iterator[Result]:
        good = [g for p in pending for g in p[0]]
        x = torch.cat([p[1] for p in pending])
        with autocast(self.device, self.config.precision):
            r = self.refiner(model.decoder, model.latent_avg, x, torch.cat([p[2] for p in pending]), crop=self.ckpt.domain.encoder_frame)
        gen = r.tuned[0].generator
        try:
            self.refiner.save_tuned(shared_file, gen, model.decoder)
        except OSError as e:
            for it, *_ in good:
                yield Result(it, "failed", error=f"cannot write the shared generator {shared_file}: {e}")
            return
        infos = [dict(i, generator=shared_file.name) for i in r.info]
        yield from writer(good, r.latents, [gen] * len(good), infos)


def invert(items: Sequence[Item], ckpt: LoadedCheckpoint, out_dir: Path, *, device: torch.device, finished: Finished | None = None,
           aligner: Callable[[Path], list] | None = None, refine: RefineOptions | None = None, nets: LossNets | None = None,
           base: dict | None = None, on_step: Callable[[int, float], None] | None = None, **config) -> Iterator[Result]:
    """InvertPipeline in one call, for callers of the function form: `config` holds InvertConfig's fields;
    refine/nets/base/on_step make its Refiner."""
    refiner = Refiner(refine, nets if nets is not None else LossNets(), base, on_step) if refine is not None else None
    return InvertPipeline(ckpt, InvertConfig(**config), device=device, aligner=aligner, refiner=refiner)(items, out_dir, finished)


class _Writer:
    """Writes each image's outputs (pivot/latent .npy, tuned generator, reconstruction, aligned crop, sidecar)."""

    def __init__(self, pipe: InvertPipeline, out_dir: Path, suffixes: list[str], decoder):
        self.pipe, self.out_dir, self.suffixes, self.decoder = pipe, out_dir, suffixes, decoder

    def __call__(self, good, latents, gens, infos) -> Iterator[Result]:
        c, device, refiner, ckpt = self.pipe.config, self.pipe.device, self.pipe.refiner, self.pipe.ckpt
        lat = latents.float().cpu().numpy()
        for j, (it, _, sidecar, face) in enumerate(good):
            outs = dict(zip(self.suffixes, outputs_for(it, self.out_dir, self.suffixes)))
            gen = gens[j] or self.decoder
            try:
                if PTI_SUFFIX in outs and gens[j] is not None:
                    refiner.save_tuned(outs[PTI_SUFFIX], gen, self.decoder)
                if ".png" in outs:
                    with torch.inference_mode(), autocast(device, c.precision):
                        img = ckpt.domain.crop(gen.synthesis(latents[j:j + 1].to(device)))
                        img = area_resize(img, c.size) if c.size else img
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
            info = dict(infos[j], refine=refiner.options.settings()) if refiner is not None else {}
            yield Result(it, "ok", list(outs.values()), extra=info)
