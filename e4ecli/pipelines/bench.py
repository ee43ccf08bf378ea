"""Speed measurements: the machine's peak, encoder / generator time per image, efficiency.

Peak = the best of a large matmul and a large NHWC 3x3 convolution, at the run's precision (the
convolutions reach more than a matmul on oneDNN CPUs). Efficiency = (model FLOPs per image) /
(seconds per image) / peak, taken in each round from that round's peak and times (a shared VM's
speed drifts by ±30% within a minute), and the median over rounds reported. FLOPs are counted by
torch's FlopCounterMode on one forward pass (convolutions and matmuls, 2 per MAC).
"""
from __future__ import annotations

import copy
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from e4ecli.runtime import autocast, store_for


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(fn, device: torch.device) -> float:
    """Seconds of one call (the rounds repeat it; the warm-up ran before them)."""
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def _best_rate(fn, flops: float, device: torch.device, iters: int) -> float:
    with torch.inference_mode():
        fn()
        _sync(device)
        best = float("inf")
        for _ in range(iters):
            t = time.perf_counter()
            fn()
            _sync(device)
            best = min(best, time.perf_counter() - t)
    return flops / best


def matmul_peak(device: torch.device, n: int | None = None, iters: int = 5, precision: str = "fp32") -> float:
    """Measured matmul throughput in FLOP/s (best of `iters`), at `precision` (autocast)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    with autocast(device, precision):
        return _best_rate(lambda: a @ b, 2 * n**3, device, iters)


def conv_peak(device: torch.device, channels: int = 256, size: int = 128, batch: int | None = None, iters: int = 5,
              precision: str = "fp32") -> float:
    """Measured FLOP/s of a 3x3 convolution on NHWC (channels_last) feature maps (best of `iters`)."""
    batch = batch or (16 if device.type == "cuda" else 1)
    x = torch.randn(batch, channels, size, size, device=device).contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, channels, 3, 3, device=device).contiguous(memory_format=torch.channels_last)
    flops = 2 * batch * size * size * channels * channels * 9
    with autocast(device, precision):
        return _best_rate(lambda: torch.nn.functional.conv2d(x, w, padding=1), flops, device, iters)


def machine_peak(device: torch.device, precision: str = "fp32", iters: int = 5) -> tuple[float, float, float]:
    """(peak, matmul, convolution) FLOP/s: peak is the better of the two."""
    mm, conv = matmul_peak(device, iters=iters, precision=precision), conv_peak(device, iters=iters, precision=precision)
    return max(mm, conv), mm, conv


def _count_onednn_convolutions() -> None:
    """Teach FlopCounterMode oneDNN's prepacked convolution, which the encoder's CPU inference path runs
    (e4ecli.models.encoders._Conv): it counts like any convolution of the same shapes."""
    from torch.utils import flop_counter

    op = getattr(torch.ops.mkldnn, "_convolution_pointwise", None)
    if op is None or op in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(op)
    def _formula(x_shape, w_shape, *_, out_shape=None, **__) -> int:
        return flop_counter.conv_flop_count(x_shape, w_shape, out_shape, transposed=False)


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    _count_onednn_convolutions()
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@dataclass
class BenchResult:
    device: str
    precision: str
    size: int
    batch_size: int
    rounds: int
    peak_gflops: float  # median over rounds of the better of matmul_gflops and conv_gflops
    matmul_gflops: float
    conv_gflops: float
    encoder_gflop_per_image: float
    generator_gflop_per_image: float
    encoder_s_per_image: float  # medians over rounds
    generator_s_per_image: float
    end_to_end_s_per_image: float
    images_per_s: float
    efficiency: float  # median over rounds of (FLOPs per image / time per image / that round's peak)
    first_encode_s: float  # the first encoder pass after building (oneDNN / cuDNN set-up included)
    per_round: list = field(default_factory=list)
    onnxruntime: dict | None = None  # same graphs in ONNX Runtime, timed in the same rounds

    def as_dict(self) -> dict:
        return asdict(self)


class _Timed:
    """One precision's model, inputs and FLOP counts, ready to be timed in rounds."""

    def __init__(self, inverter, device: torch.device, precision: str, x: torch.Tensor):
        self.model, self.device, self.precision, self.x = inverter, device, precision, x
        store_for(inverter, device, precision)
        with torch.inference_mode(), autocast(device, precision):
            t = time.perf_counter()
            self.latents = inverter.encode(x)
            _sync(device)
            self.first_encode_s = time.perf_counter() - t
            inverter.decode(self.latents)  # warm-up
            _sync(device)
        with torch.no_grad():  # FlopCounterMode does not work under inference_mode
            one = x[:1].to(next(inverter.encoder.parameters()).dtype)
            self.enc_flops = count_flops(lambda: inverter.encode(one))
            self.gen_flops = count_flops(lambda: inverter.decode(self.latents[:1].float()))
        self.rounds: list[dict] = []

    def round(self, ort=None) -> None:
        device, precision, n = self.device, self.precision, self.x.shape[0]
        peak, mm, conv = machine_peak(device, precision, iters=2)
        with torch.inference_mode(), autocast(device, precision):
            t_enc = _seconds(lambda: self.model.encode(self.x), device) / n
            t_gen = _seconds(lambda: self.model.decode(self.latents), device) / n
        r = {"matmul_gflops": mm / 1e9, "conv_gflops": conv / 1e9, "peak_gflops": peak / 1e9,
             "encoder_s_per_image": t_enc, "generator_s_per_image": t_gen,
             "efficiency": (self.enc_flops + self.gen_flops) / (t_enc + t_gen) / peak}
        if ort is not None:
            r["onnxruntime_encoder_s_per_image"] = _seconds(ort[0], device) / n
            r["onnxruntime_generator_s_per_image"] = _seconds(ort[1], device) / n
        self.rounds.append(r)

    def result(self) -> BenchResult:
        def med(key: str) -> float:
            return statistics.median(r[key] for r in self.rounds)

        per_enc, per_gen = med("encoder_s_per_image"), med("generator_s_per_image")
        total = per_enc + per_gen
        ort = "onnxruntime_encoder_s_per_image" in self.rounds[0]
        return BenchResult(
            device=str(self.device), precision=self.precision, size=self.model.decoder.size, batch_size=self.x.shape[0],
            rounds=len(self.rounds), peak_gflops=med("peak_gflops"), matmul_gflops=med("matmul_gflops"), conv_gflops=med("conv_gflops"),
            encoder_gflop_per_image=self.enc_flops / 1e9, generator_gflop_per_image=self.gen_flops / 1e9,
            encoder_s_per_image=per_enc, generator_s_per_image=per_gen, end_to_end_s_per_image=total,
            images_per_s=1 / total, efficiency=med("efficiency"), first_encode_s=self.first_encode_s, per_round=self.rounds,
            onnxruntime={"encoder_s_per_image": med("onnxruntime_encoder_s_per_image"),
                         "generator_s_per_image": med("onnxruntime_generator_s_per_image")} if ort else None,
        )


def bench(inverter, device: torch.device, *, input_size: tuple[int, int] = (256, 256), batch_size: int = 1,
          precision: str | tuple[str, ...] = "fp32", iters: int = 3, onnxruntime_dir=None):
    """Time `inverter.encode` on (B, 3, H, W) inputs and `inverter.decode` on its latents, side by side
    with the machine's peak: each of `iters` rounds measures the peak, the encoder and the generator
    (and the same graphs in ONNX Runtime when `onnxruntime_dir` is given, exported there), so a
    machine whose speed drifts (a shared VM) drifts in numerator and denominator alike.

    `precision` may be several (e.g. ("fp32", "bf16")): every round then times each in turn, on its
    own copy of the model where the precision changes the stored weights (bf16 on CPU), and a list of
    results comes back, one per precision. ONNX Runtime runs in the rounds of fp32."""
    several = not isinstance(precision, str)
    precisions = tuple(precision) if several else (precision,)
    inverter = inverter.to(device).eval()
    x = torch.randn(batch_size, 3, *input_size, device=device).clamp_(-1, 1)
    timed = []
    for p in precisions:
        own = len(precisions) > 1 and p != "fp32" and device.type == "cpu"  # store_for changes the weights: not the shared model
        timed.append(_Timed(copy.deepcopy(inverter) if own else inverter, device, p, x))
    ort = None
    if onnxruntime_dir is not None:
        from e4ecli.pipelines.export import onnxruntime_runners

        fp32 = next(t for t in timed if t.precision == "fp32")
        ort = onnxruntime_runners(fp32.model, x, fp32.latents.float(), onnxruntime_dir)
    for _ in range(iters):
        for t in timed:
            t.round(ort if t.precision == "fp32" else None)
    results = [t.result() for t in timed]
    return results if several else results[0]
