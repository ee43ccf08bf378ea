"""--precision bf16 on CPU: the encoder's weights stored in bf16 once, quality against fp32, the note on CPUs
without native bf16. (Speed is measured with `e4e bench`, never asserted here.)"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from e4ecli import runtime
from e4ecli.files.images import to_uint8
from e4ecli.hub.checkpoints import load_checkpoint


def test_note_only_for_bf16_on_a_cpu_without_native_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "native_bf16_cpu", lambda: False)
    assert "no native bf16" in runtime.precision_note(cpu, "bf16")
    assert runtime.precision_note(cpu, "fp32") is None
    monkeypatch.setattr(runtime, "native_bf16_cpu", lambda: True)
    assert runtime.precision_note(cpu, "bf16") is None


def test_fp32_leaves_the_model_as_loaded(case_checkpoint):
    inv = load_checkpoint(case_checkpoint("e4e_256")).inverter()
    assert runtime.store_for(inv, torch.device("cpu"), "fp32") is inv
    assert all(p.dtype == torch.float32 for p in inv.parameters())


@pytest.mark.skipif(not runtime.native_bf16_cpu(), reason="this CPU has no native bf16")
def test_bf16_on_cpu_stays_close_to_fp32(case_checkpoint, case_arrays):
    cpu = torch.device("cpu")
    inv32 = load_checkpoint(case_checkpoint("e4e_256")).inverter()
    inv16 = runtime.store_for(copy.deepcopy(inv32), cpu, "bf16")
    assert next(inv16.encoder.parameters()).dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in inv16.decoder.parameters())
    x = torch.from_numpy(case_arrays("e4e_256")["x"])
    with torch.inference_mode():
        lat32 = inv32.encode(x)
        img32 = inv32.decode(lat32)
        with runtime.autocast(cpu, "bf16"):
            lat16 = inv16.encode(x)
            img16 = inv16.decode(lat16)
    assert lat16.dtype == torch.float32  # latents are saved in fp32 with the latent average added in fp32
    assert (lat16 - lat32).abs().max() < 0.05
    a, b = to_uint8(img32).astype(np.float64), to_uint8(img16.float()).astype(np.float64)
    psnr = 10 * np.log10(255.0**2 / ((a - b) ** 2).mean(axis=(1, 2, 3)))
    assert psnr.min() >= 40
