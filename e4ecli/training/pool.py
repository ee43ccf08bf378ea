"""Pools of past latent codes for the discriminator (`--use-w-pool`), as the original LatentCodesPool.

Until the pool is full every code is stored and returned; afterwards each query returns, with
probability 1/2, a random stored code (which the new one replaces) and otherwise the new code.
For (N, k, 512) queries one of the k codes of each sample is picked at random first.
"""
from __future__ import annotations

import random

import torch


class LatentCodesPool:
    def __init__(self, pool_size: int, rng: random.Random):
        self.pool_size = int(pool_size)
        self.rng = rng
        self.ws: list[torch.Tensor] = []

    @property
    def num_ws(self) -> int:
        return len(self.ws)

    def query(self, ws: torch.Tensor) -> torch.Tensor:
        """ws: (N, 512) or (N, k, 512) -> (N, 512)."""
        if self.pool_size == 0:
            return ws
        out = []
        for w in ws:
            if w.ndim == 2:
                w = w[self.rng.randint(0, len(w) - 1)]
            out.append(self._handle(w))
        return torch.stack(out, 0)

    def _handle(self, w: torch.Tensor) -> torch.Tensor:
        if len(self.ws) < self.pool_size:
            self.ws.append(w)
            return w
        if self.rng.uniform(0, 1) > 0.5:
            i = self.rng.randint(0, self.pool_size - 1)
            old = self.ws[i].clone()
            self.ws[i] = w
            return old
        return w

    # -- resume ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """{'ws': (num_ws, 512) tensor (empty: (0,))} -- plain tensors, safe to store in checkpoints."""
        return {"ws": torch.stack([w.detach().cpu() for w in self.ws]) if self.ws else torch.zeros(0)}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        ws = state["ws"]
        self.ws = [w.to(device) for w in ws] if ws.numel() else []
