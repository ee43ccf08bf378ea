"""The e4e / pSp encoders over an IR-SE50 backbone, in the official state-dict layouts.

  Encoder4Editing         e4e: one base code w from the coarsest features plus one delta per
                          further style, unlocked progressively (`progressive_stage`)
  GradualStyleEncoder     pSp: one code per style from a feature pyramid
  SingleStyleCodeEncoder  one W code (global pooled features), repeated for every style

Input x: (N, 3, H, W) in [-1, 1] (256x256 for faces, 192x256 for cars);
output codes: (N, n_styles, 512), *without* the latent average (the Inverter adds it).

Inference (eval mode, autograd off, not traced for export) runs a folded form of the same network: each
batch norm that follows a convolution is folded into that convolution's weight and bias, the squeeze-and-
excitation gate is two matrix products on the pooled vector and one fused multiply-add with the shortcut,
and on CPU in fp32 the convolutions run, from the second image of a shape on, on weights reordered once
into oneDNN's blocked layout (the style blocks' LeakyReLU applied by the convolution itself). The folded
tensors are derived from the parameters and rebuilt when those change (moved, cast or trained); the
state dict is untouched.
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


def _inference(module: nn.Module) -> bool:
    """Whether the folded inference path runs: eval mode, autograd off, not traced or compiled (an export
    keeps the original graph)."""
    return not (module.training or torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling())


class _Derived:
    """Tensors derived from some source tensors, rebuilt when a source changes (moved, cast or updated in place).

    The sources are held, so a freed source's address cannot be reused by a new tensor and mistaken for it."""

    def __init__(self) -> None:
        self.sources: tuple = ()
        self.key: tuple = ()
        self.value = None

    def get(self, sources: list[torch.Tensor], build):
        key = tuple((t.data_ptr(), _version(t), t.dtype, t.device) for t in sources)
        if key != self.key or self.value is None:
            self.value, self.key, self.sources = build(), key, tuple(t.detach() for t in sources)
        return self.value


def _version(t: torch.Tensor) -> int:
    """In-place update counter (inference tensors, made under torch.inference_mode, have none)."""
    try:
        return t._version
    except RuntimeError:
        return -1


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode batch norm as y = x * scale + shift (per channel), computed in fp32."""
    scale = bn.weight.float() / torch.sqrt(bn.running_var.float() + bn.eps)
    return scale, bn.bias.float() - bn.running_mean.float() * scale


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, padding) -> "_Conv":
    """A bias-free convolution followed by an eval-mode batch norm, as one convolution (folded in fp32, stored at
    the convolution's dtype)."""
    scale, shift = _bn_affine(bn)
    dtype = conv.weight.dtype
    return _Conv((conv.weight.float() * scale.view(-1, 1, 1, 1)).to(dtype), shift.to(dtype), conv.stride, padding)


class _FoldsForInference(nn.Module):
    """A module with a folded inference form (`_fold`), kept in `_folded` and dropped when training starts."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._folded = _Derived()

    def train(self, mode: bool = True):
        if mode:
            self._folded = _Derived()  # stale the moment training updates the weights: do not hold it meanwhile
        return super().train(mode)


def _bn_sources(bn: nn.BatchNorm2d) -> list[torch.Tensor]:
    return [bn.weight, bn.bias, bn.running_mean, bn.running_var]


class _Conv:
    """One convolution of the inference path: weight and bias (batch norm folded in), stride, padding and an
    optional LeakyReLU slope. On CPU in fp32, from the second call with the same input shape on, it runs through
    oneDNN on the weight reordered once into oneDNN's blocked layout: eager convolution reorders the weight on
    every call, which is most of the time of a 512-channel convolution on a small feature map. A single image
    never pays for the reorder; one reordered copy (of the last repeated shape) is kept."""

    __slots__ = ("weight", "bias", "stride", "padding", "slope", "packed", "packed_shape", "seen_shape")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding, slope: float | None = None):
        # CPU: kept as given (a checkpoint's weights stay memory-mapped; oneDNN reorders from any layout, and the
        # prepacked copy is made from it); GPU: NHWC once, as cuDNN's NHWC kernels want (else a copy every call)
        self.weight = weight if weight.device.type == "cpu" else weight.contiguous(memory_format=torch.channels_last)
        self.bias = bias
        self.stride = [stride, stride] if isinstance(stride, int) else list(stride)
        self.padding = [padding, padding] if isinstance(padding, int) else list(padding)
        self.slope = slope
        self.packed = None
        self.packed_shape: tuple = ()
        self.seen_shape: tuple = ()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape)
        if shape != self.packed_shape and shape == self.seen_shape and self._packable(x):
            self.packed = None  # the previous shape's copy goes first: the weights are never held twice
            self.packed = torch._C._nn.mkldnn_reorder_conv2d_weight(self.weight.contiguous().to_mkldnn(), self.padding,
                                                                    self.stride, [1, 1], 1, list(shape))
            self.packed_shape = shape
        if shape == self.packed_shape and self._packable(x):
            attr, scalars = ("none", []) if self.slope is None else ("leaky_relu", [self.slope])
            return torch.ops.mkldnn._convolution_pointwise(x, self.packed, self.bias, self.padding, self.stride, [1, 1], 1,
                                                           attr, scalars, "")
        self.seen_shape = shape
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        return y if self.slope is None else F.leaky_relu(y, self.slope, inplace=True)

    def _packable(self, x: torch.Tensor) -> bool:
        return x.device.type == "cpu" and x.dtype == torch.float32 and self.weight.dtype == torch.float32 and _onednn()


_ONEDNN: list[bool] = []  # decided once per process by _onednn()


def _onednn() -> bool:
    """Whether oneDNN's reordered-weight convolution (the op torch's own CPU compiler emits for frozen models) exists
    in this build and agrees with F.conv2d; where it does not, the inference path uses F.conv2d."""
    if not _ONEDNN:
        _ONEDNN.append(False)  # while checking, _Conv takes the F.conv2d path
        ok = False
        if torch.backends.mkldnn.is_available():
            try:
                x = torch.linspace(-1, 1, 2 * 4 * 5 * 5).reshape(2, 4, 5, 5).contiguous(memory_format=torch.channels_last)
                w = torch.linspace(-1, 1, 3 * 4 * 3 * 3).reshape(3, 4, 3, 3)
                b = torch.tensor([0.5, -0.25, 0.0])
                conv = _Conv(w, b, 2, 1, 0.2)
                conv(x)  # F.conv2d the first time; packed from the second
                _ONEDNN[0] = True
                got = conv(x)
                ok = conv.packed is not None and bool(torch.allclose(got, F.leaky_relu(F.conv2d(x, w, b, 2, 1), 0.2), atol=1e-5))
            except (RuntimeError, AttributeError, NotImplementedError):
                ok = False
        _ONEDNN[0] = ok
    return _ONEDNN[0]


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


class BottleneckIRSE(_FoldsForInference):
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

    def _stride_view(self, x: torch.Tensor) -> torch.Tensor:
        """The 1x1 max pool shortcut as a strided view: no pooling pass, no index map."""
        s = self.shortcut_layer.stride if isinstance(self.shortcut_layer.stride, int) else self.shortcut_layer.stride[0]
        return x if s == 1 else x[:, :, ::s, ::s]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _inference(self):
            return self._folded_forward(x)
        shortcut = self.shortcut_layer
        if isinstance(shortcut, nn.MaxPool2d):
            return self.res_layer(x) + self._stride_view(x)
        return self.res_layer(x) + shortcut(x)

    def _fold(self) -> tuple:
        _, conv1, _, conv2, bn2, se = self.res_layer
        shortcut = None if isinstance(self.shortcut_layer, nn.MaxPool2d) else _fold_bn(*self.shortcut_layer, padding=0)
        return _Conv(conv1.weight, None, 1, 1), _fold_bn(conv2, bn2, 1), se.fc1.weight.flatten(1), se.fc2.weight.flatten(1), shortcut

    def _folded_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same unit with the second batch norm folded into its convolution (and the shortcut's into its own),
        the SE gate computed on the pooled vector and applied together with the shortcut in one pass."""
        bn1, conv1, prelu, conv2, bn2, se = self.res_layer
        sources = [conv1.weight, conv2.weight, *_bn_sources(bn2), se.fc1.weight, se.fc2.weight]
        if not isinstance(self.shortcut_layer, nn.MaxPool2d):
            sources += [self.shortcut_layer[0].weight, *_bn_sources(self.shortcut_layer[1])]
        c1, c2, fc1, fc2, shortcut = self._folded.get(sources, self._fold)
        r = c2(prelu(c1(bn1(x))))
        gate = torch.sigmoid(F.linear(torch.relu(F.linear(r.mean((2, 3)), fc1)), fc2))
        return torch.addcmul(self._stride_view(x) if shortcut is None else shortcut(x), r, gate[:, :, None, None])


class InputLayer(_FoldsForInference, nn.Sequential):
    """conv 3x3 (3 -> 64) - BN - PReLU; at inference the batch norm is folded into the convolution."""

    def __init__(self):
        super().__init__(nn.Conv2d(3, 64, (3, 3), 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))

    def _fold(self) -> _Conv:
        return _fold_bn(self[0], self[1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _inference(self):
            return super().forward(x)
        return self[2](self._folded.get([self[0].weight, *_bn_sources(self[1])], self._fold)(x))


def input_layer() -> nn.Sequential:
    return InputLayer()


def ir_se_body(num_layers: int = 50) -> nn.Sequential:
    return nn.Sequential(*[BottleneckIRSE(u.in_channel, u.depth, u.stride) for block in ir_blocks(num_layers) for u in block])


class GradualStyleBlock(_FoldsForInference):
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

    def _fold(self) -> list[_Conv]:
        pairs = zip(self.convs[::2], self.convs[1::2])
        return [_Conv(conv.weight, conv.bias, conv.stride, conv.padding, act.negative_slope) for conv, act in pairs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _inference(self):
            sources = [t for conv in self.convs[::2] for t in (conv.weight, conv.bias)]
            for conv in self._folded.get(sources, self._fold):
                x = conv(x)
            return self.linear(x.reshape(-1, self.out_c))
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
