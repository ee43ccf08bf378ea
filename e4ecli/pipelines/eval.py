"""`e4e eval`: the e4e paper's evaluation protocol over a set of images.

For each batch of inputs x (preprocessed as the model's training data, e.g. 256x256 in [-1, 1]):
w = E(x), y = G(w) cropped to the domain and area-averaged to x's size; with an edit f, y_e = G(f(w))
likewise. Per image: l2(x, y), lpips(x, y), id(x, y) and lec(w) = ||w - (E(y_e) - (f(w) - w))||.
Per set: fid / swd between {x} and {y}; fid_edit / swd_edit between {x} and {y_e}.

Only per-image scalars, running FID statistics and bounded SWD patch reservoirs are kept: memory is
flat in the number of images.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from e4ecli.domains import domain_for
from e4ecli.files.batch import Item
from e4ecli.files.images import ImageError, load_rgb
from e4ecli.hub.checkpoints import LoadedCheckpoint
from e4ecli.metrics import MetricUnavailable
from e4ecli.pipelines.common import Result, decoded_batches

PAIR_METRICS = ("l2", "lpips", "id", "id_dlib")
SET_METRICS = ("fid", "swd", "fid_edit", "swd_edit")
EDIT_METRICS = ("fid_edit", "swd_edit", "lec")
ALL_METRICS = ("l2", "lpips", "id", "id_dlib", "fid", "swd", "fid_edit", "swd_edit", "lec")
DEFAULT_METRICS = ("l2", "lpips", "id", "fid", "swd")


class NeedsEdit(ValueError):
    """Metrics that measure an edit were asked for without one. Field: `metrics`."""

    def __init__(self, metrics: list[str]):
        self.metrics = metrics
        super().__init__(f"{', '.join(metrics)} measure(s) an edit, and none was given")


def parse_metrics(text: str, have_edit: bool) -> list[str]:
    """'l2,lpips' / 'all' / 'default' -> metric names in canonical order; ValueError naming the bad one."""
    text = text.strip().lower()
    if text in ("all", "default", "auto", ""):
        names = list(ALL_METRICS if text == "all" else DEFAULT_METRICS + (EDIT_METRICS if have_edit else ()))
        return names if have_edit else [n for n in names if n not in EDIT_METRICS]
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in ALL_METRICS]
    if bad:
        raise ValueError(f"unknown metric(s) {', '.join(bad)}; choose from {', '.join(ALL_METRICS)} (or 'all')")
    if not have_edit and any(n in EDIT_METRICS for n in names):
        raise NeedsEdit([n for n in names if n in EDIT_METRICS])
    return [n for n in ALL_METRICS if n in names]


@dataclass
class EvalResult(Result):
    values: dict[str, float] = field(default_factory=dict)


@dataclass
class Metrics:
    """The metric objects that could be built, and why the others could not.

    pair: name -> (x, y) -> (N,) per-image values (l2, lpips, id); fid_extractor: uint8 images -> features;
    backends: name -> what computes it; unavailable: name -> reason.
    """

    requested: list[str]
    pair: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = field(default_factory=dict)
    fid_extractor: Callable[[torch.Tensor], torch.Tensor] | None = None
    swd: bool = False
    lec: bool = False
    backends: dict[str, str] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)


def build_metrics(names: Sequence[str], device: torch.device, *, arcface: str = "ir_se50",
                  fid_extractor: Callable[[torch.Tensor], torch.Tensor] | None = None, fid_backend: str | None = None,
                  allow_download: bool = True, domain_name: str = "ffhq_encode", arcface_required: bool = False) -> Metrics:
    """Build every requested metric that can run here; record a reason for each that cannot.

    domain_name: the model's dataset type; `id` (face recognition) is unavailable unless the domain is faces.
    arcface_required: the user named the ArcFace weights; when they cannot be used, MetricUnavailable is raised
    (no silent fallback to dlib)."""
    from e4ecli.metrics import pairwise

    m = Metrics(list(names))

    def attempt(name: str, make: Callable[[], Any]) -> Any:
        try:
            return make()
        except MetricUnavailable as e:
            m.unavailable[name] = str(e)
            return None

    if "l2" in names:
        m.pair["l2"], m.backends["l2"] = pairwise.l2_per_image, "mean squared error vs the reconstruction at the input size, [-1, 1]"
    if "lpips" in names:
        fn = attempt("lpips", lambda: pairwise.lpips_metric(device))
        if fn:
            m.pair["lpips"], m.backends["lpips"] = fn, "lpips package, alex (v0.1)"
    faces = domain_for(domain_name).is_face
    for name in ("id", "id_dlib"):
        if name in names and not faces:
            m.unavailable[name] = f"identity similarity compares faces; this model's domain is {domain_name}"
    if "id" in names and faces and arcface_required:
        m.pair["id"], m.backends["id"] = pairwise.arcface_metric(arcface, device), "arcface_ir_se50"
    elif "id" in names and faces:
        fn = attempt("id", lambda: pairwise.arcface_metric(arcface, device))
        if fn:
            m.pair["id"], m.backends["id"] = fn, "arcface_ir_se50"
    if faces and ("id_dlib" in names or "id" in m.unavailable):  # dlib stands in for a missing ArcFace, under its own name
        fn = attempt("id_dlib", pairwise.dlib_metric)
        if fn:
            fallback = "" if "id_dlib" in names else "; reported because ArcFace (id) is unavailable"
            m.pair["id_dlib"], m.backends["id_dlib"] = fn, f"dlib_resnet_v1 (dlib's face descriptor, not comparable with ArcFace's id{fallback})"
            m.requested = [n for n in ALL_METRICS if n in m.requested or n == "id_dlib"]
        elif "id_dlib" not in names:
            m.unavailable.pop("id_dlib")
    if any(n in names for n in ("fid", "fid_edit")):
        if fid_extractor is not None:
            m.fid_extractor, backend = fid_extractor, fid_backend or "custom feature extractor"
        else:
            from e4ecli.metrics.fid import inception_extractor

            m.fid_extractor = attempt("fid", lambda: inception_extractor(device, allow_download))
            backend = "torch-fidelity InceptionV3 (inception-v3-compat, pool 2048)"
        for n in ("fid", "fid_edit"):
            if n in names:
                if m.fid_extractor is None:
                    m.unavailable[n] = m.unavailable.get("fid", "")
                else:
                    m.backends[n] = backend
        if "fid" not in names:
            m.unavailable.pop("fid", None)
    m.swd = any(n in names for n in ("swd", "swd_edit"))
    for n in ("swd", "swd_edit"):
        if n in names:
            m.backends[n] = "Laplacian-pyramid 7x7 patches (Karras et al.), mean over levels"
    m.lec = "lec" in names
    if m.lec:
        m.backends["lec"] = "||w - (E(G(f(w))) - (f(w) - w))||_2 over all styles"
    return m


def _uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> uint8 (N, 3, H, W) with the saved images' pixel values: like tensor2im
    (and files.images.to_uint8), (x + 1) / 2 clipped to [0, 1], x255, truncated -- not rounded."""
    return (((images.float() + 1) / 2).clamp(0, 1) * 255).to(torch.uint8)


class _Preprocess:
    def __init__(self, domain) -> None:
        self.domain = domain

    def __call__(self, path: Path) -> torch.Tensor:
        return self.domain.preprocess(load_rgb(path))


class Evaluator:
    """Runs the protocol over items (`run`), then `report()` gives the dataset-level numbers.

    edit: an e4ecli.edits.specs.Edit (or any object with `apply(latents, strength)`), with `strength`.
    refine: (x, w) -> w, run on the encoder's codes before any metric (latent refinement).
    """

    def __init__(self, ckpt: LoadedCheckpoint, metrics: Metrics, device: torch.device, *, edit=None, strength: float = 0.0,
                 batch_size: int = 4, workers: int = 0, lec_filter: bool = False, seed: int = 0,
                 refine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
        from e4ecli.metrics.fid import FID
        from e4ecli.metrics.swd import PatchSet

        self.ckpt, self.metrics, self.device = ckpt, metrics, device
        self.refine = refine  # (x, w) -> refined w, applied after the encoder (e4e eval --sweep refine)
        self.edit, self.strength = edit, float(strength)
        self.batch_size, self.workers, self.lec_filter = batch_size, workers, lec_filter
        req = metrics.requested
        self.want_edit = edit is not None and any(n in req for n in EDIT_METRICS)
        self.fid = None
        if metrics.fid_extractor is not None:
            self.fid = FID(metrics.fid_extractor, tuple(n for n in ("recon", "edit") if ("fid" if n == "recon" else "fid_edit") in req))
        self.patches: dict[str, PatchSet] = {}
        if metrics.swd:
            self.patches["real"] = PatchSet(seed)
            if "swd" in req:
                self.patches["recon"] = PatchSet(seed + 1)
            if "swd_edit" in req:
                self.patches["edit"] = PatchSet(seed + 2)
        self.per_image: dict[str, dict[str, float]] = {}
        self.failed: dict[str, str] = {}
        self.need_recon = any(n in req for n in ("l2", "lpips", "id", "id_dlib", "fid", "swd"))

    def run(self, items: Sequence[Item]) -> Iterator[EvalResult]:
        """Yield one EvalResult per item (status ok with per-image values, or failed with the reason)."""
        model = self.ckpt.inverter().to(self.device).eval()
        frame = self.ckpt.domain.encoder_frame  # renders -> the input's frame and size
        for batch in decoded_batches(items, _Preprocess(self.ckpt.domain), self.batch_size, self.workers, expected=(ImageError,)):
            good = [(it, x) for it, x, err in batch if err is None]
            for it, _, err in batch:
                if err is not None:
                    self.failed[it.key] = err
                    yield EvalResult(it, "failed", error=err)
            if not good:
                continue
            try:
                values = self._batch(model, frame, torch.stack([x for _, x in good]))
            except (RuntimeError, ValueError) as e:  # e.g. out of memory, images of another size than the first
                for it, _ in good:
                    self.failed[it.key] = f"{type(e).__name__}: {e}"
                    yield EvalResult(it, "failed", error=self.failed[it.key])
                continue
            for j, (it, _) in enumerate(good):
                row = {k: float(v[j]) for k, v in values.items()}
                self.per_image[it.key] = row
                yield EvalResult(it, "ok", values=row)

    @torch.inference_mode()
    def _batch(self, model, frame, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (N, 3, H, W) -> per-image values {name: (N,)}; updates the set statistics."""
        x = x.to(self.device)
        size = tuple(x.shape[-2:])
        out: dict[str, torch.Tensor] = {}
        w = model.encode(x)
        if self.refine is not None:
            with torch.inference_mode(False), torch.enable_grad():
                w = self.refine(x.clone(), w.clone())
        x8 = _uint8(x)
        if self.fid is not None:
            self.fid.update("real", x8)
        if "real" in self.patches:
            self.patches["real"].update(x)
        if self.need_recon:
            y = frame(model.decode(w), size)
            for name, fn in self.metrics.pair.items():
                out[name] = fn(x, y).float().cpu()
            if self.fid is not None and "recon" in self.fid.sets:
                self.fid.update("recon", _uint8(y))
            if "recon" in self.patches:
                self.patches["recon"].update(y)
        if self.want_edit:
            from e4ecli.metrics.lec import lec_per_image

            edited = self.edit.apply(w, self.strength)
            if self.edit.in_stylespace:  # StyleSpace / text edits: offsets of the style vectors (no W+ shift)
                offsets = [o.to(w.device) for o in self.edit.style_offsets(self.strength, w.shape[0])]
                y_e = frame(model.decoder.synthesis(edited, style_offsets=offsets), size)
            else:
                y_e = frame(model.decode(edited), size)
            if self.fid is not None and "edit" in self.fid.sets:
                self.fid.update("edit", _uint8(y_e))
            if "edit" in self.patches:
                self.patches["edit"].update(y_e)
            if self.metrics.lec:
                out["lec"] = lec_per_image(w, edited, model.encode(y_e)).float().cpu()
        return out

    def report(self) -> dict[str, Any]:
        """{metric: float or None, ..., n_images, metric_backends, unavailable, swd_levels, per_image, failed}."""
        from e4ecli.metrics.lec import percentile_filtered_mean
        from e4ecli.metrics.swd import swd

        req = self.metrics.requested
        unavailable = dict(self.metrics.unavailable)
        result: dict[str, Any] = {n: None for n in req}
        n = len(self.per_image)
        for name in req:
            if name in ("l2", "lpips", "id", "id_dlib", "lec") and name not in unavailable and n:
                vals = np.array([row[name] for row in self.per_image.values()], dtype=np.float64)
                result[name] = percentile_filtered_mean(vals) if (name == "lec" and self.lec_filter) else float(vals.mean())
        levels: dict[str, list[float]] = {}
        for name, which in (("fid", "recon"), ("fid_edit", "edit")):
            if name in req and name not in unavailable and self.fid is not None:
                try:
                    result[name] = self.fid.distance(which)
                except ValueError as e:
                    unavailable[name] = str(e)
        for name, which in (("swd", "recon"), ("swd_edit", "edit")):
            if name in req and which in self.patches:
                if n == 0:
                    unavailable[name] = "no image was evaluated"
                    continue
                result[name], levels[name] = swd(self.patches["real"], self.patches[which])
        backends = {k: v for k, v in self.metrics.backends.items() if k in req}
        for k, why in unavailable.items():
            if k in req:
                backends[k] = f"unavailable: {why}"
        result.update(n_images=n, metric_backends=backends, unavailable={k: v for k, v in unavailable.items() if k in req})
        if levels:
            result["swd_levels"] = levels
        if self.lec_filter and "lec" in req:
            result["lec_filter"] = "mean within the 1st-99th percentile"
        result["per_image"] = self.per_image
        result["failed"] = self.failed
        return result
