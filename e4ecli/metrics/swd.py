"""Sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al. 2018, "Progressive growing
of GANs", appendix D; the e4e paper's SWD).

Protocol: a Laplacian pyramid per image (binomial 5-tap filter, down to 16 px); from each level,
128 random 7x7 patches (descriptors of 3*7*7 values); each set's descriptors are normalised per
channel by that set's own mean and std; the distance per level is the mean, over 4 repeats of 512
random unit directions, of the mean absolute difference between the sorted projections of the two
sets. `swd` reports the mean over levels x 1e3 (the paper's "SWD x 10^3"); per-level values too.

Memory is flat in the number of images: each set keeps a bounded uniform reservoir of descriptors per level.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PATCH = 7
PATCHES_PER_IMAGE = 128
MIN_RES = 16
DIRECTIONS = 512
REPEATS = 4
RESERVOIR = 32768  # descriptors kept per level and set


def _blur_kernel(channels: int, device, dtype) -> torch.Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=device, dtype=dtype)
    k = torch.outer(k, k)
    k = k / k.sum()
    return k.expand(channels, 1, 5, 5).contiguous()


def _pyr_down(x: torch.Tensor) -> torch.Tensor:
    k = _blur_kernel(x.shape[1], x.device, x.dtype)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=x.shape[1])[:, :, ::2, ::2]


def _pyr_up(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    up = torch.zeros(n, c, h * 2, w * 2, device=x.device, dtype=x.dtype)
    up[:, :, ::2, ::2] = x * 4
    k = _blur_kernel(c, x.device, x.dtype)
    return F.conv2d(F.pad(up, (2, 2, 2, 2), mode="reflect"), k, groups=c)


def laplacian_pyramid(images: torch.Tensor, min_res: int = MIN_RES) -> list[torch.Tensor]:
    """images (N, C, H, W) -> [L0 (N, C, H, W), L1 (N, C, H/2, W/2), ..., G_last (min side >= min_res)]."""
    levels, g = [], images
    while min(g.shape[-2:]) // 2 >= min_res and g.shape[-1] % 2 == 0 and g.shape[-2] % 2 == 0:
        down = _pyr_down(g)
        levels.append(g - _pyr_up(down))
        g = down
    levels.append(g)
    return levels


def random_patches(level: torch.Tensor, count: int, generator: torch.Generator, size: int = PATCH) -> torch.Tensor:
    """level (N, C, H, W) -> (N * count, C * size * size) patches at uniform random positions."""
    n, c, h, w = level.shape
    ys = torch.randint(0, h - size + 1, (n, count), generator=generator)
    xs = torch.randint(0, w - size + 1, (n, count), generator=generator)
    offs = torch.arange(size)
    rows = (ys[..., None] + offs)[..., :, None].expand(n, count, size, size)  # (N, count, size, size)
    cols = (xs[..., None] + offs)[..., None, :].expand(n, count, size, size)
    lvl = level.detach().float().cpu()
    batch = torch.arange(n)[:, None, None, None].expand_as(rows)
    patches = lvl.permute(0, 2, 3, 1)[batch, rows, cols]  # (N, count, size, size, C)
    return patches.permute(0, 1, 4, 2, 3).reshape(n * count, c * size * size)


class Reservoir:
    """A uniform random sample (at most `capacity` rows) of every row ever offered (algorithm R)."""

    def __init__(self, capacity: int, generator: torch.Generator) -> None:
        self.capacity, self.gen, self.seen = capacity, generator, 0
        self.rows: torch.Tensor | None = None

    def offer(self, rows: torch.Tensor) -> None:
        if self.rows is None:
            self.rows = torch.empty(0, rows.shape[1], dtype=rows.dtype)
        room = self.capacity - self.rows.shape[0]
        if room > 0:
            take = rows[:room]
            self.rows = torch.cat([self.rows, take])
            self.seen += take.shape[0]
            rows = rows[room:]
        if rows.shape[0] == 0:
            return
        index = self.seen + torch.arange(rows.shape[0])  # global position of each row
        slot = (torch.rand(rows.shape[0], generator=self.gen, dtype=torch.float64) * (index + 1)).long()
        keep = slot < self.capacity
        self.rows[slot[keep]] = rows[keep]
        self.seen += rows.shape[0]


class PatchSet:
    """Pyramid descriptors of one image set, per level, in bounded reservoirs."""

    def __init__(self, seed: int = 0, capacity: int = RESERVOIR, patches_per_image: int = PATCHES_PER_IMAGE) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.capacity, self.per_image = capacity, patches_per_image
        self.levels: list[Reservoir] = []

    @torch.no_grad()
    def update(self, images: torch.Tensor) -> None:
        """images (N, 3, H, W), any fixed range (descriptors are normalised per set)."""
        pyramid = laplacian_pyramid(images.float())
        if not self.levels:
            self.levels = [Reservoir(self.capacity, self.gen) for _ in pyramid]
        if len(pyramid) != len(self.levels):
            raise ValueError("SWD: every image of a set must have the same size")
        for res, lvl in zip(self.levels, pyramid):
            res.offer(random_patches(lvl, self.per_image, self.gen))

    def descriptors(self) -> list[torch.Tensor]:
        """Per level: (M, C*7*7) descriptors normalised per channel by this set's mean and std."""
        out = []
        for res in self.levels:
            d = res.rows.reshape(res.rows.shape[0], -1, PATCH * PATCH)  # (M, C, 49)
            mean = d.mean(dim=(0, 2), keepdim=True)
            std = d.std(dim=(0, 2), keepdim=True).clamp_min(1e-8)
            out.append(((d - mean) / std).reshape(d.shape[0], -1))
        return out


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, generator: torch.Generator, directions: int = DIRECTIONS,
                       repeats: int = REPEATS) -> float:
    """a (M, D), b (M', D) -> mean over repeats of mean_k mean_i |sort(a v_k)_i - sort(b v_k)_i|.

    Sets of different sizes are compared at the smaller size (a random subset of the larger)."""
    m = min(a.shape[0], b.shape[0])
    if a.shape[0] > m:
        a = a[torch.randperm(a.shape[0], generator=generator)[:m]]
    if b.shape[0] > m:
        b = b[torch.randperm(b.shape[0], generator=generator)[:m]]
    total = 0.0
    for _ in range(repeats):
        v = torch.randn(a.shape[1], directions, generator=generator)
        v = v / v.norm(dim=0, keepdim=True)
        # (directions, M) sorted along rows; numpy's sort is several times faster than torch's on CPU
        pa = np.sort((v.T @ a.T).numpy(), axis=1)
        pb = np.sort((v.T @ b.T).numpy(), axis=1)
        total += float(np.abs(pa - pb).mean())
    return total / repeats


def swd(real: PatchSet, fake: PatchSet, seed: int = 0) -> tuple[float, list[float]]:
    """(mean over levels x 1e3, per-level distances x 1e3, finest level first)."""
    gen = torch.Generator().manual_seed(seed)
    per_level = [sliced_wasserstein(a, b, gen) * 1e3 for a, b in zip(real.descriptors(), fake.descriptors())]
    return sum(per_level) / len(per_level), per_level
