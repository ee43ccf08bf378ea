"""ONNX export of the inverter: the encoder (images -> W+) and the generator's synthesis (W+ -> images).

Graphs (opset OPSET, batch dimension dynamic, fp32):
  encoder.onnx    input  "image"  (N, 3, H, W) in [-1, 1] (H x W: the checkpoint's input size)
                  output "wplus"  (N, n_styles, 512), the latent average included (what `e4e invert` saves)
  synthesis.onnx  input  "wplus"  (N, n_styles, 512)
                  output "image"  (N, 3, size, size) in ~[-1, 1], the generator's stored noise
The modulated convolutions are exported in their batch form (activations scaled by the styles, one
convolution with the constant weight, outputs demodulated), which ONNX convolutions can express.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

OPSET = 17


class _Encode(nn.Module):
    def __init__(self, inverter):
        super().__init__()
        self.inverter = inverter

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.inverter.encode(image)


class _Synthesis(nn.Module):
    def __init__(self, generator):
        super().__init__()
        self.generator = generator

    def forward(self, wplus: torch.Tensor) -> torch.Tensor:
        return self.generator.synthesis(wplus)


@dataclass
class Exported:
    name: str  # "encoder" | "synthesis"
    path: Path
    input_shape: tuple  # with "N" for the batch
    output_shape: tuple
    max_abs_diff: float | None = None  # onnxruntime vs PyTorch on a test batch (None: not checked)


def export_graph(module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str) -> None:
    """Trace `module(example)` into an ONNX file at `path` (batch axis dynamic), checked by onnx.checker."""
    import onnx

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and constant-folding chatter about shapes that are constant here
        torch.onnx.export(module.eval(), (example,), str(path), input_names=[input_name], output_names=[output_name],
                          dynamic_axes={input_name: {0: "N"}, output_name: {0: "N"}}, opset_version=OPSET, dynamo=False)
    onnx.checker.check_model(str(path))


def onnxruntime_diff(path: Path, module: nn.Module, example: torch.Tensor, threads: int | None = None) -> float:
    """Max |onnxruntime(path)(example) - module(example)|."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ours = run_module(module, example)
    theirs = session.run(None, {session.get_inputs()[0].name: example.numpy()})[0]
    return float(abs(torch.from_numpy(theirs) - ours).max())


def run_module(module: nn.Module, example: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return module.eval()(example)


def export_onnx(ckpt, out_dir: Path, check: bool = True, writer=None) -> list[Exported]:
    """Write encoder.onnx (when the checkpoint has an encoder) and synthesis.onnx into out_dir.

    `writer(path)`: a context manager yielding a temp path that becomes `path` on success (atomic
    writes); `check`: compare onnxruntime with PyTorch on a seeded batch of 2."""
    gen = torch.Generator().manual_seed(0)
    parts: list[tuple[str, nn.Module, torch.Tensor, str, str, tuple]] = []
    g = ckpt.generator
    if ckpt.has_encoder:
        h, w = ckpt.domain.input_size
        x = torch.rand(2, 3, h, w, generator=gen) * 2 - 1
        parts.append(("encoder", _Encode(ckpt.inverter()), x, "image", "wplus", (("N", 3, h, w), ("N", g.n_latent, g.style_dim))))
    wplus = ckpt.latent_avg.reshape(1, -1, g.style_dim).expand(2, g.n_latent, g.style_dim) + 0.5 * torch.randn(2, g.n_latent, g.style_dim, generator=gen)
    parts.append(("synthesis", _Synthesis(g), wplus.contiguous(), "wplus", "image", (("N", g.n_latent, g.style_dim), ("N", 3, g.size, g.size))))
    done = []
    for name, module, example, input_name, output_name, (in_shape, out_shape) in parts:
        path = Path(out_dir) / f"{name}.onnx"
        if writer is None:
            export_graph(module, example, path, input_name, output_name)
        else:
            with writer(path) as tmp:
                export_graph(module, example, tmp, input_name, output_name)
        diff = onnxruntime_diff(path, module, example) if check else None
        done.append(Exported(name, path, in_shape, out_shape, diff))
    return done


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def onnxruntime_runners(inverter, images: torch.Tensor, wplus: torch.Tensor, work_dir: Path):
    """(encode, synthesise): callables that run the same encoder and synthesis graphs, exported to
    `work_dir`, in ONNX Runtime (CPU, PyTorch's thread count) on `images` and `wplus`; each has run once.
    ONNX Runtime keeps its defaults except: no spinning threads, no memory arena for batches above one."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    # its threads would otherwise spin after each run and slow the PyTorch timing that follows them
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # ONNX Runtime's default memory arena, except for batches above one: there it grows past 16 GB for 4 images
    # at 1024 px (11 GB without it). At one image the arena makes its generator 2.5x faster.
    options.enable_cpu_mem_arena = images.shape[0] == 1
    runners = []
    for name, module, example, input_name, output_name in (("encoder", _Encode(inverter), images, "image", "wplus"),
                                                           ("synthesis", _Synthesis(inverter.decoder), wplus, "wplus", "image")):
        path = Path(work_dir) / f"{name}.onnx"
        export_graph(module, example[:1].float(), path, input_name, output_name)  # the batch axis is dynamic; one image traces it
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {input_name: example.float().numpy()}
        session.run(None, feed)
        runners.append(lambda session=session, feed=feed: session.run(None, feed))
    return runners[0], runners[1]
