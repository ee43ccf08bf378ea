"""The identity networks of the training losses (no I/O; e4ecli.hub.networks loads their weights).

  ArcFaceIRSE50   the IR-SE50 face-recognition backbone (ArcFace, input 112x112) with its
                  embedding head; output: l2-normalised 512-d embeddings. Same layout as the
                  published `model_ir_se50.pth` (input_layer.*, body.*, output_layer.*).
  moco_resnet50   torchvision's ResNet-50 without its classifier, as MoCo v2's `encoder_q`
                  up to global average pooling; output: (N, 2048) pooled features.
  IdentityLoss    either network as the original IDLoss / MocoLoss (also the `id` metric's features).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from e4ecli.models.encoders import input_layer, ir_se_body

ARCFACE_INPUT = 112
ARCFACE_DIM = 512
MOCO_INPUT = 224
MOCO_DIM = 2048
ARCFACE_CROP_256 = ((35, 223), (32, 220))  # rows, columns of a 256x256 aligned face the original feeds ArcFace


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


def arcface_crop(x: torch.Tensor) -> torch.Tensor:
    """The face region ArcFace sees: rows 35:223, columns 32:220 of a 256x256 image (scaled for other sizes)."""
    h, w = x.shape[-2:]
    (r0, r1), (c0, c1) = ARCFACE_CROP_256
    if (h, w) != (256, 256):
        r0, r1 = round(r0 * h / 256), round(r1 * h / 256)
        c0, c1 = round(c0 * w / 256), round(c1 * w / 256)
    return x[:, :, r0:r1, c0:c1]


class IdentityLoss(nn.Module):
    """The original IDLoss (ArcFace, faces) / MocoLoss (MoCo v2, other domains).

    forward(y_hat, y, x) -> (loss, improvement, logs):
      loss        mean_n (1 - <f(y_hat_n), f(y_n)>)                (a tensor; y's features detached)
      improvement mean_n (<f(y_hat_n), f(y_n)> - <f(y_n), f(x_n)>)  (a float: the original's `id_improve`)
      logs        per sample {'diff_target', 'diff_input', 'diff_views'}
    """

    def __init__(self, net: nn.Module, kind: str):
        super().__init__()
        if kind not in ("arcface", "moco"):
            raise ValueError(kind)
        self.net = net.eval()
        self.kind = kind
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "IdentityLoss":  # the networks stay in eval mode
        return super().train(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """images (N, 3, H, W) -> unit-norm features (N, 512) ArcFace / (N, 2048) MoCo."""
        if self.kind == "arcface":
            return self.net(F.adaptive_avg_pool2d(arcface_crop(x), (ARCFACE_INPUT, ARCFACE_INPUT)))
        feats = self.net(F.interpolate(x, size=MOCO_INPUT))
        return F.normalize(feats.flatten(1), dim=1)

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, float, list[dict]]:
        y_feats = self.features(y).detach()
        x_feats = y_feats if x is y else self.features(x)  # e4e trains with x == y: one pass serves both
        return self.compare(self.features(y_hat), y_feats, x_feats)

    @staticmethod
    def compare(y_hat_feats: torch.Tensor, y_feats: torch.Tensor, x_feats: torch.Tensor) -> tuple[torch.Tensor, float, list[dict]]:
        """The loss, improvement and logs from features (N, D) of the reconstructions, targets and inputs."""
        y_feats = y_feats.detach()
        diff_target = (y_hat_feats * y_feats).sum(1)
        diff_input = (y_hat_feats * x_feats).sum(1)
        diff_views = (y_feats * x_feats).sum(1)
        loss = (1 - diff_target).mean()
        improvement = float((diff_target.detach() - diff_views.detach()).double().mean())
        logs = [{"diff_target": float(t), "diff_input": float(i), "diff_views": float(v)}
                for t, i, v in zip(diff_target.tolist(), diff_input.tolist(), diff_views.tolist())]
        return loss, improvement, logs
