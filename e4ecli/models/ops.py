"""Low-level StyleGAN2 operations in plain PyTorch (CPU and CUDA, nothing to compile).

`upfirdn2d` follows the semantics of rosinality's / NVIDIA's op of the same name (upsample by
zero insertion, pad, FIR-filter with the *flipped* kernel, i.e. a true convolution, then
downsample) but runs it as one depthwise convolution over all channels instead of a
single-channel convolution over N*C images.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def make_kernel(k) -> torch.Tensor:
    """1-D taps -> normalised 2-D separable kernel (sum 1); a 2-D input is only normalised. Always built on
    the CPU: under a meta-device build (checkpoint loading) arithmetic on meta tensors would import
    torch._dynamo (about 1.4 s); the checkpoint's kernel replaces this one anyway."""
    k = torch.as_tensor(k, dtype=torch.float32, device="cpu")
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0),
              bias: torch.Tensor | None = None) -> torch.Tensor:
    """x: (N, C, H, W); kernel: (kh, kw); pad: (before, after) applied to both axes;
    bias: optional (C,) added to the result inside the same convolution."""
    n, c, h, w = x.shape
    p0, p1 = pad
    if up > 1:
        # zero insertion: (H, W) -> (H*up, W*up) with the samples at the top-left of each cell
        z = x.new_zeros(n, c, h, up, w, up)
        z[:, :, :, 0, :, 0] = x
        x = z.view(n, c, h * up, w * up)
    conv_pad = 0
    if p0 == p1 > 0:  # symmetric (the blur after every upsampling conv): the convolution pads, no padded copy
        conv_pad = p0
    elif p0 > 0 or p1 > 0:
        x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:
        hh, ww = x.shape[2], x.shape[3]
        x = x[:, :, max(-p0, 0) : hh - max(-p1, 0), max(-p0, 0) : ww - max(-p1, 0)]
    kh, kw = kernel.shape
    flipped = torch.flip(kernel, [0, 1]).to(dtype=x.dtype)
    if torch.onnx.is_in_onnx_export():
        # traced channel counts are not constants: one single-channel filter over N*C planes (same sums)
        hh, ww = x.shape[2], x.shape[3]
        out = F.conv2d(x.reshape(-1, 1, hh, ww), flipped.view(1, 1, kh, kw), stride=down, padding=conv_pad)
        out = out.reshape(n, c, out.shape[2], out.shape[3])
        return out if bias is None else out + bias.to(x.dtype).view(1, -1, 1, 1)
    weight = flipped.view(1, 1, kh, kw).expand(c, 1, kh, kw)
    return F.conv2d(x, weight, bias=None if bias is None else bias.to(x.dtype), stride=down, padding=conv_pad, groups=c)


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2, scale: float = math.sqrt(2)) -> torch.Tensor:
    """leaky_relu(x + bias) * sqrt(2), bias broadcast over the channel axis (dim 1)."""
    shape = [1, -1] + [1] * (x.ndim - 2)
    return F.leaky_relu(x + bias.view(shape).to(x.dtype), negative_slope) * scale
