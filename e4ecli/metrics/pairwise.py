"""Per-image distortion between inputs and reconstructions: l2, lpips, id (ArcFace), id_dlib (dlib's
face descriptor: a different network with a different scale, never reported as `id`).

All take x, y: (N, 3, H, W) in [-1, 1] (the preprocessed input and the reconstruction area-averaged
to the input's size) and return (N,) float tensors.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from e4ecli.metrics import MetricUnavailable

PairMetric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def l2_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image (the training loss_l2, image by image): (N,)."""
    return (x.float() - y.float()).pow(2).flatten(1).mean(1)


def lpips_metric(device: torch.device, net_type: str = "alex") -> PairMetric:
    """LPIPS (the `lpips` package, official linear layers) per image; MetricUnavailable when its
    torchvision backbone weights cannot be obtained (the reason names the file and where it goes)."""
    from e4ecli.hub.perceptual import WeightsUnavailable, build_lpips

    try:
        model = build_lpips(net_type).model.to(device)
    except WeightsUnavailable as e:
        raise MetricUnavailable(str(e)) from None

    def lpips(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return model(y.to(device), x.to(device)).flatten().float().cpu()

    return lpips


def arcface_features(path: str | Path, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """ArcFace IR-SE50 unit embeddings (N, 512) of aligned faces (N, 3, 256, 256) in [-1, 1], as the original
    calc_id_loss: face crop (rows 35:223, cols 32:220 at 256 px), average-pooled to 112x112."""
    from e4ecli.hub.checkpoints import CheckpointError
    from e4ecli.hub.networks import load_arcface, resolve_weights
    from e4ecli.models.identity import IdentityLoss

    try:
        net = load_arcface(resolve_weights(str(path), "the ArcFace network of the id metric"))
    except CheckpointError as e:
        raise MetricUnavailable(str(e)) from None
    ident = IdentityLoss(net.to(device), "arcface")

    def features(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return ident.features(x.to(device)).float().cpu()

    return features


def arcface_metric(path: str | Path, device: torch.device) -> PairMetric:
    """Cosine similarity of ArcFace IR-SE50 embeddings (arcface_features) per image pair."""
    features = arcface_features(path, device)

    def similarity(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (features(y) * features(x)).sum(1).float().cpu()

    return similarity


def dlib_model_file() -> Path:
    """dlib's face-recognition ResNet from the `face_recognition_models` package (found without importing it)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MetricUnavailable("the dlib fallback needs the face_recognition_models package: pip install face_recognition_models")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "dlib_face_recognition_resnet_model_v1.dat"
    if not path.is_file():
        raise MetricUnavailable(f"{path} is missing; reinstall face_recognition_models")
    return path


def dlib_features() -> Callable[[torch.Tensor], torch.Tensor]:
    """dlib's 128-d unit face descriptors (N, 128) of the aligned face region (150x150 chip) of (N, 3, 256, 256)."""
    try:
        import dlib
    except ImportError:
        raise MetricUnavailable("the dlib fallback needs dlib: pip install dlib-bin") from None
    net = dlib.face_recognition_model_v1(str(dlib_model_file()))
    from e4ecli.models.identity import arcface_crop

    def describe(images: torch.Tensor) -> torch.Tensor:
        chips = F.interpolate(arcface_crop(images.float().cpu()), size=(150, 150), mode="area")
        chips = ((chips.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        feats = torch.tensor([list(net.compute_face_descriptor(c.copy())) for c in chips], dtype=torch.float64)
        return F.normalize(feats, dim=1)

    return describe


def dlib_metric() -> PairMetric:
    """Cosine similarity of dlib's 128-d face descriptors (dlib_features) per image pair."""
    describe = dlib_features()

    def similarity(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (describe(x) * describe(y)).sum(1).float()

    return similarity
