"""The identity networks of the training losses (no I/O; e4ecli.hub.networks loads their weights).

  ArcFaceIRSE50   the IR-SE50 face-recognition backbone (ArcFace, input 112x112) with its
                  embedding head; output: l2-normalised 512-d embeddings. Same layout as the
                  published `model_ir_se50.pth` (input_layer.*, body.*, output_layer.*).
  moco_resnet50   torchvision's ResNet-50 without its classifier, as MoCo v2's `encoder_q`
                  up to global average pooling; output: (N, 2048) pooled features.
"""
from __future__ import annotations

import torch
from torch import nn

from e4ecli.models.encoders import input_layer, ir_se_body

ARCFACE_INPUT = 112
ARCFACE_DIM = 512
MOCO_INPUT = 224
MOCO_DIM = 2048


class ArcFaceIRSE50(nn.Module):
    """x: (N, 3, 112, 112) in [-1, 1] -> embeddings (N, 512), unit l2 norm."""

    def __init__(self, drop_ratio: float = 0.6):
        super().__init__()
        self.input_layer = input_layer()
        self.body = ir_se_body(50)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(512 * 7 * 7, ARCFACE_DIM),
            nn.BatchNorm1d(ARCFACE_DIM),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb = self.output_layer(self.body(self.input_layer(x)))
        return emb / torch.norm(emb, 2, 1, True)


def moco_resnet50() -> nn.Module:
    """ResNet-50 with `fc` replaced by identity: x (N, 3, 224, 224) -> features (N, 2048).

    State-dict keys are torchvision's (`conv1.weight`, `layer1.0.bn1.weight`, ...), i.e. the
    MoCo file's `module.encoder_q.*` keys with that prefix removed and its `fc.*` head dropped.
    """
    from torchvision.models import resnet50

    net = resnet50(weights=None)
    net.fc = nn.Identity()
    return net
