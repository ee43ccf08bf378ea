"""Training and validation images: folders in, batches of (N, 3, H, W) tensors in [-1, 1] out.

Transforms are the original's (`EncodeTransforms`): resize to the encoder's input size (PIL
bilinear), random horizontal flip for training only, ToTensor, Normalize(0.5, 0.5). The
source and the target are the same image (the original's `transform_source` is None).

All randomness (shuffle order, flips) is derived from (seed, epoch), never from a global
generator, so batch b of epoch e is the same in every run, on every rank, with any number of
DataLoader workers -- which makes `--resume` exact. A file that cannot be decoded is replaced
by the next readable one in the list and reported (the batch keeps its size).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import torch

from e4ecli.domains import Domain
from e4ecli.files.images import IMAGE_EXTENSIONS, ImageError, load_rgb


class DataError(ValueError):
    """A data folder that cannot be trained on; the message names it."""


def find_images(folder: str | Path, flag: str) -> list[Path]:
    """Image files below `folder` (recursive, sorted, hidden entries skipped)."""
    from e4ecli.files.batch import discover

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{flag} {folder}: no such folder")
    items, _ = discover([folder], IMAGE_EXTENSIONS)
    if not items:
        raise DataError(f"{flag} {folder}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return sorted((it.source for it in items), key=lambda p: str(p))


class ImageDataset:
    """Map-style dataset over (index, flip) keys -> (image (3, H, W), [(path, reason) of files skipped])."""

    def __init__(self, paths: Sequence[Path], domain: Domain):
        self.paths = list(paths)
        self.domain = domain

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, bool]) -> tuple[torch.Tensor, list[tuple[str, str]]]:
        index, flip = key
        skipped: list[tuple[str, str]] = []
        for k in range(len(self.paths)):
            path = self.paths[(index + k) % len(self.paths)]
            try:
                x = self.domain.preprocess(load_rgb(path))
            except ImageError as e:
                skipped.append((str(path), str(e)))
                continue
            except Exception as e:  # noqa: BLE001 -- one bad file must not stop training
                skipped.append((str(path), f"{type(e).__name__}: {e}"))
                continue
            return keyed(x, flip), skipped
        raise DataError(f"none of the {len(self.paths)} images could be read (first: {skipped[0][0]}: {skipped[0][1]})")


def keyed(image: torch.Tensor, flip: bool) -> torch.Tensor:
    """The training image of a key (index, flip): (3, H, W) mirrored along the width when flip was drawn
    (the original's RandomHorizontalFlip; source and target are this same image)."""
    return torch.flip(image, dims=[-1]) if flip else image


def collate(samples: list[tuple[torch.Tensor, list]]) -> tuple[torch.Tensor, list[tuple[str, str]]]:
    return torch.stack([x for x, _ in samples]), [s for _, bad in samples for s in bad]


def steps_per_epoch(n_images: int, batch_size: int, world: int) -> int:
    """Full global batches per epoch (the original drops the last partial batch)."""
    return n_images // (batch_size * world)


def epoch_order(n_images: int, seed: int, epoch: int) -> tuple[list[int], list[bool]]:
    """(shuffled indices, flip per position) of one epoch, from (seed, epoch) alone."""
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch)) % (2**63))
    order = torch.randperm(n_images, generator=g).tolist()
    flips = (torch.rand(n_images, generator=g) < 0.5).tolist()
    return order, flips


def train_batches(n_images: int, batch_size: int, rank: int, world: int, seed: int, epoch: int, start: int = 0) -> Iterator[list[tuple[int, bool]]]:
    """This rank's batches of `epoch`, from global batch `start` on: rank r takes the r-th slice of each global batch."""
    order, flips = epoch_order(n_images, seed, epoch)
    size = batch_size * world
    for b in range(start, steps_per_epoch(n_images, batch_size, world)):
        lo = b * size + rank * batch_size
        yield [(order[i], flips[i]) for i in range(lo, lo + batch_size)]


def val_batches(n_images: int, batch_size: int, rank: int, world: int) -> list[list[tuple[int, bool]]]:
    """In order, no flips, partial last batch dropped (the original's drop_last); batch b goes to rank b % world.

    Returns this rank's batches, each as a list of keys; batch indices are `rank + world * j`.
    """
    n_batches = n_images // batch_size
    return [[(i, False) for i in range(b * batch_size, (b + 1) * batch_size)] for b in range(rank, n_batches, world)]


def loader(dataset: ImageDataset, batches, workers: int, pin_memory: bool = False):
    """A DataLoader over explicit batches; it owns its generator, so it never draws from the global RNG."""
    import os

    from torch.utils.data import DataLoader

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return DataLoader(dataset, batch_sampler=list(batches), num_workers=min(workers, cpus), collate_fn=collate,
                      generator=torch.Generator().manual_seed(0), pin_memory=pin_memory,
                      persistent_workers=False)
