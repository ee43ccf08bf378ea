"""StyleGAN2 generator in rosinality's state-dict layout (the layout of the e4e/pSp checkpoints).

Differences from the original `model.py`, none of which change the numbers:
  * channel counts per resolution are constructor arguments (the loader reads them from the
    checkpoint's tensor shapes), so channel multiplier 1 and 2 and other channel plans load;
  * modulated convolutions scale the activations by the styles and demodulate the outputs
    (one ordinary convolution for the whole batch) instead of a grouped convolution with
    per-sample weights -- the same linear map, computed faster;
  * `synthesis(wplus)` / `mapping(z)` are provided beside the original `forward` signature;
  * optional `conv_clamp` (StyleGAN2-ADA's clamp of every layer's output to [-c, c] after bias and
    activation, used by generators trained in fp16); None (the default) is rosinality's behaviour.

Shapes: z (N, 512); w (N, 512); W+ latents (N, n_latent, 512); images (N, 3, size, size) in ~[-1, 1].
"""
from __future__ import annotations

import math
import random
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from e4ecli.models.ops import fused_leaky_relu, make_kernel, upfirdn2d

BLUR_KERNEL = (1, 3, 3, 1)


def channel_plan(size: int, channel_multiplier: int = 2) -> dict[int, int]:
    """rosinality's channels per resolution."""
    plan = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
    out = {}
    for res in (2 ** i for i in range(2, int(math.log2(size)) + 1)):
        c = plan.get(res, max(16 * 1024 // res, 1))
        out[res] = c * channel_multiplier if res >= 64 else c
    return out


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate; `activation='fused_lrelu'` adds the bias inside the lrelu."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0, lr_mul: float = 1.0, activation: str | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.zeros(out_dim).fill_(bias_init)) if bias else None
        self.activation = activation
        self.scale = (1 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            out = F.linear(x, self.weight * self.scale)
            return fused_leaky_relu(out, bias) if bias is not None else F.leaky_relu(out, 0.2) * math.sqrt(2)
        return F.linear(x, self.weight * self.scale, bias=bias)


class FusedLeakyReLU(nn.Module):
    """Holds the activation bias under rosinality's state-dict key (`activate.bias`); StyledConv applies it
    inside its convolution, so this module has no forward."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))


class Blur(nn.Module):
    def __init__(self, kernel=BLUR_KERNEL, pad: tuple[int, int] = (0, 0), upsample_factor: int = 1):
        super().__init__()
        k = make_kernel(kernel)
        if upsample_factor > 1:
            k = k * upsample_factor**2
        self.register_buffer("kernel", k)
        self.pad = pad

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad, bias=bias)


class Upsample(nn.Module):
    def __init__(self, kernel=BLUR_KERNEL, factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor**2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution (optionally 2x upsampling, with the blur after it).

    Two exact ways to compute it:
      * one image (and CPU inference, image by image): modulate and demodulate the (small) weight,
        then one plain convolution;
      * a batch (and ONNX export, whose convolutions need constant weights): scale the activations
        by the styles, one convolution with the shared weight for the whole batch, then demodulate
        the outputs (no grouped convolution, no per-sample weights).
    `input_gain` is a constant the true input was divided by (the previous layer's sqrt(2) gain,
    folded here instead of being multiplied over a whole feature map); `bias` (out,) is added to the
    output inside the convolution (or the blur) when possible.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, demodulate: bool = True, upsample: bool = False,
                 blur_kernel=BLUR_KERNEL):
        super().__init__()
        self.eps = 1e-8
        self.kernel_size = kernel_size
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.upsample = upsample
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)
        self.demodulate = demodulate

    def _conv(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.upsample:
            return self.blur(F.conv_transpose2d(x, w.transpose(0, 1), stride=2, padding=0), bias)
        return F.conv2d(x, w, bias=None if bias is None else bias.to(x.dtype), padding=self.padding)

    def forward(self, x: torch.Tensor, style: torch.Tensor | None, input_gain: float = 1.0, bias: torch.Tensor | None = None,
                s: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, in, H, W); style: (N, style_dim) -> (N, out, H', W'). `s` (N, in): the StyleSpace vector
        A(style) given directly (style is then unused)."""
        if s is None:
            s = self.modulation(style)  # (N, in)
        weight = self.weight[0] * self.scale  # (out, in, k, k)
        # demod[n, o] = 1 / sqrt(sum_{i,k} (w[o, i, k] * s[n, i])^2 + eps)
        demod = torch.rsqrt((s * s) @ weight.pow(2).sum([2, 3]).t() + self.eps) if self.demodulate else None
        if input_gain != 1.0:
            s = s * input_gain
        if not torch.onnx.is_in_onnx_export() and (x.shape[0] == 1 or (x.device.type == "cpu" and not torch.is_grad_enabled())):
            outs = []
            for n in range(x.shape[0]):
                w = weight * s[n].view(1, -1, 1, 1)
                if demod is not None:
                    w = w * demod[n].view(-1, 1, 1, 1)
                outs.append(self._conv(x[n : n + 1], w.to(x.dtype), bias))
            return outs[0] if len(outs) == 1 else torch.cat(outs)
        x = x * s[:, :, None, None].to(x.dtype)
        if demod is None:
            return self._conv(x, weight.to(x.dtype), bias)
        d = demod[:, :, None, None].to(x.dtype)
        if self.upsample:
            out = F.conv_transpose2d(x, weight.to(x.dtype).transpose(0, 1), stride=2, padding=0)
            return self.blur(out * d, bias)
        out = F.conv2d(x, weight.to(x.dtype), padding=self.padding)
        return out * d if bias is None else torch.addcmul(bias.to(x.dtype).view(1, -1, 1, 1), out, d)


class NoiseInjection(nn.Module):
    """Holds the noise strength under rosinality's state-dict key (`noise.weight`); StyledConv adds the
    noise itself, so this module has no forward."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))


class ConstantInput(nn.Module):
    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.repeat(batch, 1, 1, 1)


SQRT2 = math.sqrt(2)


class StyledConv(nn.Module):
    """Modulated conv + noise + bias + leaky ReLU (x sqrt(2)), optionally clamped (ADA's conv_clamp).

    With `fold_gain=True` the sqrt(2) is left out of the output: the caller passes it on as the next
    layer's `input_gain` (what Generator.synthesis does), saving a pass over every feature map.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, upsample: bool = False, blur_kernel=BLUR_KERNEL,
                 demodulate: bool = True,
                 clamp: float | None = None):
        super().__init__()
        self.clamp = clamp
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, upsample=upsample, blur_kernel=blur_kernel, demodulate=demodulate)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: torch.Tensor, style: torch.Tensor | None, noise: torch.Tensor | None = None, input_gain: float = 1.0,
                fold_gain: bool = False, s: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style, input_gain, bias=self.activate.bias, s=s)
        if noise is None:
            n, _, h, w = out.shape
            noise = out.new_empty(n, 1, h, w).normal_()
        out = out + (self.noise.weight * noise).to(out.dtype)
        out = F.leaky_relu(out, 0.2, inplace=not torch.is_grad_enabled())
        if self.clamp is not None:
            c = self.clamp / SQRT2
            out = out.clamp(-c, c)
        return out if fold_gain else out * SQRT2


class ToRGB(nn.Module):
    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True, blur_kernel=BLUR_KERNEL, clamp: float | None = None):
        super().__init__()
        self.clamp = clamp
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor | None, skip: torch.Tensor | None = None, input_gain: float = 1.0,
                s: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style, input_gain, bias=self.bias.view(-1), s=s)
        if self.clamp is not None:
            out = out.clamp(-self.clamp, self.clamp)
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class Generator(nn.Module):
    """rosinality's StyleGAN2 generator; `channels` maps resolution -> feature channels;
    `conv_clamp` (None: off) clamps every StyledConv/ToRGB output to [-conv_clamp, conv_clamp]."""

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2, channels: dict[int, int] | None = None,
                 blur_kernel=BLUR_KERNEL, lr_mlp: float = 0.01,
                 conv_clamp: float | None = None):
        super().__init__()
        if size < 4 or size & (size - 1):
            raise ValueError(f"generator size must be a power of two >= 4, got {size}")
        self.size = size
        self.style_dim = style_dim
        self.n_mlp = n_mlp
        self.channels = dict(channels) if channels else channel_plan(size, channel_multiplier)
        self.log_size = int(math.log2(size))
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.n_latent = self.log_size * 2 - 2
        self.conv_clamp = conv_clamp
        self.channels_last = True  # NHWC feature maps: faster convolutions on CPU (oneDNN) and GPU (cuDNN)
        cc = conv_clamp

        self.style = nn.Sequential(PixelNorm(), *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu") for _ in range(n_mlp)])

        ch = self.channels
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], 3, style_dim, blur_kernel=blur_kernel, clamp=cc)
        self.to_rgb1 = ToRGB(ch[4], style_dim, upsample=False, clamp=cc)

        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer_idx in range(self.num_layers):
            res = (layer_idx + 5) // 2
            self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(1, 1, 2**res, 2**res))
        in_channel = ch[4]
        for i in range(3, self.log_size + 1):
            out_channel = ch[2**i]
            self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, upsample=True, blur_kernel=blur_kernel, clamp=cc))
            self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim, blur_kernel=blur_kernel, clamp=cc))
            self.to_rgbs.append(ToRGB(out_channel, style_dim, clamp=cc))
            in_channel = out_channel

    # -- the parts -------------------------------------------------------------------------
    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z: (N, style_dim) -> w: (N, style_dim)."""
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n_latent: int = 4096, seed: int | None = 0, chunk: int = 8192) -> torch.Tensor:
        """Average of the mapping network over n_latent standard-normal z -> (1, style_dim)."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        device = self.input.input.device
        total = torch.zeros(1, self.style_dim, dtype=torch.float64, device=device)
        done = 0
        while done < n_latent:
            n = min(chunk, n_latent - done)
            z = torch.randn(n, self.style_dim, generator=gen).to(device)
            total += self.style(z).double().sum(0, keepdim=True)
            done += n
        return (total / n_latent).float()

    def stored_noise(self) -> list[torch.Tensor]:
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    # -- StyleSpace ----------------------------------------------------------------------------
    def modulated_layers(self) -> list[tuple[nn.Module, int]]:
        """Every modulated layer (StyledConv or ToRGB) in rosinality's (= the official StyleGAN2's) order -- conv1,
        to_rgb1, then per resolution conv_up, conv, to_rgb -- with the W+ index it reads."""
        layers: list[tuple[nn.Module, int]] = [(self.conv1, 0), (self.to_rgb1, 1)]
        i = 1
        for conv1, conv2, to_rgb in zip(self.convs[::2], self.convs[1::2], self.to_rgbs):
            layers += [(conv1, i), (conv2, i + 1), (to_rgb, i + 2)]
            i += 2
        return layers

    def style_channels(self) -> list[int]:
        """The length of each StyleSpace vector (the input channels of each modulated layer), in order."""
        return [layer.conv.in_channel for layer, _ in self.modulated_layers()]

    def style_vectors(self, latent: torch.Tensor) -> list[torch.Tensor]:
        """W+ (N, n_latent, style_dim) -> StyleSpace: one (N, C_l) vector s_l = A_l(w_l) per modulated layer."""
        self._check_wplus(latent)
        return [layer.conv.modulation(latent[:, idx]) for layer, idx in self.modulated_layers()]

    def _check_wplus(self, latent: torch.Tensor) -> None:
        if latent.ndim != 3 or latent.shape[1] != self.n_latent or latent.shape[2] != self.style_dim:
            raise ValueError(f"W+ latents must be (N, {self.n_latent}, {self.style_dim}), got {tuple(latent.shape)}")

    def _check_styles(self, styles: Sequence[torch.Tensor]) -> None:
        channels = self.style_channels()
        if len(styles) != len(channels) or any(s.ndim != 2 or s.shape[1] != c or s.shape[0] != styles[0].shape[0]
                                               for s, c in zip(styles, channels)):
            got = [tuple(s.shape) for s in styles]
            raise ValueError(f"StyleSpace codes must be {len(channels)} tensors (N, C) with C = {channels}, got {got}")

    def synthesis(self, latent: torch.Tensor, noise: Sequence[torch.Tensor | None] | None = None, max_size: int | None = None,
                  style_offsets: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """latent: (N, n_latent, style_dim) W+ -> images (N, 3, size, size). Default noise: the stored buffers.

        max_size: stop at the first resolution >= max_size and return the skip branch's image there (a coarse
        preview without the finer layers' detail, much cheaper than rendering in full and downscaling).
        style_offsets: one (N or 1, C_l) tensor (or None) per modulated layer, added to the StyleSpace vectors
        A_l(w_l) (an S edit after the W+ ones)."""
        self._check_wplus(latent)
        if style_offsets is not None:
            styles = self.style_vectors(latent)
            styles = [s if d is None else s + d.to(s.dtype) for s, d in zip(styles, style_offsets)]
            return self.synthesis_s(styles, noise, max_size)
        return self._synthesize(latent.shape[0], latent, None, noise, max_size)

    def synthesis_s(self, styles: Sequence[torch.Tensor], noise: Sequence[torch.Tensor | None] | None = None,
                    max_size: int | None = None) -> torch.Tensor:
        """StyleSpace codes (`style_vectors`' list, one (N, C_l) per modulated layer) -> images (N, 3, size, size)."""
        self._check_styles(styles)
        return self._synthesize(styles[0].shape[0], None, list(styles), noise, max_size)

    def _synthesize(self, n: int, latent: torch.Tensor | None, styles: list[torch.Tensor] | None,
                    noise: Sequence[torch.Tensor | None] | None, max_size: int | None = None) -> torch.Tensor:
        """From W+ `latent` or from StyleSpace `styles` (exactly one given): the same layers, the same arithmetic."""
        if noise is None:
            noise = self.stored_noise()
        ref = latent if latent is not None else styles[0]  # type: ignore[index]
        if n > 1 and ref.device.type == "cpu" and not torch.is_grad_enabled() and not torch.onnx.is_in_onnx_export() \
                and all(t is not None for t in noise):
            # CPU inference modulates the weights image by image anyway (ModulatedConv2d): rendering image by image
            # also skips a concatenation of the whole batch's feature maps after every layer (10% at batch 4, 1024 px)
            return torch.cat([self._synthesize(1, None if latent is None else latent[k : k + 1],
                                               None if styles is None else [s[k : k + 1] for s in styles],
                                               [t if t.shape[0] == 1 else t[k : k + 1] for t in noise], max_size) for k in range(n)])
        if latent is not None:
            def code(k: int, idx: int) -> dict:
                return {"style": latent[:, idx]}
        else:
            def code(k: int, idx: int) -> dict:
                return {"style": None, "s": styles[k]}  # type: ignore[index]
        dtype = latent.dtype if latent is not None else styles[0].dtype  # type: ignore[index]
        out = self.input(n).to(dtype)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        # every StyledConv output is kept without its sqrt(2) gain, which the next layer folds in
        out = self.conv1(out, noise=noise[0], fold_gain=True, **code(0, 0))
        skip = self.to_rgb1(out, input_gain=SQRT2, **code(1, 1))
        i, k = 1, 2
        for conv1, conv2, noise1, noise2, to_rgb in zip(self.convs[::2], self.convs[1::2], noise[1::2], noise[2::2], self.to_rgbs):
            out = conv1(out, noise=noise1, input_gain=SQRT2, fold_gain=True, **code(k, i))
            out = conv2(out, noise=noise2, input_gain=SQRT2, fold_gain=True, **code(k + 1, i + 1))
            skip = to_rgb(out, skip=skip, input_gain=SQRT2, **code(k + 2, i + 2))
            i += 2
            k += 3
            if max_size is not None and skip.shape[-1] >= max_size:
                break
        return skip.contiguous()

    # -- the original call signature ----------------------------------------------------------
    def forward(self, styles: list[torch.Tensor], return_latents: bool = False, inject_index: int | None = None, truncation: float = 1.0,
                truncation_latent: torch.Tensor | None = None, input_is_latent: bool = False, noise=None, randomize_noise: bool = True):
        """rosinality's forward: `styles` is a list of one code batch (or two for style mixing)."""
        if not input_is_latent:
            styles = [self.mapping(s) for s in styles]
        if noise is None:
            noise = [None] * self.num_layers if randomize_noise else self.stored_noise()
        if truncation < 1:
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]
        if len(styles) < 2:
            latent = styles[0] if styles[0].ndim == 3 else styles[0].unsqueeze(1).repeat(1, self.n_latent, 1)
        else:
            if inject_index is None:
                inject_index = random.randint(1, self.n_latent - 1)
            a = styles[0] if styles[0].ndim == 3 else styles[0].unsqueeze(1).repeat(1, self.n_latent, 1)
            b = styles[1] if styles[1].ndim == 3 else styles[1].unsqueeze(1).repeat(1, self.n_latent, 1)
            latent = torch.cat([a[:, :inject_index], b[:, inject_index:]], 1)
        image = self.synthesis(latent, noise=noise)
        return (image, latent) if return_latents else (image, None)
