"""Streaming: `invert` over many images keeps resident memory flat (it never collects latents or
images). Measured on a small model: the kit's 64 px e4e with a 16x16 encoder input, 32 images a batch
(on a CPU the encoder's per-batch cost dominates at this size: 8 a batch took three times as long)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc to read resident memory")
def test_invert_memory_stays_flat_over_many_images(kit_weights, tmp_path):
    from conftest import write_e4e_64
    from e4ecli.files.batch import discover
    from e4ecli.files.images import IMAGE_EXTENSIONS
    from e4ecli.hub.checkpoints import load_checkpoint
    from e4ecli.pipelines.invert import invert

    ckpt_path = write_e4e_64(kit_weights, tmp_path / "e4e_64_small_input.pt", input_size=16)
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    n = 1200
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(photos / f"{i:05d}.png")
    items, _ = discover([photos], IMAGE_EXTENSIONS)
    ckpt = load_checkpoint(ckpt_path)
    samples = {}
    for k, r in enumerate(invert(items, ckpt, tmp_path / "out", device=torch.device("cpu"), batch_size=32), 1):
        assert r.status == "ok", r.error
        if k in (300, n):
            samples[k] = rss_mb()
    assert len(list((tmp_path / "out").glob("*.npy"))) == n
    growth = samples[n] - samples[300]
    print(f"rss at 300: {samples[300]:.1f} MB, at {n}: {samples[n]:.1f} MB")
    # 900 more images would hold ~900 * (n_styles * 512 * 4 B = 20 kB) = 18 MB of latents if kept, plus images
    assert growth < 12, f"resident memory grew {growth:.1f} MB from image 300 to {n}"
