"""`e4e export --format onnx`: the graphs run in onnxruntime and agree with e4ecli (and the kit)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import run, write_e4e_64
from e4ecli.hub.checkpoints import load_checkpoint

ort = pytest.importorskip("onnxruntime", reason="ONNX export tests need the [onnx] extra (onnxruntime)")
pytest.importorskip("onnx", reason="ONNX export tests need the [onnx] extra (onnx)")



def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_e4e_encoder_and_synthesis_run_in_onnxruntime_like_e4ecli(kit_weights, tmp_path):
    e4e_64 = write_e4e_64(kit_weights, tmp_path / "e4e_64.pt", input_size=64)  # 64 px inputs: a 16th of the encoder's work at 256
    res = run("export", e4e_64, "-o", tmp_path / "onnx", "--format", "onnx")
    assert res.exit_code == 0, res.output
    assert "encoder.onnx" in res.output and "synthesis.onnx" in res.output
    loaded = load_checkpoint(e4e_64)
    inverter = loaded.inverter()
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(5)) * 2 - 1  # another batch size than the export's
    with torch.inference_mode():
        wplus = inverter.encode(x)
        images = inverter.decode(wplus)
    enc = session(tmp_path / "onnx" / "encoder.onnx").run(None, {"image": x.numpy()})[0]
    assert enc.shape == (3, loaded.n_styles, 512)
    assert np.abs(enc - wplus.numpy()).max() < 1e-4
    syn = session(tmp_path / "onnx" / "synthesis.onnx").run(None, {"wplus": wplus.numpy()})[0]
    assert syn.shape == (3, 3, 64, 64)
    assert np.abs(syn - images.numpy()).max() < 1e-4


def test_generator_file_exports_synthesis_that_reproduces_the_kit(case_checkpoint, case_arrays, tmp_path):
    res = run("export", case_checkpoint("stylegan2_64_cm1"), "-o", tmp_path / "g", "--no-check")
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "g" / "encoder.onnx").exists() and "only a generator" in res.output
    z = case_arrays("stylegan2_64_cm1")
    out = session(tmp_path / "g" / "synthesis.onnx").run(None, {"wplus": z["wplus"].astype(np.float32)})[0]
    assert np.abs(out - z["images_wplus"]).max() < 1e-3  # the kit's tolerance against the original code


def test_unknown_format_fails_before_loading(tmp_path):
    res = run("export", tmp_path / "missing.pt", "-o", tmp_path / "o", "--format", "tensorrt")
    assert res.exit_code == 2 and "--format 'tensorrt'" in res.output and "missing.pt" not in res.output
