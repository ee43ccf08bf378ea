"""`e4e bench` reports FLOPs, times and efficiency as a table and JSON (no timing is asserted)."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from e4ecli.cli import app


def test_bench_small_architecture_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(app, ["bench", "--size", "32", "--device", "cpu", "--iters", "1", "--json", str(out)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "efficiency" in res.output and "end to end" in res.output
    r = json.loads(out.read_text())
    assert r["size"] == 32 and r["batch_size"] == 1 and r["precision"] == "fp32"
    assert r["encoder_gflop_per_image"] > 40  # IR-SE50 body + 8 style blocks on a 256x256 input
    assert 0 < r["generator_gflop_per_image"] < r["encoder_gflop_per_image"]
    assert r["end_to_end_s_per_image"] > 0 and r["peak_gflops"] > 0
    total = (r["encoder_gflop_per_image"] + r["generator_gflop_per_image"]) / r["end_to_end_s_per_image"]
    assert abs(r["efficiency"] - total / r["peak_gflops"]) < 1e-6 * max(1.0, r["efficiency"])
    assert r["matmul_gflops"] > 0 and r["conv_gflops"] > 0 and r["peak_gflops"] == max(r["matmul_gflops"], r["conv_gflops"])
    assert "NHWC convolution" in res.output


def test_bench_compare_accepts_only_onnxruntime_and_fp32():
    res = CliRunner().invoke(app, ["bench", "--size", "32", "--compare", "tensorrt"])
    assert res.exit_code == 2 and "onnxruntime" in res.output
    res = CliRunner().invoke(app, ["bench", "--size", "32", "--compare", "onnxruntime", "--precision", "bf16"])
    assert res.exit_code == 2 and "fp32" in res.output


def test_bench_rejects_bad_size():
    res = CliRunner().invoke(app, ["bench", "--size", "100"])
    assert res.exit_code == 2 and "power of two" in res.output
