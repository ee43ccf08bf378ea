"""The page's model and callbacks as plain functions (torch, no gradio): one Session per `e4e ui`.

A Session holds the loaded checkpoint, the directions offered as sliders, a lock (one model call at a time)
and a private temporary folder: uploads are copied there under a generated name, inversions are written
there by the same pipeline `e4e invert` runs, and downloads are made there. Every failure the user can
cause (a bad photo, no face, an unusable latent, a direction that cannot load) raises UIError with one
line to show on the page.
"""
from __future__ import annotations

import itertools
import math
import shutil
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from e4ecli.files.images import IMAGE_EXTENSIONS
from e4ecli.files.latents import LATENT_EXTENSIONS
from e4ecli.files.provenance import base_record, ident_hash
from e4ecli.edits.prompts import DEFAULT_BETA
from e4ecli.ui.command import View, is_text, stem

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # 20 MB per uploaded file
MAX_UPLOAD_PIXELS = 40_000_000  # 40 megapixels (e.g. 8000 x 5000), checked from the header before decoding
PREVIEW_SIZE = 256  # the preview's width; the full size is rendered on request
SEFA_COMPONENTS = 5  # SeFa's top components offered as sliders
SWEEP_FRAMES = 16
SWEEP_FPS = 8.0
MAX_LISTED = 500  # files listed from the folders given on the command line


class UIError(Exception):
    """What went wrong, as one line for the page."""


@dataclass(frozen=True)
class Slider:
    """One direction offered on the page: its --direction spec, a label, its slider range."""

    spec: str
    label: str
    kind: str
    low: float
    high: float
    edit: object = field(repr=False, compare=False)

    @property
    def step(self) -> float:
        return 0.1 if self.high - self.low <= 20 else 0.5


@dataclass
class Opened:
    """One input on screen: the code, the generator that renders it, and what to show beside it."""

    view: View  # the input and inversion settings (edits are the page's)
    latent: torch.Tensor  # (n_styles, 512), cpu
    generator: torch.nn.Module
    reconstruction: np.ndarray  # uint8 (h, w, 3), full size
    crop: np.ndarray | None = None  # the aligned photo the encoder saw (photos only)
    distortion: str = ""
    sidecar: object | None = None  # pasteback.Sidecar when the input has an alignment sidecar
    folder: Path | None = None  # where this input's files were written in the session folder
    photo: Path | None = None  # the photo the encoder read (photos only): re-inverted when the dial changes


def safe_upload_name(name: str) -> str:
    """An uploaded file's name reduced to a harmless basename: no folders, no leading dots or dashes, its type kept
    ('../../x.jpg' -> 'x.jpg', '..jpg' -> 'upload.jpg')."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem_, dot, suffix = base.rpartition(".")
    if not dot:
        stem_, suffix = base, ""
    suffix = "".join(c for c in suffix if c.isalnum())[:10]
    cleaned = "".join(c if (c.isalnum() or c in "._- ") else "_" for c in stem_).strip(" .-_")[:120] or "upload"
    return f"{cleaned}.{suffix}" if suffix else cleaned


class Session:
    """A loaded model and its page state. `ckpt`: hub.checkpoints.LoadedCheckpoint; `ident`: its id
    (`name:hash`); `checkpoint`: the --checkpoint text the batch commands repeat (None for the default)."""

    def __init__(self, ckpt, ident: str, checkpoint: str | None, device: torch.device, workdir: Path, *, inputs: Sequence[Path] = (),
                 detector: str = "face-alignment", preview_size: int = PREVIEW_SIZE, notify: Callable[[str], None] | None = None,
                 clip_weights: Path | None = None, relevance: Path | None = None):
        self.ckpt, self.ident, self.checkpoint, self.device = ckpt, ident, checkpoint, torch.device(device)
        self.workdir = Path(workdir)
        self.detector_name = detector
        self.preview_size = preview_size
        self.notify = notify or (lambda message: None)
        self.lock = threading.Lock()
        self._counter = itertools.count(1)
        self._aligner = None
        self._nets: dict = {}
        self.generator = ckpt.generator.to(self.device).eval()
        self.inputs = list(inputs)
        self.sliders, self.unavailable = self._directions()
        self.clip_weights, self.relevance = clip_weights, relevance
        self.text_note = self._text_note()
        self._text_edits: dict = {}

    # -- what the page offers -------------------------------------------------------------------------------
    @property
    def can_invert(self) -> bool:
        return self.ckpt.has_encoder

    @property
    def is_face(self) -> bool:
        return self.ckpt.domain.is_face

    @property
    def n_stages(self) -> int:
        enc = self.ckpt.encoder
        return int(getattr(enc, "style_count", 0)) if enc is not None and hasattr(enc, "set_progressive_stage") else 0

    def _directions(self) -> tuple[list[Slider], list[str]]:
        """Sliders for the registry's directions of this model's domain and SeFa's top components; one note per
        direction that cannot be offered (not downloadable now, or made for other latents)."""
        from e4ecli.hub.directions import DirectionError, load_registry
        from e4ecli.pipelines.directions import resolve

        specs = [(name, e.description) for name, e in load_registry().items()
                 if e.kind in ("interfacegan", "ganspace") and e.domain in (self.ckpt.domain.short, "any")]
        specs += [(f"sefa:{k}", f"SeFa component {k} of this generator") for k in range(SEFA_COMPONENTS)]
        sliders, notes = [], []
        key = ident_hash(self.ident)
        for spec, description in specs:
            try:
                edit = resolve(spec, self.generator, domain_name=self.ckpt.domain.name, sefa_cache_key=key)
            except (DirectionError, OSError, ValueError) as e:
                notes.append(f"{spec}: {first_line(e)}")
                continue
            low, high = edit.default_range or (-abs(edit.default_strength or 3.0), abs(edit.default_strength or 3.0))
            label = f"{spec} — {description}" if description else spec
            sliders.append(Slider(spec, label, edit.kind, float(low), float(high), edit))
        return sliders, notes

    # -- text directions (StyleCLIP global directions) --------------------------------------------------------
    def _text_note(self) -> str:
        """'' when text directions can be offered, else one line saying what is missing and how to get it."""
        if self.relevance is None:
            return ("Text directions: start `e4e ui` with --relevance FILE (the generator's channel relevance: "
                    "`e4e directions styleclip -o FILE` computes it) and --clip-weights FILE (CLIP ViT-B/32; README: Text edits)")
        from e4ecli.hub.clip import ZOO_NAME

        if self.clip_weights is None and not _zoo_cached(ZOO_NAME):
            return ("Text directions: start `e4e ui` with --clip-weights FILE (OpenAI's ViT-B-32.pt), or download the zoo's "
                    "clip_vit_b32_openai once (README: Text edits)")
        return ""

    @property
    def has_text(self) -> bool:
        return not self.text_note

    def text_edit(self, spec: str, neutral: str | None = None, beta: float = DEFAULT_BETA):
        """The Edit of `text:TARGET` with this --neutral and --beta (as `e4e edit` resolves it; remembered)."""
        from e4ecli.edits.prompts import TextOptions
        from e4ecli.hub.directions import DirectionError
        from e4ecli.pipelines.directions import check, resolve

        if not self.has_text:
            raise UIError(self.text_note)
        options = TextOptions(neutral=neutral, beta=float(beta), clip_weights=self.clip_weights, relevance=self.relevance,
                              device=str(self.device))
        key = (spec, neutral, float(beta))
        if key not in self._text_edits:
            try:
                check(spec, None, options)
                with self.lock:
                    self._text_edits[key] = resolve(spec, self.generator, domain_name=self.ckpt.domain.name,
                                                    sefa_cache_key=ident_hash(self.ident), download=False, text=options)
            except (DirectionError, OSError, ValueError) as e:
                raise UIError(first_line(e)) from None
            if len(self._text_edits) > 32:
                self._text_edits.pop(next(iter(self._text_edits)))
        return self._text_edits[key]

    def slider(self, spec: str) -> Slider:
        for s in self.sliders:
            if s.spec == spec:
                return s
        raise UIError(f"{spec}: not a direction on this page (it offers {', '.join(s.spec for s in self.sliders)})")

    def listed_files(self) -> list[str]:
        """Latents and photos in the folders/files given on the command line (sorted, at most MAX_LISTED)."""
        found: list[str] = []
        exts = set(LATENT_EXTENSIONS) | (set(IMAGE_EXTENSIONS) if self.can_invert else set())
        for root in self.inputs:
            paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
            for p in paths:
                if p.suffix.lower() in exts and not p.name.endswith((".aligned.png", ".pasted.png")):
                    found.append(str(p))
                if len(found) >= MAX_LISTED:
                    return found
        return found

    # -- opening inputs --------------------------------------------------------------------------------------
    def _folder(self) -> Path:
        folder = self.workdir / f"{next(self._counter):04d}"
        folder.mkdir(parents=True)
        return folder

    def accept_upload(self, path: str | Path, name: str | None = None) -> Path:
        """Copy an uploaded file into the session folder under a safe name, after the size and pixel checks."""
        from PIL import Image, UnidentifiedImageError

        src = Path(path)
        shown = safe_upload_name(name or src.name)
        size = src.stat().st_size
        if size > MAX_UPLOAD_BYTES:
            raise UIError(f"{shown}: {size / 1e6:.1f} MB is over the upload limit of {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
        suffix = Path(shown).suffix.lower()
        if suffix in IMAGE_EXTENSIONS:
            try:
                with Image.open(src) as img:
                    w, h = img.size
            except UnidentifiedImageError:
                raise UIError(f"{shown}: not an image (unrecognised format)") from None
            except Exception as e:  # noqa: BLE001 -- any decoder failure is 'not an image'; the message never shows our folder
                raise UIError(f"{shown}: not an image ({first_line(e).replace(str(src), shown)})") from None
            if w * h > MAX_UPLOAD_PIXELS:
                raise UIError(f"{shown}: {w}x{h} is over the upload limit of {MAX_UPLOAD_PIXELS // 1_000_000} megapixels")
        elif suffix not in LATENT_EXTENSIONS:
            raise UIError(f"{shown}: upload a photo ({', '.join(sorted(IMAGE_EXTENSIONS))}) or a latent (.npy)")
        dest = self._folder() / shown
        shutil.copyfile(src, dest)
        return dest

    def open(self, path: str | Path, view: View, on_step: Callable[[int, float], None] | None = None) -> Opened:
        """A photo (inverted with view's dial; `on_step(step, loss)` while refining) or a latent; `view.source`
        names it in the batch command."""
        path = Path(path)
        if path.suffix.lower() in LATENT_EXTENSIONS:
            return self.open_latent(path, view)
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            return self.open_photo(path, view, on_step=on_step)
        raise UIError(f"{path.name}: not a photo or a latent (.npy)")

    def _landmarks(self):
        if self._aligner is None:
            from e4ecli.landmarks import LandmarkError, open_landmarks
            from e4ecli.pipelines.align import FaceAligner

            try:
                backend = open_landmarks(self.detector_name, str(self.device) if self.detector_name != "dlib" else "cpu", notify=self.notify)
            except LandmarkError as e:
                raise UIError(first_line(e)) from None
            self._aligner = _Remembered(FaceAligner(backend, size=256, supersample=1))  # as `e4e invert --align`
        return self._aligner

    def _loss_nets(self, opts):
        from e4ecli.pipelines.refine import describe_missing, load_loss_nets

        key = (opts.mode, opts.lpips, opts.id)
        if key not in self._nets:
            nets = load_loss_nets(opts, self.device, face=self.is_face)  # the domain decides what is a face
            for line in describe_missing(nets):
                self.notify(line)
            self._nets[key] = nets
        return self._nets[key]

    def open_photo(self, path: Path, view: View, on_step: Callable[[int, float], None] | None = None) -> Opened:
        """Invert one photo exactly as `e4e invert PHOTO -o latents/ --align [--stage K] [--refine M --refine-steps N]`
        does (the same pipeline, writing into the session folder); the reconstruction and its distortion."""
        from e4ecli.files.batch import Item
        from e4ecli.pasteback import read_sidecar
        from e4ecli.pipelines.invert import ALIGNED_SUFFIX, PTI_SUFFIX, invert
        from e4ecli.pipelines.refine import RefineOptions

        if not self.can_invert:
            raise UIError(f"{self.ckpt.path.name} holds only a generator: open a latent (.npy), or start `e4e ui` with an e4e checkpoint")
        if view.stage is not None and not 0 <= view.stage < max(self.n_stages, 1):
            raise UIError(f"--stage {view.stage}: this encoder has stages 0 to {self.n_stages - 1}" if self.n_stages
                          else "--stage: only e4e encoders have stages")
        align = self.is_face
        opts = nets = None
        if view.refine:
            opts = RefineOptions(view.refine, steps=view.refine_steps)
            nets = self._loss_nets(opts)
        out = self._folder()
        key = stem(path.name) or "photo"
        base = base_record(self.ckpt.path, self.ident)
        with self.lock:
            aligner = self._landmarks() if align else None
            stage = view.stage if view.stage is not None else (self.n_stages - 1 if self.n_stages else None)
            results = list(invert([Item(path, key)], self.ckpt, out, device=self.device, aligner=aligner, stage=stage,
                                  save_reconstructions=True, save_aligned=align, refine=opts, nets=nets, base=base, on_step=on_step))
        result = results[-1]
        if result.status != "ok":
            raise UIError(f"{path.name}: {result.error}")
        latent = torch.from_numpy(np.load(out / f"{key}.npy")).float()
        generator = self.generator
        if opts is not None and opts.is_pti:
            from e4ecli.hub.checkpoints import load_checkpoint

            generator = load_checkpoint(out / f"{key}{PTI_SUFFIX}").generator.to(self.device).eval()
        recon = _read_rgb(out / f"{key}.png")
        crop = _read_rgb(out / f"{key}{ALIGNED_SUFFIX}") if align else _read_rgb(path)
        sidecar = read_sidecar(out / f"{key}.json") if align else None
        view = replace(view, photo=True, align=align)
        return Opened(view, latent, generator, recon, crop, distortion(crop, recon), sidecar, out, path)

    def open_latent(self, path: Path, view: View) -> Opened:
        """A W+ latent (.npy) as `e4e edit` reads it; its alignment sidecar <name>.json beside it enables paste-back."""
        from e4ecli.files.latents import LatentError, LatentReader
        from e4ecli.pasteback import PasteBackError, find_sidecar, read_sidecar

        try:
            latent = torch.from_numpy(np.asarray(LatentReader(self.generator.n_latent, self.generator.style_dim)(path))).float()
        except LatentError as e:
            raise UIError(f"{path.name}: {first_line(e)}") from None
        sidecar = None
        found = find_sidecar(path, stem(path.name))
        if found is not None:
            try:
                sidecar = read_sidecar(found)
            except (PasteBackError, OSError, ValueError):
                sidecar = None
        recon = self.render(latent[None], size=None)[0]
        view = replace(view, photo=False, align=False, stage=None, refine=None)
        return Opened(view, latent, self.generator, recon, None, "", sidecar)

    # -- rendering -------------------------------------------------------------------------------------------
    def steps(self, edits: Sequence[tuple[str, float]], neutral: str | None = None, beta: float = DEFAULT_BETA):
        from e4ecli.edits.specs import Strength
        from e4ecli.pipelines.edit import Step, format_strength

        return [Step(self.text_edit(spec, neutral, beta) if is_text(spec) else self.slider(spec).edit,
                     Strength((float(v),), format_strength(float(v)), False)) for spec, v in edits]

    def edited(self, opened: Opened, edits: Sequence[tuple[str, float]], neutral: str | None = None, beta: float = DEFAULT_BETA) -> torch.Tensor:
        """The edited latent (n_styles, 512), the edits composed in order as `e4e edit` composes them."""
        return self.codes(opened, edits, neutral, beta)[0]

    def codes(self, opened: Opened, edits: Sequence[tuple[str, float]], neutral: str | None = None,
              beta: float = DEFAULT_BETA) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """(the edited latent (n_styles, 512), the StyleSpace offsets of a text edit (one (1, C_l) per layer) or None):
        the W+ edits in order, then the text edit's offsets, as `e4e edit` composes them (pipelines.edit.edited_codes)."""
        from e4ecli.pipelines.edit import edited_codes

        w = opened.latent[None].to(self.device)
        steps = self.steps(edits, neutral, beta)
        with torch.inference_mode():
            latents, offsets = edited_codes(w, steps)
        return latents[0, 0].cpu(), offsets

    def render(self, latents: torch.Tensor, size: int | None, generator=None, offsets: Sequence[torch.Tensor] | None = None) -> np.ndarray:
        """latents (N, S, D) -> uint8 (N, h, w, 3) at width `size` (None: the generator's own size). Below the
        generator's size the fast path stops synthesis at that resolution (a coarse preview, see Generator.synthesis)."""
        from e4ecli.files.images import area_resize, to_uint8
        from e4ecli.pipelines.edit import render_uint8

        gen = generator or self.generator
        latents = latents.to(self.device)
        with self.lock:
            if size is None or size >= gen.size:
                return render_uint8(gen, self.ckpt.domain, latents, 1, size, offsets=offsets)[0]
            with torch.inference_mode():
                images = self.ckpt.domain.crop(gen.synthesis(latents, max_size=size, style_offsets=offsets))
                return to_uint8(area_resize(images, size) if images.shape[-1] != size else images)

    def preview(self, opened: Opened, edits: Sequence[tuple[str, float]], *, full: bool = False, paste_back: bool = False,
                feather: float = 0.1, neutral: str | None = None, beta: float = DEFAULT_BETA) -> np.ndarray:
        """The edited image: at the preview width (fast) or full size; pasted into the photo when asked and possible."""
        w, offsets = self.codes(opened, edits, neutral, beta)
        size = None if full or paste_back else self.preview_size
        image = self.render(w[None], size, opened.generator, offsets)[0]
        if paste_back:
            image = self.pasted(opened, image, feather)
        return image

    def pasted(self, opened: Opened, face: np.ndarray, feather: float) -> np.ndarray:
        from e4ecli.pasteback import PasteBackError, load_photo, paste_back

        if opened.sidecar is None:
            raise UIError("paste-back needs the photo's alignment sidecar: upload a photo (aligned here) or open a latent with <name>.json beside it")
        try:
            photo = load_photo(opened.sidecar)
            return paste_back(photo, face, opened.sidecar.source_from_output, opened.sidecar.output_size, feather)
        except (PasteBackError, OSError, ValueError) as e:
            raise UIError(f"paste-back: {first_line(e)}") from None

    # -- downloads ------------------------------------------------------------------------------------------
    def downloads(self, opened: Opened, edits: Sequence[tuple[str, float]], *, paste_back: bool = False, feather: float = 0.1,
                  sweep: tuple[str, float, float, int] | None = None, neutral: str | None = None, beta: float = DEFAULT_BETA) -> list[Path]:
        """Write the full-size PNG (and the pasted one), the edited latent (and a text edit's style offsets, as
        `e4e edit --save-latents` writes them) and, with `sweep`, a sweep GIF of one direction as
        `e4e video LATENT -d SPEC -s A:B -n FRAMES` renders it (at the preview width)."""
        from e4ecli.files.batch import save_image, save_npy
        from e4ecli.pipelines.edit import OFFSETS_SUFFIX, save_offsets

        folder = self._folder()
        name = stem(opened.view.source) or "image"
        w, offsets = self.codes(opened, edits, neutral, beta)
        image = self.render(w[None], None, opened.generator, offsets)[0]
        files = [folder / f"{name}.png", folder / f"{name}.npy"]
        save_image(files[0], image)
        save_npy(files[1], w.numpy())
        if offsets is not None:
            files.append(folder / f"{name}{OFFSETS_SUFFIX}")
            save_offsets(files[-1], [o[0] for o in offsets])
        if paste_back:
            files.append(folder / f"{name}.pasted.png")
            save_image(files[-1], self.pasted(opened, image, feather))
        if sweep is not None:
            files.append(self.sweep_gif(opened, sweep, folder / f"{name}_sweep.gif"))
        return files

    def sweep_gif(self, opened: Opened, sweep: tuple[str, float, float, int], path: Path) -> Path:
        from e4ecli.pipelines.video import render_frames, sweep_latents, write_video

        spec, low, high, frames = sweep
        latents = sweep_latents(opened.latent.to(self.device), self.slider(spec).edit, low, high, frames)
        if self.preview_size < opened.generator.size:  # the GIF at the preview's width, by the fast path
            images = list(self.render(latents, self.preview_size, opened.generator))
        else:
            with self.lock:
                images = list(render_frames(opened.generator, self.ckpt.domain, latents, 4, None))
        return write_video(path, images, SWEEP_FPS)

    def hide_folder(self, message: str) -> str:
        """A message with the session folder's paths shortened to the file names the user gave."""
        import re

        return re.sub(re.escape(str(self.workdir)) + r"/\d+/", "", message)

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


class _Remembered:
    """An aligner that remembers its last few photos: turning the dial re-inverts without detecting the face again."""

    def __init__(self, aligner, keep: int = 8):
        self.aligner, self.keep, self.seen = aligner, keep, {}

    def __call__(self, path: Path) -> list:
        st = Path(path).stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
        if key not in self.seen:
            if len(self.seen) >= self.keep:
                self.seen.pop(next(iter(self.seen)))
            self.seen[key] = self.aligner(path)
        return self.seen[key]


def _zoo_cached(name: str) -> bool:
    """Whether the zoo's file `name` is already downloaded (the page never downloads CLIP while serving)."""
    from e4ecli.hub import zoo

    try:
        return zoo.is_cached(zoo.lookup(name))
    except zoo.ZooError:
        return False


def _read_rgb(path: Path) -> np.ndarray:
    from e4ecli.files.images import load_rgb

    return np.asarray(load_rgb(path))


def distortion(target: np.ndarray, reconstruction: np.ndarray) -> str:
    """'MSE 0.0123 · PSNR 25.1 dB' between the encoder's input (resized to the reconstruction) and the reconstruction,
    in [-1, 1] units as e4e's L2 loss."""
    from PIL import Image

    h, w = reconstruction.shape[:2]
    t = np.asarray(Image.fromarray(target).resize((w, h), Image.BILINEAR), dtype=np.float64) / 127.5 - 1
    r = reconstruction.astype(np.float64) / 127.5 - 1
    mse = float(np.mean((t - r) ** 2))
    psnr = 10 * math.log10(4.0 / mse) if mse > 0 else float("inf")
    return f"MSE {mse:.4f} · PSNR {psnr:.1f} dB (input vs reconstruction, [-1, 1] units)"


def first_line(error: BaseException | str) -> str:
    """The first line of an error's message (the settings it names spelled as the command box writes them)."""
    from e4ecli.errors import worded
    from e4ecli.ui.command import FLAGS

    text = worded(error, FLAGS).strip() or type(error).__name__ if isinstance(error, BaseException) else str(error).strip()
    return text.splitlines()[0] if text else "unknown error"
