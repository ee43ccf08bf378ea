"""FID: Fréchet distance between Gaussians fitted to features of two image sets.

Statistics accumulate in float64 as running sums (sum of features, sum of outer products), so memory
is flat in the number of images. The default feature extractor is torch-fidelity's InceptionV3
(`inception-v3-compat`, 2048-d pool features, the TensorFlow FID network); any callable
uint8 images (N, 3, H, W) -> features (N, D) works (tests use a small fixed network).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from e4ecli.metrics import MetricUnavailable

Extractor = Callable[[torch.Tensor], torch.Tensor]


class FeatureStats:
    """Running mean / covariance of feature vectors (N, D), in float64."""

    def __init__(self) -> None:
        self.n = 0
        self.sum: torch.Tensor | None = None
        self.outer: torch.Tensor | None = None

    def update(self, feats: torch.Tensor) -> None:
        f = feats.detach().reshape(feats.shape[0], -1).double().cpu()
        if self.sum is None:
            self.sum = torch.zeros(f.shape[1], dtype=torch.float64)
            self.outer = torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64)
        self.n += f.shape[0]
        self.sum += f.sum(0)
        self.outer += f.T @ f

    def mean_cov(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean (D,), unbiased covariance (D, D)) as numpy.cov(rowvar=False); needs n >= 2."""
        if self.n < 2 or self.sum is None or self.outer is None:
            raise ValueError(f"FID needs at least 2 images per set (got {self.n})")
        mu = self.sum / self.n
        cov = (self.outer - self.n * torch.outer(mu, mu)) / (self.n - 1)
        return mu, cov


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)), in float64.

    tr((C1 C2)^(1/2)) = sum of sqrt of the eigenvalues of C1^(1/2) C2 C1^(1/2) (symmetric PSD), which
    avoids the complex parts scipy.linalg.sqrtm can return for nearly singular covariances.
    """
    mu1, mu2, cov1, cov2 = (t.double() for t in (mu1, mu2, cov1, cov2))
    s1 = _sqrt_psd(cov1)
    middle = s1 @ cov2 @ s1
    tr_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    d = (mu1 - mu2).pow(2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * tr_sqrt
    return float(d.clamp_min(0))


class FID:
    """Feature statistics of a reference set and any number of named sets; `distance(name)`.

    images: uint8 (N, 3, H, W) tensors (what the extractor expects).
    """

    def __init__(self, extractor: Extractor, names: tuple[str, ...] = ("recon",)) -> None:
        self.extractor = extractor
        self.real = FeatureStats()
        self.sets = {n: FeatureStats() for n in names}

    @torch.no_grad()
    def update(self, which: str, images: torch.Tensor) -> None:
        stats = self.real if which == "real" else self.sets[which]
        stats.update(self.extractor(images))

    def distance(self, which: str) -> float:
        return frechet_distance(*self.real.mean_cov(), *self.sets[which].mean_cov())


# -- torch-fidelity's InceptionV3 ---------------------------------------------------------------------
def inception_weights_file() -> tuple[Path, str]:
    """(where torch-fidelity's InceptionV3 weights are cached, their URL)."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(URL_INCEPTION_V3), URL_INCEPTION_V3


def inception_extractor(device: torch.device, allow_download: bool = True) -> Extractor:
    """torch-fidelity's FID InceptionV3 -> extractor uint8 (N, 3, H, W) -> (N, 2048) float64 features.

    The weights file is checked with `weights_only=True` before torch-fidelity reads it (it loads
    its file without that guard). Raises MetricUnavailable saying where to put the file when offline.
    """
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as e:
        raise MetricUnavailable(f"torch-fidelity is not installed ({e}); `pip install torch-fidelity`") from None
    from e4ecli.hub.checkpoints import safe_load
    from e4ecli.hub.fetch import FetchError, Remote, fetch

    path, url = inception_weights_file()
    try:
        fetch(Remote("torch-fidelity's InceptionV3 weights", path.name, (url,)), path, download=allow_download, progress=False)
    except FetchError as e:
        reason = e.failures[0].strip() if e.failures else "missing"
        raise MetricUnavailable(f"torch-fidelity's InceptionV3 weights could not be obtained ({reason}); "
                                f"download {url} and put it at {path} (the folder follows $TORCH_HOME)") from None
    try:
        safe_load(path)
    except Exception as e:  # noqa: BLE001
        raise MetricUnavailable(f"{path}: not a readable InceptionV3 state dict ({e}); delete it and download {url} again") from None
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path)).to(device)

    def extract(images: torch.Tensor) -> torch.Tensor:
        (feats,) = net(images.to(device))
        return feats.double()

    return extract
