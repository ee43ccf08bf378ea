"""`runtime.configure_process`: the one place that sets process-wide switches (TF32, cuDNN autotuning,
malloc, warning filters) for inference and for training."""
from __future__ import annotations

import types
import warnings

import torch

from e4ecli.runtime import configure_process


def test_training_takes_tf32_and_silences_ddp_stride_noise_inference_stays_exact(monkeypatch):
    cuda = types.SimpleNamespace(type="cuda")  # the switches are plain flags: settable without a GPU
    flags = (torch.backends.cudnn, "benchmark"), (torch.backends.cudnn, "allow_tf32"), (torch.backends.cuda.matmul, "allow_tf32")
    saved = [getattr(m, k) for m, k in flags]
    monkeypatch.setattr(warnings, "filters", list(warnings.filters))  # filterwarnings edits this list: restored after
    try:
        configure_process(cuda, training=True)
        assert [getattr(m, k) for m, k in flags] == [True, True, True]
        with warnings.catch_warnings(record=True) as seen:
            warnings.warn("Grad strides do not match bucket view strides. This may indicate ...", stacklevel=1)
            warnings.warn("another warning", stacklevel=1)
        assert [str(w.message) for w in seen] == ["another warning"]
        configure_process(cuda)
        assert [getattr(m, k) for m, k in flags] == [True, False, False]
    finally:
        for (m, k), v in zip(flags, saved):
            setattr(m, k, v)
