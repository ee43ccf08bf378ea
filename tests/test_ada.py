"""StyleGAN2-ADA .pkl generators: read without running their code, reproduce NVIDIA's numbers,
convert to .pt, and load through every command (issue 9)."""
from __future__ import annotations

import os
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import KIT
from e4ecli.cli import app
from e4ecli.files.images import to_uint8
from e4ecli.hub.ada import PersistentRecord, convert_pickle, is_plain_pickle, read_pickle
from e4ecli.hub.checkpoints import GENERATOR_CONFIG_KEY, CheckpointError, load_checkpoint, safe_load
from e4ecli.models.stylegan2 import Generator

ADA_PKL = KIT / "ada" / "ada_64_map2.pkl"
ADA_NPZ = KIT / "ada" / "ada_64_map2.npz"
TOL = 1e-3

needs_kit = pytest.mark.skipif(not ADA_PKL.is_file(), reason=f"conformance kit not found at {KIT} (ships with the project's test environment only)")


@pytest.fixture(scope="module")
def case() -> dict[str, np.ndarray]:
    if not ADA_NPZ.is_file():
        pytest.skip(f"conformance kit not found at {KIT}")
    with np.load(ADA_NPZ, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _images(gen: Generator, wplus: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return gen.synthesis(torch.from_numpy(wplus)).numpy()


# -- writing ADA-style pickles in the tests ---------------------------------------------------------
def _nvidia_like_persistence() -> types.ModuleType:
    """Stand-in for torch_utils.persistence: like the real one, rebuilding an object executes meta['module_src']."""
    pkg = types.ModuleType("torch_utils")
    mod = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        exec(compile(meta["module_src"], "<module_src>", "exec"), {})
        return meta

    _reconstruct_persistent_obj.__module__ = mod.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mod._reconstruct_persistent_obj = _reconstruct_persistent_obj
    pkg.persistence = mod
    return mod


@pytest.fixture
def persistence(monkeypatch) -> types.ModuleType:
    mod = _nvidia_like_persistence()
    monkeypatch.setitem(sys.modules, "torch_utils", sys.modules.get("torch_utils") or types.ModuleType("torch_utils"))
    monkeypatch.setattr(sys.modules["torch_utils"], "persistence", mod, raising=False)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", mod)
    return mod


class _Persistent:
    """Pickles as torch_utils.persistence._reconstruct_persistent_obj(meta), the way NVIDIA's snapshots do."""

    def __init__(self, fn, meta: dict):
        self.fn, self.meta = fn, meta

    def __reduce__(self):
        return self.fn, (self.meta,)


def _repickle(obj, fn, module_src: str):
    """Records read by e4ecli -> objects that pickle like NVIDIA's persistent networks."""
    if isinstance(obj, PersistentRecord):
        meta = {"type": "class", "version": 6, "module_src": module_src, "class_name": obj.class_name,
                "state": _repickle(obj.state, fn, module_src)}
        return _Persistent(fn, meta)
    if isinstance(obj, dict):
        return type(obj)((k, _repickle(v, fn, module_src)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_repickle(v, fn, module_src) for v in obj)
    return obj


def _write_ada(path: Path, data: dict, fn, module_src: str = "# placeholder") -> Path:
    path.write_bytes(pickle.dumps(_repickle(data, fn, module_src), protocol=4))
    return path


def _layers(rec: PersistentRecord):
    yield rec
    for child in rec.state["_modules"].values():
        if isinstance(child, PersistentRecord):
            yield from _layers(child)


class _Hostile:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


# -- conformance -------------------------------------------------------------------------------------
@needs_kit
def test_pkl_reproduces_nvidia_mapping_truncation_and_synthesis(case):
    ckpt = load_checkpoint(ADA_PKL)
    gen = ckpt.generator
    assert ckpt.kind == "generator" and gen.size == 64 and gen.n_mlp == 2 and gen.n_latent == 10
    assert gen.channels == {4: 128, 8: 128, 16: 128, 32: 64, 64: 32}
    assert np.abs(ckpt.latent_avg.numpy() - case["w_avg"]).max() <= TOL
    with torch.no_grad():
        w = gen.mapping(torch.from_numpy(case["z"]))
        w = ckpt.latent_avg + 0.7 * (w - ckpt.latent_avg)
        ws = w[:, None].repeat(1, gen.n_latent, 1)
    assert np.abs(ws.numpy() - case["ws_trunc07"]).max() <= TOL
    assert np.abs(_images(gen, case["ws_trunc07"]) - case["images_trunc07"]).max() <= TOL
    assert np.abs(_images(gen, case["wplus"]) - case["images_wplus"]).max() <= TOL


@needs_kit
def test_convert_cli_round_trip_gives_the_same_images(case, tmp_path):
    out = tmp_path / "ada64.pt"
    res = CliRunner().invoke(app, ["convert", str(ADA_PKL), "-o", str(out)])
    assert res.exit_code == 0, res.output
    raw = safe_load(out)  # plain tensors: loads with weights_only=True
    assert {"g_ema", "latent_avg"} <= set(raw)
    # channel_base 2048 / 2 mapping layers is not rosinality's architecture: the project's config rides along
    assert raw[GENERATOR_CONFIG_KEY]["n_mlp"] == 2 and raw[GENERATOR_CONFIG_KEY]["channels"][64] == 32
    ckpt = load_checkpoint(out)
    assert np.abs(ckpt.latent_avg.numpy() - case["w_avg"]).max() <= TOL
    assert np.abs(_images(ckpt.generator, case["wplus"]) - case["images_wplus"]).max() <= TOL
    assert np.abs(_images(ckpt.generator, case["ws_trunc07"]) - case["images_trunc07"]).max() <= TOL

    again = CliRunner().invoke(app, ["convert", str(ADA_PKL), "-o", str(out)])
    assert again.exit_code == 0 and "already exists" in again.output


@needs_kit
def test_render_cli_takes_a_pkl_checkpoint(case, tmp_path):
    lat = tmp_path / "lat"
    lat.mkdir()
    for i, w in enumerate(case["wplus"]):
        np.save(lat / f"w{i}.npy", w)
    res = CliRunner().invoke(app, ["render", str(lat), "-o", str(tmp_path / "out"), "--checkpoint", str(ADA_PKL), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    want = to_uint8(torch.from_numpy(case["images_wplus"]))
    for i in range(len(want)):
        got = np.asarray(Image.open(tmp_path / "out" / f"w{i}.png").convert("RGB")).astype(int)
        assert np.abs(got - want[i].astype(int)).max() <= 1


def test_rosinality_shaped_generator_converts_to_plain_rosinality_layout():
    from e4ecli.hub.ada import ConvertedGenerator

    gen = Generator(64, n_mlp=8, channel_multiplier=1)
    conf = {"size": 64, "style_dim": 512, "n_mlp": 8, "channels": dict(gen.channels), "conv_clamp": None}
    conv = ConvertedGenerator(gen.state_dict(), conf, torch.zeros(512))
    assert conv.fits_rosinality and set(conv.checkpoint()) == {"g_ema", "latent_avg"}
    clamped = ConvertedGenerator(gen.state_dict(), {**conf, "conv_clamp": 256.0}, torch.zeros(512))
    assert clamped.checkpoint()[GENERATOR_CONFIG_KEY]["conv_clamp"] == 256.0


# -- never executing the file's code -------------------------------------------------------------------
@pytest.mark.parametrize("func", [os.system, exec], ids=["os.system", "builtins.exec"])
def test_pickle_with_a_code_running_reduce_is_refused(tmp_path, func):
    marker = tmp_path / "pwned"
    arg = f"touch {marker}" if func is os.system else f"open({str(marker)!r}, 'w').write('x')"
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"G_ema": _Hostile(func, arg)}, protocol=4))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    assert str(bad) in str(err.value) and f".{func.__name__}" in str(err.value)
    assert not marker.exists()


def test_storage_bytes_are_read_with_weights_only(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Hostile(os.system, f"touch {marker}"), protocol=2)
    bad = tmp_path / "evil_storage.pkl"
    bad.write_bytes(pickle.dumps({"G_ema": _Hostile(torch.storage._load_from_bytes, payload)}, protocol=4))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    assert str(bad) in str(err.value)
    assert not marker.exists()


@needs_kit
def test_embedded_module_source_is_never_executed(case, tmp_path, persistence):
    marker = tmp_path / "pwned"
    src = f"open({str(marker)!r}, 'w').write('module_src ran')"
    data = read_pickle(ADA_PKL)
    hostile = _write_ada(tmp_path / "snapshot.pkl", data, persistence._reconstruct_persistent_obj, module_src=src)

    ckpt = load_checkpoint(hostile)
    assert not marker.exists()
    assert np.abs(_images(ckpt.generator, case["wplus"]) - case["images_wplus"]).max() <= TOL

    pickle.loads(hostile.read_bytes())  # what ordinary unpickling (NVIDIA's loader) does with the same file
    assert marker.exists()


@needs_kit
def test_conditional_generator_is_refused(tmp_path, persistence):
    data = read_pickle(ADA_PKL)
    data["G_ema"].state["c_dim"] = 10
    path = _write_ada(tmp_path / "cond.pkl", data, persistence._reconstruct_persistent_obj)
    with pytest.raises(CheckpointError, match="conditional") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


@needs_kit
def test_conv_clamp_of_fp16_training_is_applied_and_survives_convert(case, tmp_path, persistence):
    data = read_pickle(ADA_PKL)
    clamp = 0.01  # tiny, so it binds (the real value is 256)
    for rec in _layers(data["G_ema"]):
        if rec.class_name in ("SynthesisLayer", "ToRGBLayer"):
            rec.state["conv_clamp"] = clamp
    path = _write_ada(tmp_path / "fp16.pkl", data, persistence._reconstruct_persistent_obj)
    gen = load_checkpoint(path).generator
    assert gen.conv_clamp == clamp
    images = _images(gen, case["wplus"])
    # the image is the sum of 5 upsampled ToRGB outputs, each clamped to [-0.01, 0.01]
    assert np.abs(images).max() <= 5 * clamp + 1e-6
    assert np.abs(images - case["images_wplus"]).max() > 0.1

    out = tmp_path / "fp16.pt"
    assert CliRunner().invoke(app, ["convert", str(path), "-o", str(out)]).exit_code == 0
    again = load_checkpoint(out).generator
    assert again.conv_clamp == clamp
    assert np.abs(_images(again, case["wplus"]) - images).max() <= 1e-6


def test_plain_pickle_without_a_generator_is_explained(tmp_path):
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps(OrderedDict(a=torch.zeros(3)), protocol=4))
    assert is_plain_pickle(path)
    with pytest.raises(CheckpointError, match="no G_ema") as err:
        convert_pickle(path)
    assert str(path) in str(err.value)


def test_legacy_torch_files_still_go_through_the_weights_only_loader(tmp_path):
    gen = Generator(8, style_dim=16, n_mlp=2, channels={4: 4, 8: 4})
    ckpt = {"g_ema": gen.state_dict(), "latent_avg": torch.zeros(16)}
    path = tmp_path / "legacy.pt"
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    assert not is_plain_pickle(path)
    loaded = load_checkpoint(path)
    assert loaded.generator.size == 8 and loaded.generator.conv_clamp is None
    torch.save(ckpt, path, _use_new_zipfile_serialization=False, pickle_protocol=4)
    assert not is_plain_pickle(path)  # recognised by its magic number, not by its first bytes
