"""`e4e bench` reports FLOPs, times and efficiency as a table and JSON (no timing is asserted)."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import kit_or_skip, run, write_e4e_64
from e4ecli.cli import app
from e4ecli.runtime import native_bf16_cpu


def test_bench_small_architecture_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(app, ["bench", "--size", "32", "--device", "cpu", "--iters", "1", "--json", str(out)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "efficiency" in res.output and "end to end" in res.output
    r = json.loads(out.read_text())
    assert r["size"] == 32 and r["batch_size"] == 1 and r["precision"] == "fp32"
    assert r["encoder_gflop_per_image"] > 40  # IR-SE50 body + 8 style blocks on a 256x256 input
    assert 0 < r["generator_gflop_per_image"] < r["encoder_gflop_per_image"]
    assert r["end_to_end_s_per_image"] > 0 and r["peak_gflops"] > 0 and r["first_encode_s"] > 0
    assert r["matmul_gflops"] > 0 and r["conv_gflops"] > 0 and r["peak_gflops"] == max(r["matmul_gflops"], r["conv_gflops"])
    assert "NHWC convolution" in res.output
    # one round: its own peak and times give the efficiency (the peak is timed beside the model, not apart)
    (one,) = r["per_round"]
    assert r["rounds"] == 1 and one["peak_gflops"] == max(one["matmul_gflops"], one["conv_gflops"])
    flops = (r["encoder_gflop_per_image"] + r["generator_gflop_per_image"]) * 1e9
    expected = flops / (one["encoder_s_per_image"] + one["generator_s_per_image"]) / (one["peak_gflops"] * 1e9)
    assert abs(r["efficiency"] - expected) < 1e-6 * expected and r["efficiency"] == one["efficiency"]
    assert r["onnxruntime"] is None


def test_bench_efficiency_is_the_median_of_rounds(tmp_path):
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(app, ["bench", "--size", "16", "--device", "cpu", "--iters", "3", "--json", str(out)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    rounds = r["per_round"]
    assert r["rounds"] == len(rounds) == 3
    assert r["efficiency"] == sorted(x["efficiency"] for x in rounds)[1]
    assert r["encoder_s_per_image"] == sorted(x["encoder_s_per_image"] for x in rounds)[1]
    assert r["peak_gflops"] == sorted(x["peak_gflops"] for x in rounds)[1]


def test_bench_compare_accepts_only_onnxruntime_and_fp32():
    res = CliRunner().invoke(app, ["bench", "--size", "32", "--compare", "tensorrt"])
    assert res.exit_code == 2 and "onnxruntime" in res.output
    res = CliRunner().invoke(app, ["bench", "--size", "32", "--compare", "onnxruntime", "--precision", "bf16"])
    assert res.exit_code == 2 and "fp32" in res.output


def test_bench_rejects_bad_size():
    res = CliRunner().invoke(app, ["bench", "--size", "100"])
    assert res.exit_code == 2 and "power of two" in res.output


def test_bench_checkpoint_side_by_side_with_onnxruntime(tmp_path):
    """A real e4e file: the ready-model time is reported, and ONNX Runtime runs the same graphs in every round."""
    pytest.importorskip("onnxruntime", reason="--compare onnxruntime needs the [onnx] extra")
    pytest.importorskip("onnx", reason="--compare onnxruntime needs the [onnx] extra")
    kit_or_skip()
    import weights

    ckpt = write_e4e_64(weights, tmp_path / "e4e_64.pt", input_size=64)  # 64 px inputs: a 16th of the encoder's work at 256
    out = tmp_path / "bench.json"
    res = run("bench", "--checkpoint", str(ckpt), "--device", "cpu", "--iters", "2", "--compare", "onnxruntime", "--json", str(out))
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert r["size"] == 64 and r["ready_s"] > 0 and "ready model" in res.output
    assert r["onnxruntime"]["encoder_s_per_image"] > 0 and r["onnxruntime"]["generator_s_per_image"] > 0
    assert all(x["onnxruntime_encoder_s_per_image"] > 0 and x["onnxruntime_generator_s_per_image"] > 0 for x in r["per_round"])


@pytest.mark.skipif(not native_bf16_cpu(), reason="this CPU has no native bf16: emulated bf16 makes bench's peak measurement take ~10 minutes")
def test_bench_several_precisions_side_by_side(tmp_path):
    """fp32 and bf16 are timed in turn in every round, each on its own model copy; the speed-up comes from the medians."""
    out = tmp_path / "bench.json"
    res = run("bench", "--size", "16", "--device", "cpu", "--iters", "2", "--precision", "fp32,bf16", "--json", str(out))
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    fp32, bf16 = r["precisions"]["fp32"], r["precisions"]["bf16"]
    assert fp32["precision"] == "fp32" and bf16["precision"] == "bf16"
    assert len(fp32["per_round"]) == len(bf16["per_round"]) == 2
    assert abs(r["speedup"]["end_to_end_s_per_image"] - fp32["end_to_end_s_per_image"] / bf16["end_to_end_s_per_image"]) < 1e-9
    assert fp32["encoder_gflop_per_image"] == bf16["encoder_gflop_per_image"]  # the same network
    assert "fp32 peak" in res.output and "bf16 peak" in res.output


def test_bench_rejects_unknown_precision_in_a_list():
    res = CliRunner().invoke(app, ["bench", "--size", "16", "--precision", "fp32,fp64"])
    assert res.exit_code == 2 and "fp64" in res.output


@pytest.mark.parametrize("args", [["--precision", "fp32,fp65"], ["--size", "100"], ["--compare", "tensorrt"]])
def test_bench_bad_options_fail_before_torch_loads(args):
    import subprocess
    import sys

    code = ("import sys\nfrom typer.testing import CliRunner\nfrom e4ecli.cli import app\n"
            f"r = CliRunner().invoke(app, ['bench', *{args!r}])\n"
            "sys.exit(0 if r.exit_code == 2 and 'torch' not in sys.modules else 1)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
