"""BiSeNet face parsing (Yu et al. 2018) as trained by face-parsing.PyTorch (zllrunning) on CelebAMask-HQ:
the network behind STIT's face masks, in the state-dict layout of its published `79999_iter.pth`.

  x (N, 3, 512, 512), ImageNet-normalised RGB
  -> context path: ResNet-18 (`cp.resnet.*`) features at 1/8, 1/16, 1/32; a global average of the 1/32 map
     (`cp.conv_avg`) added to the attention-refined 1/32 map (`cp.arm32`), upsampled (nearest) and
     convolved (`cp.conv_head32`); added to the refined 1/16 map (`cp.arm16`), upsampled, convolved
     (`cp.conv_head16`) -> 128 channels at 1/8
  -> feature fusion (`ffm`): the ResNet's 1/8 map (it stands in for the spatial path) and the context path's,
     concatenated, mixed, re-weighted by channel attention (x + attention * x)
  -> head (`conv_out`): 19 class logits at 1/8, upsampled bilinearly (align_corners) to the input size.
The two auxiliary training heads (`conv_out16`, `conv_out32`) are part of the file's layout; `forward` runs
them only when asked (aux=True). Pure module: no file or network I/O (the weights load in `hub.networks`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 512
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# CelebAMask-HQ's labels in face-parsing.PyTorch's order
CLASSES = ("background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r", "nose", "mouth",
           "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat")
NOT_FACE = (0, 16, 18)  # what STIT leaves out of its mask: background, cloth, hat (skin, hair, neck, ears... are in)


class ConvBNReLU(nn.Sequential):
    """conv (no bias) -> batch norm -> ReLU; keys `conv.*`, `bn.*`."""

    def __init__(self, cin: int, cout: int, kernel: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, a 1x1 conv-BN shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if cin != cout or stride != 1 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """The ResNet-18 trunk without its classifier -> features at 1/8, 1/16, 1/32 of the input."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = (64, 64, 128, 256, 512)
        for i in range(1, 5):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(widths[i - 1], widths[i], stride), BasicBlock(widths[i], widths[i])))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.layer1(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        f8 = self.layer2(x)
        f16 = self.layer3(f8)
        return f8, f16, self.layer4(f16)


class AttentionRefinement(nn.Module):
    """3x3 conv-BN-ReLU, then a channel attention from its global average (1x1 conv, BN, sigmoid)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, cout)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return feat * torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean((2, 3), keepdim=True))))


class ContextPath(nn.Module):
    def __init__(self):
        super().__init__()
        self.resnet = ResNet18()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, kernel=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (ResNet 1/8 features, context at 1/8, context at 1/16)."""
        f8, f16, f32 = self.resnet(x)
        glob = self.conv_avg(f32.mean((2, 3), keepdim=True))  # broadcast == nearest upsampling of a 1x1 map
        up32 = self.conv_head32(F.interpolate(self.arm32(f32) + glob, size=f16.shape[-2:], mode="nearest"))
        up16 = self.conv_head16(F.interpolate(self.arm16(f16) + up32, size=f8.shape[-2:], mode="nearest"))
        return f8, up16, up32


class FeatureFusion(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, kernel=1)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], 1))
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(feat.mean((2, 3), keepdim=True)))))
        return feat + feat * atten


class Head(nn.Module):
    """3x3 conv-BN-ReLU, then 1x1 conv to class logits (`conv.*`, `conv_out.weight`)."""

    def __init__(self, cin: int, mid: int, n_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, mid)
        self.conv_out = nn.Conv2d(mid, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """face-parsing.PyTorch's BiSeNet (module docstring). forward: x (N, 3, H, W) normalised -> logits (N, C, H, W)."""

    def __init__(self, n_classes: int = len(CLASSES)):
        super().__init__()
        self.n_classes = n_classes
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = Head(256, 256, n_classes)
        self.conv_out16 = Head(128, 64, n_classes)
        self.conv_out32 = Head(128, 64, n_classes)

    def forward(self, x: torch.Tensor, aux: bool = False):
        size = x.shape[-2:]
        f8, c8, c16 = self.cp(x)
        out = F.interpolate(self.conv_out(self.ffm(f8, c8)), size=size, mode="bilinear", align_corners=True)
        if not aux:
            return out
        return (out, *(F.interpolate(head(f), size=size, mode="bilinear", align_corners=True)
                       for head, f in ((self.conv_out16, c8), (self.conv_out32, c16))))


def normalise(images: torch.Tensor) -> torch.Tensor:
    """images (N, 3, H, W) in [-1, 1] -> the parser's input: INPUT_SIZE^2 (bilinear, antialiased when shrinking,
    as face-parsing.PyTorch's PIL resize), ImageNet mean/std."""
    x = (images.float().clamp(-1, 1) + 1) / 2
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=x.shape[-1] > INPUT_SIZE)
    mean = torch.tensor(MEAN, device=x.device).reshape(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).reshape(1, 3, 1, 1)
    return (x - mean) / std


def face_region(logits: torch.Tensor, exclude=NOT_FACE) -> torch.Tensor:
    """logits (N, C, H, W) -> bool (N, H, W): the pixels whose most likely class is not in `exclude` (STIT's mask)."""
    labels = logits.argmax(1)
    keep = torch.ones(logits.shape[1], dtype=torch.bool, device=logits.device)
    keep[list(exclude)] = False
    return keep[labels]
