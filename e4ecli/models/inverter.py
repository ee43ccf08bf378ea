"""Encoder + generator + latent average: the pSp/e4e network as one module (no I/O)."""
from __future__ import annotations

import torch
from torch import nn

from e4ecli.models.stylegan2 import Generator


class Inverter(nn.Module):
    """images (N, 3, H, W) in [-1, 1] -> W+ latents (N, n_styles, 512) -> images (N, 3, S, S).

    Mirrors the original pSp/e4e forward with `randomize_noise=False`: the encoder's codes are
    offset by `latent_avg` when `start_from_latent_avg`, and the generator uses its stored noise.
    """

    def __init__(self, encoder: nn.Module, decoder: Generator, latent_avg: torch.Tensor | None, start_from_latent_avg: bool = True):
        super().__init__()
        # NHWC feature maps (encode() passes its input as channels_last): oneDNN / cuDNN run the IR-SE50 convolutions
        # several times faster. The weights are not copied to NHWC here: the encoder's inference path lays out its
        # own (encoders._Conv), and on CPU oneDNN reorders a weight from any layout.
        self.encoder = encoder
        self.decoder = decoder
        self.start_from_latent_avg = bool(start_from_latent_avg)
        self.register_buffer("latent_avg", latent_avg if latent_avg is not None else torch.zeros(decoder.n_latent, decoder.style_dim))

    @property
    def n_styles(self) -> int:
        return self.decoder.n_latent

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        dtype = next(self.encoder.parameters()).dtype  # bf16 when the encoder is stored in bf16 (CPU bf16 runs)
        codes = self.encoder(x.to(dtype).contiguous(memory_format=torch.channels_last)).float()
        if self.start_from_latent_avg:
            avg = self.latent_avg
            codes = codes + (avg if avg.ndim == 2 else avg.unsqueeze(0)).float()
        return codes

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder.synthesis(latents)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latents = self.encode(x)
        return self.decode(latents), latents
