"""Stitching tuning (STIT, Tzaban et al. 2022): tune the generator once more, per frame, so that the edited
face blends into its frame without a seam.

    stitch_frame(generator, w_edit, w_unedited, mask, config=StitchConfig(), *, target=None, s_offsets=None, on_step=None)
        -> StitchResult(crop uint8 (S, S, 3), blend_mask float32 (S, S) in [0, 1], steps_run, border_loss,
                        border_loss_start)

generator: the clip's (PTI-tuned) generator, left untouched (a copy is tuned); w_edit, w_unedited: W+ codes
(n_styles, D) or (1, n_styles, D) of the edited and the unedited frame; mask: the face mask of the aligned crop,
(H, W) in [0, 1] at any resolution (see `refine.masks`), resized to the generator's size S; target: the aligned
source crop, uint8 (H, W, 3) -- what the band must reproduce (STIT's script uses the crop; without it, the
render of `w_unedited`, i.e. the unedited inversion, stands in); s_offsets: StyleSpace offsets of a text
(StyleCLIP global) edit, one (1, C_l) tensor or None per modulated layer, added to A_l(w_edit) in every render of
the edit (needs a generator whose `synthesis` takes `style_offsets`).

The masks, at the generator's resolution (STIT's `create_masks`; dilations are given in pixels of a 1024 px
crop and scaled to S):
  inner  = the face mask dilated by `inner_dilation`
  full   = inner dilated by `outer_dilation`
  border = (full - inner), plus the part of `inner` within `outer_dilation` of the crop's edge
  content = (mask - border) clipped to [0, 1]
Loss per step: masked_l2(render, target, border) + content_weight * masked_l2(render, edited render, content),
masked_l2(a, b, m) = sum((m * (a - b))^2) / sum(m) (summed over the channels, so an error e on every channel
costs 3 e^2; the units of STIT's `border_loss_threshold`). Adam on the synthesis weights at a constant `lr`,
starting from the edited render; before each step the border term is compared with `border_threshold` and
tuning stops under it (0: never early). The stitched crop is the tuned generator's render of `w_edit`.

The blend mask pastes it back (STIT's feathered paste): `full` eroded by `feather` pixels (default half the
outer dilation; the crop's edge counts as outside) and blurred by a Gaussian of kernel 2 * feather + 1 (OpenCV's
sigma for that kernel). It is 0 beyond the dilated face and at the crop's edge.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from e4ecli.models.stylegan2 import Generator
from e4ecli.refine.pti import tunable_copy

REFERENCE_SIZE = 1024  # dilations are in pixels of a crop this size (STIT's), scaled to the generator's


@dataclass(frozen=True)
class StitchConfig:
    """STIT's stitching options (edit_video_stitching_tuning.py) and its learning rate
    (configs/hyperparameters.py: stitching_tuning_lr). `border_threshold` is the value its README uses for
    clips with a simple background (its script's default, 0, never stops early)."""

    steps: int = 100  # --num_steps
    lr: float = 3e-4  # stitching_tuning_lr
    border_threshold: float = 0.005  # --border_loss_threshold
    inner_dilation: int = 0  # --inner_mask_dilation, pixels at 1024 px
    outer_dilation: int = 50  # --outer_mask_dilation, pixels at 1024 px
    content_weight: float = 0.01  # --content_loss_lambda
    feather: int | None = None  # blend-mask erosion/blur radius at 1024 px; None: outer_dilation // 2
    l2: bool = True  # --l2/--l1

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError(f"stitching steps must be >= 0, got {self.steps}")
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise ValueError(f"stitching learning rate must be a positive number, got {self.lr}")
        if not (self.border_threshold >= 0 and np.isfinite(self.border_threshold)):
            raise ValueError(f"border threshold must be >= 0, got {self.border_threshold}")
        if self.inner_dilation < 0 or self.outer_dilation < 0 or (self.feather is not None and self.feather < 0):
            raise ValueError("mask dilations and feather must be >= 0 pixels")
        if self.content_weight < 0:
            raise ValueError(f"content weight must be >= 0, got {self.content_weight}")


@dataclass
class StitchResult:
    crop: np.ndarray  # uint8 (S, S, 3): the tuned generator's render of the edited code
    blend_mask: np.ndarray  # float32 (S, S) in [0, 1]: where (and how much) the crop replaces the frame
    steps_run: int  # optimiser steps taken (< config.steps when it stopped early)
    border_loss: float  # the border term of the returned crop
    border_loss_start: float  # the border term of the plain edit (no stitching)


@dataclass
class Masks:
    content: torch.Tensor  # (1, 1, S, S)
    border: torch.Tensor
    full: torch.Tensor


def scaled(pixels: int | float, size: int) -> int:
    """A distance in pixels of a 1024 px crop -> pixels of a `size` px crop (at least 1 when pixels > 0)."""
    return 0 if pixels <= 0 else max(1, int(round(pixels * size / REFERENCE_SIZE)))


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Grey dilation by a (2r+1)^2 square; outside the image is ignored. mask (N, 1, H, W)."""
    return mask if radius <= 0 else F.max_pool2d(mask, 2 * radius + 1, stride=1, padding=radius)


def erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Grey erosion by a (2r+1)^2 square; outside the image counts as 0 (OpenCV's BORDER_CONSTANT 0)."""
    if radius <= 0:
        return mask
    return -F.max_pool2d(-F.pad(mask, (radius,) * 4, value=0.0), 2 * radius + 1, stride=1)


def gaussian_blur(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Gaussian of kernel 2r+1 and OpenCV's sigma for it (0.3 * (r - 1) + 0.8), reflected edges. (N, 1, H, W)."""
    if radius <= 0:
        return mask
    sigma = 0.3 * (radius - 1) + 0.8
    x = torch.arange(-radius, radius + 1, dtype=mask.dtype, device=mask.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    pad = min(radius, mask.shape[-1] - 1, mask.shape[-2] - 1)
    if pad < radius:  # tiny masks: reflection cannot reach that far
        out = F.pad(mask, (radius,) * 4, mode="replicate")
    else:
        out = F.pad(mask, (radius,) * 4, mode="reflect")
    out = F.conv2d(out, k.reshape(1, 1, 1, -1))
    return F.conv2d(out, k.reshape(1, 1, -1, 1))


def stitch_masks(mask: torch.Tensor, config: StitchConfig) -> Masks:
    """mask (1, 1, S, S) binary face mask -> STIT's content / border / full masks (module docstring)."""
    size = mask.shape[-1]
    inner = dilate(mask, scaled(config.inner_dilation, size))
    outer = scaled(config.outer_dilation, size)
    full = dilate(inner, outer)
    ys, xs = torch.meshgrid(torch.arange(mask.shape[-2], device=mask.device), torch.arange(size, device=mask.device), indexing="ij")
    near_edge = ((ys < outer) | (xs < outer) | (ys >= mask.shape[-2] - outer) | (xs >= size - outer)).to(mask.dtype)
    border = torch.maximum(torch.minimum(near_edge, inner), full - inner).clamp(0, 1)
    content = (mask - border).clamp(0, 1)
    return Masks(content, border, full)


def blend_mask(full: torch.Tensor, config: StitchConfig) -> torch.Tensor:
    """The soft paste mask (module docstring): full (1, 1, S, S) -> (1, 1, S, S) in [0, 1]."""
    size = full.shape[-1]
    feather = scaled(config.outer_dilation // 2 if config.feather is None else config.feather, size)
    return gaussian_blur(erode(full, feather), feather).clamp(0, 1)


def masked_error(image: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, l2: bool = True) -> torch.Tensor:
    """STIT's masked_l2: sum(|m (a - b)|^p) / sum(m), p = 2 (l2) or 1; 0 for an empty mask."""
    diff = mask * (image - target)
    err = diff.pow(2) if l2 else diff.abs()
    return err.sum() / mask.sum().clamp_min(1e-8)


def _codes(w: torch.Tensor, gen: Generator, device) -> torch.Tensor:
    w = torch.as_tensor(w).detach().float().to(device).clone()  # a normal tensor even from inference mode
    w = w.unsqueeze(0) if w.ndim == 2 else w
    if w.shape != (1, gen.n_latent, gen.style_dim):
        raise ValueError(f"a W+ code must be ({gen.n_latent}, {gen.style_dim}), got {tuple(w.shape)}")
    return w


def _image_tensor(image: np.ndarray, size: int, device) -> torch.Tensor:
    """uint8 (H, W, 3) -> (1, 3, size, size) in [-1, 1] (area when shrinking, bilinear when enlarging)."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"the target crop must be (H, W, 3), got {arr.shape}")
    x = torch.from_numpy(np.ascontiguousarray(arr)).to(device).permute(2, 0, 1)[None].float() / 127.5 - 1
    return _resize(x, size)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-2:] == (size, size):
        return x
    if x.shape[-1] > size:
        return F.adaptive_avg_pool2d(x, (size, size))
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def _mask_tensor(mask, size: int, device) -> torch.Tensor:
    m = torch.as_tensor(np.asarray(mask, dtype=np.float32)).to(device)
    if m.ndim != 2:
        raise ValueError(f"the face mask must be (H, W), got shape {tuple(m.shape)}")
    return (_resize(m[None, None], size) > 0.5).float()


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """(1, 3, S, S) in [-1, 1] -> uint8 (S, S, 3), as files.images.to_uint8 (tensor2im)."""
    x = ((image[0].detach().float().cpu().clamp(-1, 1) + 1) / 2 * 255).permute(1, 2, 0).numpy()
    return x.astype(np.uint8)


def stitch_frame(generator: Generator, w_edit, w_unedited, mask, config: StitchConfig = StitchConfig(), *,
                 target: np.ndarray | None = None, s_offsets=None,
                 on_step: Callable[[int, float], None] | None = None) -> StitchResult:
    """Stitching tuning of one frame (module docstring). on_step(step, border loss) before each step's update.
    Runs with gradients whatever the caller's mode (no_grad or inference_mode around it)."""
    with torch.inference_mode(False), torch.enable_grad():
        return _stitch(generator, w_edit, w_unedited, mask, config, target, s_offsets, on_step)


def _stitch(generator: Generator, w_edit, w_unedited, mask, config: StitchConfig, target, s_offsets, on_step) -> StitchResult:
    device = next(generator.parameters()).device
    size = generator.size
    w_edit = _codes(w_edit, generator, device)
    if s_offsets is not None:
        import inspect

        if "style_offsets" not in inspect.signature(generator.synthesis).parameters:
            raise ValueError("StyleSpace offsets need a generator that renders from style vectors (synthesis(style_offsets=))")
        offsets = [None if d is None else torch.as_tensor(d).detach().float().to(device).clone() for d in s_offsets]

    def edit_render(g: Generator) -> torch.Tensor:
        return (g.synthesis(w_edit) if s_offsets is None else g.synthesis(w_edit, style_offsets=offsets)).float()

    face = _mask_tensor(mask, size, device)
    masks = stitch_masks(face, config)
    with torch.no_grad():
        edited = edit_render(generator)
        border_target = (_image_tensor(target, size, device) if target is not None
                         else generator.synthesis(_codes(w_unedited, generator, device)).float())

    t = tunable_copy(generator, config.lr)
    tuned, opt = t.generator, t.optimizer
    t.unfreeze()
    start = None
    steps_run = 0
    for step in range(config.steps):
        render = edit_render(tuned)
        border = masked_error(render, border_target, masks.border, config.l2)
        if start is None:
            start = float(border.detach())
        if on_step is not None:
            on_step(step, float(border.detach()))
        if float(border.detach()) < config.border_threshold:
            break
        loss = border + config.content_weight * masked_error(render, edited, masks.content, config.l2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps_run += 1
    t.freeze()
    with torch.no_grad():
        render = edit_render(tuned) if steps_run else edited
        final = float(masked_error(render, border_target, masks.border, config.l2))
        if start is None:
            start = float(masked_error(edited, border_target, masks.border, config.l2))
        soft = blend_mask(masks.full, config)
    del t, tuned, opt
    return StitchResult(_to_uint8(render), soft[0, 0].cpu().numpy().astype(np.float32), steps_run, final, start)
