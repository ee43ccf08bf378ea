"""Edit W+ latents (.npy) and render them.

Outputs for an input with key K (named like `e4e render`):
  one strength per edit:  OUT/K.png (render), OUT/K.npy (--save-latents), OUT/K.pasted.png (paste-back)
  a sweep A:B:N:          OUT/K/NN_s<value>.png (+ .npy, + .pasted.png) per value, and OUT/K.png, a
                          labelled strip: the reconstruction, then every value
Several (edit, strength) steps compose in order; at most one of them sweeps. StyleSpace and text steps
add offsets to the style vectors after every W+ step (`edited_codes`); with --save-latents their sum is
saved beside the W+ latent as OUT/K.s.npz (`offsets`: the concatenated per-layer offsets, `channels`: each
layer's length; the style vectors of the edit are A(w) + offsets).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from e4ecli.edits.specs import Edit, Strength
from e4ecli.files.batch import Item, save_image, save_npy
from e4ecli.files.images import area_resize, to_uint8
from e4ecli.files.latents import LatentError, LatentReader
from e4ecli.hub.checkpoints import LoadedCheckpoint
from e4ecli.pipelines.common import Finished, Result, decoded_batches, partition, split_finished, write_item
from e4ecli.pipelines.plans import OFFSETS_SUFFIX, PASTED_SUFFIX, EditConfig, Plan, format_strength, plan_outputs  # noqa: F401  (named here too)
from e4ecli.runtime import autocast


@dataclass(frozen=True)
class Step:
    edit: Edit
    strength: Strength


def sweep_values(steps: Sequence[Step]) -> tuple[int | None, tuple[float, ...]]:
    """(index of the sweeping step or None, its values (or a 1-tuple placeholder))."""
    sweeping = [i for i, s in enumerate(steps) if s.strength.is_sweep]
    if len(sweeping) > 1:
        raise ValueError("only one strength may be a sweep A:B:N")
    if not sweeping:
        return None, (0.0,)
    return sweeping[0], steps[sweeping[0]].strength.values


def edited_latents(latents: torch.Tensor, steps: Sequence[Step], styleflow=None) -> torch.Tensor:
    """latents (N, S, D) -> (N, F, S, D): the steps applied in order, F = the sweep's length (or 1).

    StyleFlow steps compose into one round trip at the place of the first of them; they need
    `styleflow` = (StyleflowSetup, source conditions (N, 17)) (see pipelines.styleflow).
    """
    sweep_at, values = sweep_values(steps)
    n, f = latents.shape[0], len(values)
    w = latents[:, None].expand(n, f, *latents.shape[1:]).reshape(n * f, *latents.shape[1:])

    def strength_of(i: int):
        if i == sweep_at:
            return torch.tensor(values, dtype=latents.dtype, device=latents.device).repeat(n)
        return steps[i].strength.values[0]

    flow_steps = [i for i, s in enumerate(steps) if s.edit.kind == "styleflow"]
    for i, step in enumerate(steps):
        if i in flow_steps:
            if i == flow_steps[0]:
                from e4ecli.pipelines.styleflow import apply_steps

                w = apply_steps(w, [steps[j].edit for j in flow_steps], [strength_of(j) for j in flow_steps], styleflow, f)
            continue
        w = step.edit.apply(w, strength_of(i))
    return w.reshape(n, f, *latents.shape[1:])


def edited_offsets(steps: Sequence[Step], n: int, device=None) -> list[torch.Tensor] | None:
    """The StyleSpace offsets of the steps for n latents (N, F flattened as in edited_latents): one (n * F, C_l)
    per layer, or None when no step edits in StyleSpace."""
    sweep_at, values = sweep_values(steps)
    f = len(values)
    total = None
    for i, step in enumerate(steps):
        if not step.edit.in_stylespace:
            continue
        strength = torch.tensor(values, dtype=torch.float32).repeat(n) if i == sweep_at else step.strength.values[0]
        offsets = step.edit.style_offsets(strength, n * f)
        total = offsets if total is None else [a + b for a, b in zip(total, offsets)]
    if total is not None and device is not None:
        total = [t.to(device) for t in total]
    return total


def edited_codes(latents: torch.Tensor, steps: Sequence[Step], styleflow=None) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """(edited_latents (N, F, S, D), edited_offsets (one (N * F, C_l) per layer) or None): every edit of a step list."""
    return edited_latents(latents, steps, styleflow), edited_offsets(steps, latents.shape[0], latents.device)


def save_offsets(path: Path, offsets: Sequence[torch.Tensor] | Sequence[np.ndarray]) -> None:
    """One latent's StyleSpace offsets (one (C_l,) per layer) -> OUT/K.s.npz (offsets, channels), atomically."""
    from e4ecli.files.batch import atomic_output

    arrays = [np.asarray(o.float().cpu().numpy() if hasattr(o, "cpu") else o, dtype=np.float32).reshape(-1) for o in offsets]
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, offsets=np.concatenate(arrays), channels=np.array([a.size for a in arrays], dtype=np.int64))


def read_offsets(path: Path) -> list[np.ndarray]:
    """OUT/K.s.npz -> one (C_l,) array per layer."""
    with np.load(path, allow_pickle=False) as z:
        flat, channels = z["offsets"], z["channels"]
    return np.split(flat, np.cumsum(channels)[:-1])


def render_uint8(gen, domain, latents: torch.Tensor, batch_size: int, size: int | None,
                 precision: str = "fp32", offsets: Sequence[torch.Tensor] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """latents (M, S, D) -> (uint8 renders at `size` (M, h, w, 3), native-size renders or None when
    `size` is None), in chunks of batch_size, at `precision` (fp32, or fp16/bf16 autocast).
    `offsets`: StyleSpace offsets (one (M, C_l) per layer) added to the style vectors."""
    out, native = [], []
    step = max(1, batch_size)
    with torch.inference_mode(), autocast(latents.device, precision):
        for start in range(0, latents.shape[0], step):
            chunk = latents[start:start + step]
            extra = None if offsets is None else [o[start:start + step] for o in offsets]
            images = domain.crop(gen.synthesis(chunk, style_offsets=extra))
            if size:
                native.append(to_uint8(images))
                images = area_resize(images, size)
            out.append(to_uint8(images))
    return np.concatenate(out), (np.concatenate(native) if native else None)


def labelled_strip(tiles: Sequence[np.ndarray], labels: Sequence[str]) -> np.ndarray:
    """uint8 tiles (h, w, 3) side by side, each with its label in a band above -> uint8 (h + band, w * n, 3)."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = tiles[0].shape[:2]
    band = max(12, min(48, w // 10))
    try:
        font = ImageFont.load_default(size=max(8, int(band * 0.7)))
    except TypeError:  # Pillow without FreeType sizes
        font = ImageFont.load_default()
    canvas = Image.new("RGB", (w * len(tiles), h + band), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (tile, label) in enumerate(zip(tiles, labels)):
        canvas.paste(Image.fromarray(tile), (i * w, band))
        draw.text((i * w + w // 2, band // 2), label, fill=(0, 0, 0), font=font, anchor="mm")
    return np.asarray(canvas)


def _paste(plan: Plan, frames: np.ndarray, feather: float) -> None:
    from e4ecli.pasteback import load_photo, paste_back, read_sidecar

    assert plan.sidecar is not None
    sidecar = read_sidecar(plan.sidecar)
    photo = load_photo(sidecar)
    for frame, path in zip(frames, plan.pasted):
        save_image(path, paste_back(photo, frame, sidecar.source_from_output, sidecar.output_size, feather))


def _resolve_step(ckpt: LoadedCheckpoint, spec: str, strength: float | str | None, **resolve_kw) -> Step:
    from e4ecli.edits.specs import parse_strength
    from e4ecli.hub.directions import DirectionError
    from e4ecli.pipelines.directions import resolve

    edit = resolve(spec, ckpt.generator, domain_name=ckpt.domain.name, **resolve_kw)
    if strength is not None:
        return Step(edit, parse_strength(str(strength)))
    if edit.default_strength is None:
        raise DirectionError(f"direction {spec!r} has no default strength; give one")
    return Step(edit, Strength((edit.default_strength,), format_strength(edit.default_strength), False))


class EditPipeline:
    """W+ latents -> edited renders / latents with a checkpoint's generator, built once, then called on items:

        pipe = EditPipeline.from_checkpoint("e4e_ffhq_encode.pt", EditConfig(size=256), steps=steps, device="cuda")
        for result in pipe(items, out_dir, finished=run.start(pipe.settings(checkpoint_id))): ...

    steps: the (edit, strength) steps, composed in order (at most one sweeps; pipelines.directions resolves the
    edits against the checkpoint's generator); styleflow: a pipelines.styleflow.StyleflowSetup when a step is
    a StyleFlow edit."""

    def __init__(self, ckpt: LoadedCheckpoint, steps: Sequence[Step], config: EditConfig = EditConfig(), *,
                 device: torch.device | str = "cpu", styleflow=None):
        self.ckpt, self.steps, self.config, self.device = ckpt, list(steps), config, torch.device(device)
        self.styleflow = styleflow
        self.sweep_at, self.values = sweep_values(self.steps)  # ValueError: more than one sweep

    @classmethod
    def from_checkpoint(cls, ckpt: LoadedCheckpoint | str | Path, config: EditConfig | None = None, *,
                        steps: Sequence[Step | tuple[str, float | str | None]], pca: str | Path | None = None, force: bool = False,
                        text=None, **kw) -> "EditPipeline":
        """A loaded checkpoint or a checkpoint file (hub.checkpoints.load_checkpoint) -> the pipeline.

        steps: Steps, or (spec, strength) pairs resolved here for the checkpoint's generator (pipelines.directions:
        spec as `e4e edit` takes it, e.g. "age", "sefa:0", "stylespace:6:501"; strength a number, an "A:B:N" sweep,
        or None for the direction's default); pca / force / text as pipelines.directions.resolve takes them.
        Raises DirectionError for a spec or strength that cannot be used."""
        if not isinstance(ckpt, LoadedCheckpoint):
            from e4ecli.hub.checkpoints import load_checkpoint

            ckpt = load_checkpoint(ckpt)
        resolved = [s if isinstance(s, Step) else _resolve_step(ckpt, *s, pca=pca, force=force, text=text) for s in steps]
        return cls(ckpt, resolved, config or EditConfig(), **kw)

    @property
    def stylespace(self) -> bool:
        """A step edits the style vectors (StyleSpace, text): saved latents get their offsets beside them."""
        return any(s.edit.in_stylespace for s in self.steps)

    def plan(self, item: Item, out_dir: Path, sidecar: Path | None = None) -> Plan:
        """Every file the pipeline writes for `item` (pipelines.plans.plan_outputs)."""
        c = self.config
        return plan_outputs(item, out_dir, self.values, self.sweep_at is not None, save_latents=c.save_latents,
                            latents_only=c.latents_only, sidecar=sidecar, stylespace=self.stylespace)

    def settings(self, checkpoint_id: str):
        """The run's Settings (e4ecli.files.provenance): everything that changes the outputs' bytes (a StyleFlow
        edit's sources are compared per output by pipelines.styleflow)."""
        from e4ecli.files.provenance import Settings

        c = self.config
        return Settings("edit", checkpoint=checkpoint_id, direction=[s.edit.identity() for s in self.steps],
                        strength=[list(s.strength.values) for s in self.steps], precision=c.precision if c.renders else None,
                        size=c.size if c.renders else None, save_latents=c.save_latents or c.latents_only, latents_only=c.latents_only,
                        paste_back={"feather": c.feather} if c.paste_back else None)

    def __call__(self, items: Sequence[Item], out_dir: Path, finished: Finished | None = None,
                 sidecars: dict[Item, Path] | None = None) -> Iterator[Result]:
        """Yield one Result per item (skipped ones first). `sidecars`: item -> alignment sidecar for paste-back;
        with config.paste_back, an item without one fails (its pasted image cannot be made)."""
        from e4ecli.pasteback import PasteBackError

        c, ckpt, device, steps, styleflow = self.config, self.ckpt, self.device, self.steps, self.styleflow
        out_dir = Path(out_dir)
        sweep_at, values = self.sweep_at, self.values
        sweep = sweep_at is not None
        sidecars = sidecars or {}
        if c.paste_back:
            for it in items:
                if it not in sidecars:
                    yield Result(it, "failed",
                                 error=f"paste-back: no alignment sidecar {it.key}.json beside the latent or in the folders of aligned images given")
            items = [it for it in items if it in sidecars]
        plans = {it: self.plan(it, out_dir, sidecars.get(it)) for it in items}
        if styleflow is not None and finished is not None:  # a changed attributes file, override, flow or estimator redoes the output
            from e4ecli.pipelines.styleflow import sources_unchanged

            same_source, settings_same = sources_unchanged(styleflow, out_dir), finished

            def finished(it: Item, outs: Sequence[Path]) -> bool:
                return settings_same(it, outs) and same_source(it, outs)

        todo, skipped = split_finished(items, lambda it: plans[it].all_outputs(), finished)
        yield from skipped
        gen = ckpt.generator.to(device).eval()
        name = steps[sweep_at].edit.label if sweep_at is not None else ""
        labels = ["reconstruction"] + [f"{name} {format_strength(v)}" for v in values]

        def write(plan: Plan, lat, offs, mine, full, recon) -> list[Path]:
            for k, path in enumerate(plan.latents):
                save_npy(path, lat[k])
            for k, path in enumerate(plan.offsets):
                save_offsets(path, [o[k] for o in offs])
            if mine is not None:
                for k, path in enumerate(plan.images):
                    save_image(path, mine[k])
                if plan.strip is not None and recon is not None:
                    save_image(plan.strip, labelled_strip([recon, *mine], labels))
                if plan.pasted:
                    _paste(plan, full, c.feather)
            return plan.all_outputs()

        for batch in decoded_batches(todo, LatentReader(gen.n_latent, gen.style_dim), c.batch_size, c.workers, expected=(LatentError,)):
            good, failed = partition(batch)
            yield from failed
            flow_info: dict = {}
            context = None
            if styleflow is not None and good:
                from e4ecli.pipelines.styleflow import batch_sources

                good, flow_info, sources, unusable = batch_sources(good, styleflow)
                yield from unusable
                context = (styleflow, sources)
            if not good:
                continue
            n = len(good)
            w = torch.from_numpy(np.stack([w for _, w in good])).to(device)
            with torch.inference_mode():
                edited, offsets = edited_codes(w, steps, context)  # (n, F, S, D), per layer (n * F, C_l) or None
            f = edited.shape[1]
            renders = native = recon = None
            if c.renders:
                flat = edited.reshape(-1, *edited.shape[2:])
                render_offsets = offsets
                if sweep:  # the strip starts with the unedited reconstruction
                    flat = torch.cat([flat, w])
                    if offsets is not None:
                        render_offsets = [torch.cat([o, o.new_zeros(n, o.shape[1])]) for o in offsets]
                renders, native = render_uint8(gen, ckpt.domain, flat, c.batch_size, c.size, c.precision, render_offsets)
                if sweep:
                    recon, renders = renders[n * f:], renders[: n * f]
                    native = native[: n * f] if native is not None else None
            lat = edited.float().cpu().numpy()
            offs = None if offsets is None else [o.float().cpu().reshape(n, f, -1) for o in offsets]
            for j, (it, _) in enumerate(good):
                mine = renders[j * f:(j + 1) * f] if renders is not None else None
                full = native[j * f:(j + 1) * f] if native is not None else mine
                one = recon[j] if recon is not None else None
                mine_offs = None if offs is None else [o[j] for o in offs]
                result = write_item(it, partial(write, plans[it], lat[j], mine_offs, mine, full, one), errors={PasteBackError: "paste-back"})
                if it in flow_info and result.status == "ok":
                    result.extra = {"styleflow": flow_info[it]}
                yield result


def edit(items: Sequence[Item], ckpt: LoadedCheckpoint, out_dir: Path, steps: Sequence[Step], *, device: torch.device,
         finished: Finished | None = None, sidecars: dict[Item, Path] | None = None, styleflow=None, **config) -> Iterator[Result]:
    """EditPipeline in one call, for callers of the function form: `config` holds EditConfig's fields."""
    return EditPipeline(ckpt, steps, EditConfig(**config), device=device, styleflow=styleflow)(items, out_dir, finished, sidecars)
