"""The process: device choice (the one place that decides it), precision, process-wide switches
(`configure_process`: TF32, cuDNN autotuning, malloc, warning filters) and torchrun's process group."""
from __future__ import annotations


class DeviceError(ValueError):
    """A device that cannot be used. Fields: `spec` (what was asked), `reason`, `fallback` (a device that
    works here, or None); the CLI words the hint (`--device cpu`)."""

    def __init__(self, spec: str, reason: str, fallback: str | None = None):
        self.spec, self.reason, self.fallback = spec, reason, fallback
        super().__init__(f"device {spec}: {reason}" + (f"; use {fallback}" if fallback else ""))


# what torch.device accepts (its device types, with an optional index); checked without importing torch
DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu", "hip", "xla", "meta", "hpu", "mtia", "ipu", "vulkan", "ve", "fpga", "maia",
                "lazy", "mkldnn", "opengl", "opencl", "ideep", "privateuseone")


def check_device_spec(spec: str) -> None:
    """DeviceError when `spec` is not even a device name (a typo: 'tpu', 'cuda:x'), found without torch;
    whether the device is there is resolve_device's question."""
    import re

    text = (spec or "auto").strip().lower()
    match = re.fullmatch(r"([a-z]+)(?::(\d+))?", text)
    if text != "auto" and (match is None or match.group(1) not in DEVICE_TYPES):
        raise DeviceError(text, "unknown device: use auto, cpu, cuda or cuda:N")


def resolve_device(spec: str = "auto"):
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' -> torch.device (clear error if unavailable)."""
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise DeviceError(spec, "unknown device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(spec, f"CUDA is not available here (torch {torch.__version__})", "cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(spec, f"only {torch.cuda.device_count()} CUDA device(s) visible")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError(spec, "Apple MPS is not available here", "cpu")
    return device


# -- precision --------------------------------------------------------------------------------
PRECISIONS = ("fp32", "fp16", "bf16")


def autocast(device, precision: str = "fp32"):
    """Context manager running the model at `precision` (autocast for fp16/bf16; fp32 as is)."""
    import contextlib

    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def native_bf16_cpu() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX, as oneDNN reports it)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def precision_note(device, precision: str) -> str | None:
    """A line to show when `precision` will not be faster here (bf16 on a CPU without native bf16). It names the
    setting as `precision` (no command-line words here): the CLI words it as its flag."""
    if precision == "bf16" and device.type == "cpu" and not native_bf16_cpu():
        return ("this CPU has no native bf16 (AVX512-BF16 or AMX): `precision` bf16 is emulated and slower than fp32 here; "
                "fp32 is the faster choice")
    return None


def store_for(model, device, precision: str):
    """Weights stored once at the precision they run at, where autocast would otherwise convert them on
    every call: bf16 on CPU keeps the encoder's weights in bf16 (the generator's stay fp32: its
    convolution weights are made per image from the styles). fp32 leaves the model as it is."""
    import torch

    if precision == "bf16" and device.type == "cpu" and getattr(model, "encoder", None) is not None:
        model.encoder.to(torch.bfloat16)
    return model


def reuse_freed_memory() -> bool:
    """Keep freed memory in the process for the next allocation (glibc on Linux; True when set).

    glibc serves every allocation above 32 MB with its own mmap and unmaps it on free, so each of a
    1024 px render's 128 MB feature maps arrives as fresh pages that the kernel faults in and zeroes:
    about 400,000 page faults and 0.8 CPU-seconds per render on a 2-core machine (measured: render
    1.48 -> 1.29 s). `mallopt(M_MMAP_MAX, 0)` serves them from the heap instead, and a 1 GiB trim
    threshold keeps freed blocks there for reuse. The price is memory that stays resident (3.4 instead
    of 2.8 GB inverting and rendering at 1024 px). Set E4E_MALLOC=system to keep glibc's defaults (also
    kept when MALLOC_MMAP_MAX_ is already set)."""
    import ctypes
    import os
    import sys

    if not sys.platform.startswith("linux") or os.environ.get("E4E_MALLOC") == "system" or "MALLOC_MMAP_MAX_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc (and musl, where it is a no-op that returns 0)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


def configure_process(device, *, training: bool = False) -> None:
    """Every process-wide switch, set in this one place (the CLI commands call it once their device is known).

    Inference: cuDNN autotuning and TF32-free fp32 on CUDA (results stay exact). Training (`e4e train`):
    cuDNN autotuning with TF32 convolutions and matmuls (PyTorch's default for cuDNN), and the warning DDP
    gives when R1's double backward hands it the (1, 512) last-layer gradient with other strides (harmless)
    silenced. On CPU, either way, freed feature maps are reused instead of page-faulted in again
    (`reuse_freed_memory`)."""
    import torch

    if device.type == "cpu":
        reuse_freed_memory()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = training
        torch.backends.cudnn.allow_tf32 = training
    if training:
        import warnings

        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")


# -- torchrun ---------------------------------------------------------------------------------
class Dist:
    """Rank and world of this process; a world of 1 unless started by torchrun (RANK/WORLD_SIZE set)."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0, initialised: bool = False):
        self.rank, self.world, self.local_rank, self.initialised = rank, world, local_rank, initialised

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.initialised:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, obj) -> list:
        """Every rank's `obj` on every rank (a list of one outside torchrun)."""
        if not self.initialised:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.initialised:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.initialised = False


def setup_distributed(device_spec: str = "auto") -> tuple[Dist, object]:
    """(Dist, device). Under torchrun: joins the process group (NCCL on CUDA, else gloo) and picks
    cuda:LOCAL_RANK for --device auto/cuda; otherwise a world of one and resolve_device(device_spec)."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), resolve_device(device_spec)
    import torch
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local_rank, True), device
