"""LPIPS, built with its ImageNet backbone fetched through `hub.fetch` (used by the training loss and the metric).

Errors carry fields (`what`, `path`, `url`, `reason`) and no command-line words: each caller adds
its own way out (the trainer: turn the loss off; eval: drop the metric).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from e4ecli.hub.fetch import FetchError, Remote, fetch


class WeightsUnavailable(RuntimeError):
    """Network weights that are missing and could not be fetched; str() says what to put where."""

    def __init__(self, what: str, path: Path, url: str, reason: str):
        self.what, self.path, self.url, self.reason = what, Path(path), url, reason
        super().__init__(f"{what}, which is missing or unreadable ({reason}). Download {url} and put it at {path} "
                         "(the folder follows $TORCH_HOME)")


def lpips_backbone_file(net_type: str) -> tuple[Path, str]:
    """(where torchvision caches the ImageNet backbone LPIPS needs, its download URL)."""
    from torchvision import models

    weights = {"alex": models.AlexNet_Weights, "vgg": models.VGG16_Weights, "squeeze": models.SqueezeNet1_1_Weights}[net_type]
    url = weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url), url


class LpipsLoss(nn.Module):
    """LPIPS (the `lpips` package: official linear layers over a torchvision backbone): mean over the batch."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "LpipsLoss":
        return super().train(False)

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.model(y_hat, y).mean()


def build_lpips(net_type: str = "alex", random_backbone: bool = False, download: bool = True) -> LpipsLoss:
    """LPIPS with the pretrained backbone from torchvision's cache (downloaded when online).

    random_backbone: lpips' `pnet_rand` -- untrained backbone, for tests only (the loss is then meaningless).
    """
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation notes about `pretrained=`
        if random_backbone:
            return LpipsLoss(lpips.LPIPS(net=net_type, pnet_rand=True, verbose=False))
        path, url = lpips_backbone_file(net_type)
        what = f"LPIPS ({net_type}) needs torchvision's ImageNet weights {path.name}"
        try:
            fetch(Remote(f"{path.name} (LPIPS {net_type} backbone)", path.name, (url,)), path, download=download, progress=False)
            return LpipsLoss(lpips.LPIPS(net=net_type, verbose=False))
        except FetchError as e:
            reason = e.failures[0].strip() if e.failures else ("not downloaded" if not path.exists() else str(e).splitlines()[0])
            raise WeightsUnavailable(what, path, url, reason) from None
        except Exception as e:  # noqa: BLE001 -- a bad cache file, an incompatible release
            raise WeightsUnavailable(what, path, url, f"{type(e).__name__}: {e}") from None
