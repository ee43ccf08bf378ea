"""The e4e / pSp encoders over an IR-SE50 backbone, in the official state-dict layouts.

  Encoder4Editing         e4e: one base code w from the coarsest features plus one delta per
                          further style, unlocked progressively (`progressive_stage`)
  GradualStyleEncoder     pSp: one code per style from a feature pyramid
  SingleStyleCodeEncoder  one W code (global pooled features), repeated for every style

Input x: (N, 3, H, W) in [-1, 1] (256x256 for faces, 192x256 for cars);
output codes: (N, n_styles, 512), *without* the latent average (the Inverter adds it).
"""
from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from e4ecli.models.stylegan2 import EqualLinear

Bottleneck = namedtuple("Bottleneck", ["in_channel", "depth", "stride"])


def ir_blocks(num_layers: int = 50) -> list[list[Bottleneck]]:
    """Units of the IR-50/100/152 bodies: the first unit of each stage has stride 2."""
    units = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}[num_layers]
    stages = [(64, 64), (64, 128), (128, 256), (256, 512)]
    return [[Bottleneck(i, d, 2)] + [Bottleneck(d, d, 1)] * (n - 1) for (i, d), n in zip(stages, units)]


class SEModule(nn.Module):
    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, padding=0, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, padding=0, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class BottleneckIRSE(nn.Module):
    """IR-SE unit: BN-conv-PReLU-conv-BN-SE residual plus a (strided) shortcut."""

    def __init__(self, in_channel: int, depth: int, stride: int):
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channel, depth, (1, 1), stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, (3, 3), (1, 1), 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth, 16),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut_layer
        if isinstance(shortcut, nn.MaxPool2d):  # a 1x1 max pool is a strided view: no pooling pass, no index map
            s = shortcut.stride if isinstance(shortcut.stride, int) else shortcut.stride[0]
            return self.res_layer(x) + (x if s == 1 else x[:, :, ::s, ::s])
        return self.res_layer(x) + shortcut(x)


def input_layer() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 64, (3, 3), 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))


def ir_se_body(num_layers: int = 50) -> nn.Sequential:
    return nn.Sequential(*[BottleneckIRSE(u.in_channel, u.depth, u.stride) for block in ir_blocks(num_layers) for u in block])


class GradualStyleBlock(nn.Module):
    """Strided 3x3 convs down to 1x1, then an EqualLinear: features (N, C, s, s) -> code (N, out_c)."""

    def __init__(self, in_c: int, out_c: int, spatial: int):
        super().__init__()
        self.out_c = out_c
        num_pools = int(np.log2(spatial))
        modules: list[nn.Module] = [nn.Conv2d(in_c, out_c, kernel_size=3, stride=2, padding=1), nn.LeakyReLU()]
        for _ in range(num_pools - 1):
            modules += [nn.Conv2d(out_c, out_c, kernel_size=3, stride=2, padding=1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*modules)
        self.linear = EqualLinear(out_c, out_c, lr_mul=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).reshape(-1, self.out_c))


def upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """FPN merge: bilinear (align_corners=True) resize of x to y's size, plus y."""
    return F.interpolate(x, size=y.shape[2:], mode="bilinear", align_corners=True) + y


def style_count(stylegan_size: int) -> int:
    return 2 * int(math.log2(stylegan_size)) - 2


class _PyramidEncoder(nn.Module):
    """Shared trunk of e4e and pSp: IR-SE body with taps c1 (1/4), c2 (1/8), c3 (1/16) and FPN laterals."""

    coarse_ind = 3
    middle_ind = 7

    def __init__(self, stylegan_size: int, num_layers: int = 50):
        super().__init__()
        self.input_layer = input_layer()
        self.body = ir_se_body(num_layers)
        self.style_count = style_count(stylegan_size)
        units = [len(b) for b in ir_blocks(num_layers)]
        self._taps = (units[0] + units[1] - 1, units[0] + units[1] + units[2] - 1, sum(units) - 1)
        self.styles = nn.ModuleList()
        for i in range(self.style_count):
            spatial = 16 if i < self.coarse_ind else 32 if i < self.middle_ind else 64
            self.styles.append(GradualStyleBlock(512, 512, spatial))
        self.latlayer1 = nn.Conv2d(256, 512, kernel_size=1, stride=1, padding=0)
        self.latlayer2 = nn.Conv2d(128, 512, kernel_size=1, stride=1, padding=0)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.input_layer(x)
        taps = []
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self._taps:
                taps.append(x)
        return taps[0], taps[1], taps[2]


class Encoder4Editing(_PyramidEncoder):
    """e4e. `progressive_stage` s uses w plus deltas 1..s; the default (n_styles) is inference: all deltas."""

    def __init__(self, stylegan_size: int, num_layers: int = 50):
        super().__init__(stylegan_size, num_layers)
        self.progressive_stage = self.style_count

    def set_progressive_stage(self, stage: int) -> None:
        self.progressive_stage = int(stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1, c2, c3 = self.features(x)
        w0 = self.styles[0](c3)
        w = w0.unsqueeze(1).repeat(1, self.style_count, 1)
        features = c3
        p2 = None
        for i in range(1, min(self.progressive_stage + 1, self.style_count)):
            if i == self.coarse_ind:
                p2 = upsample_add(c3, self.latlayer1(c2))
                features = p2
            elif i == self.middle_ind:
                features = upsample_add(p2, self.latlayer2(c1))
            w[:, i] = w[:, i] + self.styles[i](features)
        return w


class GradualStyleEncoder(_PyramidEncoder):
    """pSp: styles [0, 3) from c3, [3, 7) from the middle FPN level, the rest from the fine level."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1, c2, c3 = self.features(x)
        latents = [self.styles[j](c3) for j in range(self.coarse_ind)]
        p2 = upsample_add(c3, self.latlayer1(c2))
        latents += [self.styles[j](p2) for j in range(self.coarse_ind, self.middle_ind)]
        p1 = upsample_add(p2, self.latlayer2(c1))
        latents += [self.styles[j](p1) for j in range(self.middle_ind, self.style_count)]
        return torch.stack(latents, dim=1)


class SingleStyleCodeEncoder(nn.Module):
    """One W code from globally pooled final features, repeated n_styles times."""

    def __init__(self, stylegan_size: int, num_layers: int = 50):
        super().__init__()
        self.input_layer = input_layer()
        self.output_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = EqualLinear(512, 512, lr_mul=1)
        self.body = ir_se_body(num_layers)
        self.style_count = style_count(stylegan_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.output_pool(self.body(self.input_layer(x))).reshape(-1, 512)
        return self.linear(x).unsqueeze(1).repeat(1, self.style_count, 1)


ENCODERS = {
    "Encoder4Editing": Encoder4Editing,
    "GradualStyleEncoder": GradualStyleEncoder,
    "SingleStyleCodeEncoder": SingleStyleCodeEncoder,
}
