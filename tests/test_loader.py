"""The checkpoint loader: safe unpickling, clear errors, architecture from contents."""
from __future__ import annotations

import argparse
import hashlib
import os
import pickle

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from e4ecli.hub.checkpoints import CheckpointError, load_checkpoint, mean_latent


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_pickle_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    torch.save({"g_ema": {}, "x": _Evil(marker)}, bad)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(bad)
    assert str(bad) in str(e.value) and "refused" in str(e.value)
    assert not marker.exists()


def test_plain_pickle_file_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned2"
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(CheckpointError):
        load_checkpoint(bad)
    assert not marker.exists()


def test_not_a_checkpoint_and_missing_file(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk.pt: not a PyTorch checkpoint \(neither a zip archive nor a pickle\)"):
        load_checkpoint(junk)
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"model": {"a": torch.zeros(1)}}, other)
    with pytest.raises(CheckpointError, match="top-level keys: model"):
        load_checkpoint(other)


def test_unexpected_keys_and_shapes_are_named(tmp_path, case_checkpoint):
    ckpt = torch.load(case_checkpoint("stylegan2_64_cm1"), weights_only=True)
    sd = dict(ckpt["g_ema"])
    sd["extra.weight"] = torch.zeros(3)
    p = tmp_path / "extra.pt"
    torch.save({"g_ema": sd}, p)
    with pytest.raises(CheckpointError, match=r"unexpected \(e.g. extra.weight\)"):
        load_checkpoint(p)
    sd = dict(ckpt["g_ema"])
    sd["conv1.activate.bias"] = torch.zeros(7)
    torch.save({"g_ema": sd}, p)
    with pytest.raises(CheckpointError, match=r"conv1.activate.bias: file \(7,\) vs model \(512,\)"):
        load_checkpoint(p)


def test_missing_latent_avg_is_computed_deterministically(tmp_path, case_checkpoint):
    ckpt = torch.load(case_checkpoint("stylegan2_64_cm1"), weights_only=True)
    p = tmp_path / "noavg.pt"
    torch.save({"g_ema": ckpt["g_ema"]}, p)
    a, b = load_checkpoint(p), load_checkpoint(p)
    assert a.latent_avg_source != "file"
    assert torch.equal(a.latent_avg, b.latent_avg) and a.latent_avg.shape == (512,)
    assert torch.equal(a.latent_avg, mean_latent(a.generator))
    # it is the mapping network's mean, so it lies close to the mean of fresh samples
    with torch.no_grad():
        fresh = a.generator.mapping(torch.randn(4096, 512, generator=torch.Generator().manual_seed(123))).mean(0)
    assert torch.nn.functional.cosine_similarity(fresh, a.latent_avg, dim=0) > 0.99


def test_training_file_with_argparse_namespace_loads(tmp_path, case_checkpoint):
    ckpt = torch.load(case_checkpoint("stylegan2_64_cm1"), weights_only=True)
    p = tmp_path / "train.pt"
    torch.save({"g_ema": ckpt["g_ema"], "g": ckpt["g_ema"], "args": argparse.Namespace(size=64, n_mlp=8), "latent_avg": ckpt["latent_avg"]}, p)
    loaded = load_checkpoint(p)
    assert loaded.kind == "generator" and loaded.generator.size == 64


def test_architecture_comes_from_contents_not_name(tmp_path, case_checkpoint, case_arrays):
    misleading = tmp_path / "e4e_ffhq_encode_1024.pt"
    misleading.write_bytes(case_checkpoint("psp_256").read_bytes())
    ckpt = load_checkpoint(misleading)
    assert ckpt.kind == "GradualStyleEncoder" and ckpt.generator.size == 256 and ckpt.n_styles == 14


def test_start_from_latent_avg_false_is_respected(tmp_path, case_checkpoint, case_arrays):
    ck = torch.load(case_checkpoint("single_256"), weights_only=True)
    ck["opts"] = dict(ck["opts"], start_from_latent_avg=False)
    p = tmp_path / "noavg_start.pt"
    torch.save(ck, p)
    loaded = load_checkpoint(p)
    x = torch.from_numpy(case_arrays("single_256")["x"][:1])
    with torch.inference_mode():
        codes = loaded.encoder(x)
        assert torch.allclose(loaded.inverter().encode(x), codes, atol=1e-5)  # NHWC vs NCHW rounding
    expected = case_arrays("single_256")["latents"][:1] - case_arrays("single_256")["latent_avg"][None]
    assert np.abs(codes.numpy() - expected).max() < 1e-3


def test_opts_stylegan_size_must_match_weights(tmp_path, case_checkpoint):
    ck = torch.load(case_checkpoint("single_256"), weights_only=True)
    ck["opts"] = dict(ck["opts"], stylegan_size=1024)
    p = tmp_path / "wrong_size.pt"
    torch.save(ck, p)
    with pytest.raises(CheckpointError, match="stylegan_size is 1024"):
        load_checkpoint(p)


def test_trained_input_size_in_opts_sets_the_inversion_input(tmp_path, case_checkpoint):
    ck = torch.load(case_checkpoint("single_256"), weights_only=True)
    ck["opts"] = dict(ck["opts"], input_size=128)
    p = tmp_path / "small_input.pt"
    torch.save(ck, p)
    assert load_checkpoint(p).domain.input_size == (128, 128)
    assert load_checkpoint(case_checkpoint("single_256")).domain.input_size == (256, 256)


class _RandomOps(TorchDispatchMode):
    """Counts random-number ops on real (non-meta) tensors: the work of initialising a module."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name.startswith(("normal", "uniform", "randn", "rand", "bernoulli", "random")) and isinstance(out, torch.Tensor) and not out.is_meta:
            self.count += 1
        return out


def test_loading_initialises_nothing_the_file_overwrites(case_checkpoint):
    with _RandomOps() as ops:
        loaded = load_checkpoint(case_checkpoint("e4e_256"))
    assert ops.count == 0
    tensors = [*loaded.encoder.parameters(), *loaded.generator.parameters(), *loaded.generator.buffers()]
    assert tensors and not any(t.is_meta for t in tensors)


def test_legacy_format_and_half_precision_files_load_as_fp32(tmp_path, case_checkpoint, case_arrays):
    ck = torch.load(case_checkpoint("stylegan2_64_cm1"), weights_only=True)
    legacy = tmp_path / "legacy.pt"
    torch.save(ck, legacy, _use_new_zipfile_serialization=False)  # pre-1.6 files: not memory-mappable
    a = load_checkpoint(legacy)
    half = tmp_path / "half.pt"
    torch.save({"g_ema": {k: v.half() if v.is_floating_point() else v for k, v in ck["g_ema"].items()}, "latent_avg": ck["latent_avg"]}, half)
    b = load_checkpoint(half)
    assert all(p.dtype == torch.float32 for p in b.generator.parameters())
    w = torch.from_numpy(case_arrays("stylegan2_64_cm1")["wplus"][:1])
    with torch.inference_mode():
        img_a, img_b = a.generator.synthesis(w), b.generator.synthesis(w)
    expected = case_arrays("stylegan2_64_cm1")["images_wplus"][:1]
    assert np.abs(img_a.numpy() - expected).max() < 1e-3
    assert torch.isfinite(img_b).all() and (img_a - img_b).abs().max() < 0.1  # fp16-rounded weights, fp32 compute


def test_file_id_is_remembered_until_the_file_changes(tmp_path, monkeypatch):
    from e4ecli.hub import checkpoints, file_ids

    p = tmp_path / "model.pt"
    p.write_bytes(b"a" * 1000)
    first = checkpoints.file_id(p)

    def no_hashing(*_a):
        raise AssertionError("hashed again")

    with monkeypatch.context() as m:
        m.setattr(file_ids, "sha256_of", no_hashing)  # file ids live in hub.file_ids (torch-free); checkpoints re-exports file_id
        assert checkpoints.file_id(p) == first  # remembered: no second read of a 1.2 GB file
    p.write_bytes(b"b" * 1000)
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    second = checkpoints.file_id(p)
    assert second != first and second == hashlib.sha256(b"b" * 1000).hexdigest()[:16]


def test_loading_runs_no_python_meta_kernels(case_checkpoint):
    """Building on the meta device must not pull in sympy / torch._dynamo (torch's Python meta kernels for
    randn, div_, mul, ...): about a second of every load of the published file."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from e4ecli.hub.checkpoints import load_checkpoint\n"
        "before = set(sys.modules)\n"
        f"ck = load_checkpoint({str(case_checkpoint('e4e_256'))!r}); ck.inverter()\n"
        "new = sorted(m for m in set(sys.modules) - before if m == 'sympy' or m.startswith(('sympy.', 'torch._dynamo', 'torch._refs')))\n"
        "print(new[:5])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_bomb_scan_is_remembered_until_the_file_changes(tmp_path, case_checkpoint, monkeypatch):
    import shutil

    from e4ecli.hub import picklescan

    p = tmp_path / "e4e.pt"
    shutil.copy(case_checkpoint("e4e_256"), p)
    scans = []
    real = picklescan.check_file
    monkeypatch.setattr(picklescan, "check_file", lambda path, *a: (scans.append(path), real(path, *a))[1])
    load_checkpoint(p)
    load_checkpoint(p)
    assert len(scans) == 1  # the unchanged file passed once: not scanned again
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    load_checkpoint(p)
    assert len(scans) == 2  # a touched file is scanned again


def test_a_refused_file_is_scanned_every_time(tmp_path, monkeypatch):
    from e4ecli.hub import picklescan

    p = tmp_path / "bomb.pt"
    p.write_bytes(pickle.dumps([[[[1]]]]))
    calls = []

    def refuse(path, *_a):
        calls.append(path)
        raise picklescan.PickleBomb(f"{path}: test")

    monkeypatch.setattr(picklescan, "check_file", refuse)
    for _ in range(2):
        with pytest.raises(CheckpointError, match="refused"):
            load_checkpoint(p)
    assert len(calls) == 2
