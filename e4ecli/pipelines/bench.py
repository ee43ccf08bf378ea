"""Speed measurements: the machine's fp32 matmul peak, encoder / generator time per image, efficiency.

Efficiency = (model FLOPs per image) / (seconds per image) / (measured fp32 matmul FLOP/s). FLOPs
are counted by torch's FlopCounterMode on one forward pass (convolutions and matmuls, 2 per MAC).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch

from e4ecli.runtime import autocast


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn, device: torch.device, iters: int, warmup: int = 1) -> float:
    """Median seconds of `iters` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_peak(device: torch.device, n: int | None = None, iters: int = 5) -> float:
    """Measured fp32 matmul throughput in FLOP/s (best of `iters`)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    with torch.inference_mode():
        a @ b
        _sync(device)
        best = float("inf")
        for _ in range(iters):
            t = time.perf_counter()
            a @ b
            _sync(device)
            best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@dataclass
class BenchResult:
    device: str
    precision: str
    size: int
    batch_size: int
    peak_gflops: float
    encoder_gflop_per_image: float
    generator_gflop_per_image: float
    encoder_s_per_image: float
    generator_s_per_image: float
    end_to_end_s_per_image: float
    images_per_s: float
    efficiency: float  # FLOPs per image / time per image / peak

    def as_dict(self) -> dict:
        return asdict(self)


def bench(inverter, device: torch.device, *, input_size: tuple[int, int] = (256, 256), batch_size: int = 1,
          precision: str = "fp32", iters: int = 3, peak: float | None = None) -> BenchResult:
    """Time `inverter.encode` on (B, 3, H, W) inputs and `inverter.decode` on its latents."""
    inverter = inverter.to(device).eval()
    x = torch.randn(batch_size, 3, *input_size, device=device).clamp_(-1, 1)
    with torch.no_grad():  # FlopCounterMode does not work under inference_mode
        one = x[:1]
        enc_flops = count_flops(lambda: inverter.encode(one))
        lat1 = inverter.encode(one)
        gen_flops = count_flops(lambda: inverter.decode(lat1))
    with torch.inference_mode():
        with autocast(device, precision):
            latents = inverter.encode(x)
            t_enc = _median_time(lambda: inverter.encode(x), device, iters)
            t_gen = _median_time(lambda: inverter.decode(latents), device, iters)
    peak = peak or matmul_peak(device)
    per_enc, per_gen = t_enc / batch_size, t_gen / batch_size
    total = per_enc + per_gen
    return BenchResult(
        device=str(device), precision=precision, size=inverter.decoder.size, batch_size=batch_size,
        peak_gflops=peak / 1e9, encoder_gflop_per_image=enc_flops / 1e9, generator_gflop_per_image=gen_flops / 1e9,
        encoder_s_per_image=per_enc, generator_s_per_image=per_gen, end_to_end_s_per_image=total,
        images_per_s=1 / total, efficiency=(enc_flops + gen_flops) / total / peak,
    )
