"""Training data: folders of real photos, the original transforms, deterministic order and flips
(what makes --resume and multi-process runs exact), and unreadable files skipped with a reason."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from e4ecli.domains import domain_for
from e4ecli.training import data as D
from train_support import write_photos


def test_images_are_resized_bilinearly_to_the_input_size_and_scaled_to_minus1_1(tmp_path):
    paths = write_photos(tmp_path / "train", ["face", "car"], size=80)
    found = D.find_images(tmp_path / "train", "--data")
    assert sorted(found) == sorted(paths)  # recursive
    ds = D.ImageDataset(found, domain_for("ffhq_encode", 64))
    x, skipped = ds[(0, False)]
    ref = np.asarray(Image.open(found[0]).convert("RGB").resize((64, 64), Image.BILINEAR), dtype=np.float32) / 127.5 - 1
    assert skipped == [] and x.shape == (3, 64, 64)
    assert np.abs(x.permute(1, 2, 0).numpy() - ref).max() < 1e-6
    flipped, _ = ds[(0, True)]
    assert torch.equal(flipped, torch.flip(x, dims=[-1]))
    cars = domain_for("cars_encode", 64)
    assert cars.input_size == (48, 64) and domain_for("cars_encode", None).input_size == (192, 256)


def test_unreadable_files_are_replaced_by_the_next_image_and_reported(tmp_path):
    write_photos(tmp_path / "train", ["face", "crop"], size=40)
    (tmp_path / "train" / "a_broken.png").write_bytes(b"\x89PNG not really")
    found = D.find_images(tmp_path / "train", "--data")
    ds = D.ImageDataset(found, domain_for("ffhq_encode", 32))
    bad_index = [p.name for p in found].index("a_broken.png")
    x, skipped = ds[(bad_index, False)]
    assert x.shape == (3, 32, 32)
    assert skipped and skipped[0][0].endswith("a_broken.png") and skipped[0][1]
    batch, reported = D.collate([ds[(i, False)] for i in range(len(ds))])
    assert batch.shape == (3, 3, 32, 32) and len(reported) == 1


def test_empty_or_missing_folders_are_refused_with_the_flag(tmp_path):
    with pytest.raises(D.DataError, match="--data .*no such folder"):
        D.find_images(tmp_path / "nope", "--data")
    (tmp_path / "empty").mkdir()
    with pytest.raises(D.DataError, match="--val-data .*no images found"):
        D.find_images(tmp_path / "empty", "--val-data")


def test_epoch_order_and_flips_depend_only_on_seed_and_epoch():
    a, b = D.epoch_order(50, seed=3, epoch=2), D.epoch_order(50, seed=3, epoch=2)
    assert a == b and sorted(a[0]) == list(range(50))
    assert D.epoch_order(50, 3, 3)[0] != a[0] and D.epoch_order(50, 4, 2)[0] != a[0]
    assert 10 < sum(a[1]) < 40  # about half the images flipped


def test_ranks_split_each_global_batch_and_a_restart_resumes_mid_epoch():
    one = list(D.train_batches(11, batch_size=2, rank=0, world=1, seed=0, epoch=0))
    assert len(one) == D.steps_per_epoch(11, 2, 1) == 5  # the partial last batch is dropped
    r0 = list(D.train_batches(11, batch_size=2, rank=0, world=2, seed=0, epoch=0))
    r1 = list(D.train_batches(11, batch_size=2, rank=1, world=2, seed=0, epoch=0))
    assert len(r0) == len(r1) == 2
    assert [k for b0, b1 in zip(r0, r1) for k in b0 + b1] == [k for b in one[:4] for k in b]
    assert list(D.train_batches(11, 2, 0, 1, 0, 0, start=3)) == one[3:]
    v0, v1 = D.val_batches(7, 2, 0, 2), D.val_batches(7, 2, 1, 2)
    assert [k[0] for b in v0 for k in b] == [0, 1, 4, 5] and [k[0] for b in v1 for k in b] == [2, 3]
    assert not any(flip for b in v0 + v1 for _, flip in b)
