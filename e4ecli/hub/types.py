"""Types shared by the checkpoint loaders (`checkpoints`, `ada`, `networks`) and their callers.

Kept apart so that the loaders can use each other's results without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from e4ecli.domains import Domain, domain_for
from e4ecli.models.inverter import Inverter
from e4ecli.models.stylegan2 import Generator

GENERATOR_CONFIG_KEY = "e4ecli_generator_config"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and says why."""


@dataclass
class LoadedCheckpoint:
    path: Path
    kind: str  # "Encoder4Editing" | "GradualStyleEncoder" | "SingleStyleCodeEncoder" | "generator"
    generator: Generator
    latent_avg: torch.Tensor  # (n_styles, 512) for encoders, (512,) for bare generators
    encoder: nn.Module | None = None
    opts: dict = field(default_factory=dict)
    domain: Domain = field(default_factory=lambda: domain_for(None))
    latent_avg_source: str = "file"

    @property
    def has_encoder(self) -> bool:
        return self.encoder is not None

    @property
    def n_styles(self) -> int:
        return self.generator.n_latent

    def inverter(self) -> Inverter:
        if self.encoder is None:
            raise CheckpointError(f"{self.path}: holds only a generator; inversion needs an e4e/pSp checkpoint with an encoder")
        return Inverter(self.encoder, self.generator, self.latent_avg, bool(self.opts.get("start_from_latent_avg", True))).eval()

    def to(self, device) -> "LoadedCheckpoint":
        self.generator.to(device)
        if self.encoder is not None:
            self.encoder.to(device)
        self.latent_avg = self.latent_avg.to(device)
        return self
