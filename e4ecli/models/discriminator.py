"""The e4e latent discriminator: tells W codes of the mapping network from the encoder's codes."""
from __future__ import annotations

import torch
from torch import nn


class LatentCodesDiscriminator(nn.Module):
    """MLP over single codes: w (N, style_dim) -> logit (N, 1).

    `n_mlp` linear layers: (n_mlp - 1) x [Linear(style_dim, style_dim), LeakyReLU(0.2)], then
    Linear(style_dim, 1). State-dict keys (`mlp.0.weight`, `mlp.2.weight`, ...) are the
    original's, so its discriminator state loads as is.
    """

    def __init__(self, style_dim: int = 512, n_mlp: int = 4):
        super().__init__()
        self.style_dim = style_dim
        layers: list[nn.Module] = []
        for _ in range(n_mlp - 1):
            layers += [nn.Linear(style_dim, style_dim), nn.LeakyReLU(0.2)]
        layers.append(nn.Linear(style_dim, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.mlp(w)
