"""The random draws of a training step, behind one small seam.

A step of `loop.Trainer.train_step` draws, in the original's order:

  z      the normal draw behind the discriminator's real codes, (B, style_dim)
  pool   what each W pool ('real', 'fake') returns for the codes it is given (with --use-w-pool)
  noise  the generator's noise, one entry per noise layer (None: the layer draws its own, as the
         original's randomize_noise=True)

The batch itself (which images, which flipped) is drawn before the step by `data.train_batches`,
and a key (index, flip) becomes an image with `data.keyed`.

`Draws` is what every run uses: the global torch RNG, the pools' own `random.Random` -- the very
draws (and their order) e4ecli has always made, so seeded runs and resumes are unchanged. A test
that replays a recorded run of the original (tests/test_train_replay.py) subclasses it and returns
the recorded values instead; nothing else in the step changes.
"""
from __future__ import annotations

import torch

from e4ecli.training.pool import LatentCodesPool


class Draws:
    def z(self, step: int, batch: int, dim: int, device: torch.device) -> torch.Tensor:
        """(batch, dim) standard normal: mapped to the discriminator's real codes."""
        return torch.randn(batch, dim, device=device)

    def pool(self, step: int, which: str, pool: LatentCodesPool, codes: torch.Tensor) -> torch.Tensor:
        """What W pool `which` ('real' or 'fake') returns for `codes` ((N, 512) or (N, k, 512)) -> (N, 512)."""
        return pool.query(codes)

    def noise(self, step: int, n_layers: int) -> list[torch.Tensor | None]:
        """The generator's noise for the encoder's forward: one (N, 1, s, s) tensor or None per noise layer."""
        return [None] * n_layers
