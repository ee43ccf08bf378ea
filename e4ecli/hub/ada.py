"""NVIDIA StyleGAN2-ADA generator pickles (`.pkl`), read without running any of their code.

A stylegan2-ada-pytorch snapshot is a pickle of `{'G', 'D', 'G_ema', 'augment_pipe',
'training_set_kwargs'}`. Every network in it is stored as a call
`torch_utils.persistence._reconstruct_persistent_obj(meta)` whose `meta` carries the Python source
of the defining module (`module_src`, which ordinary unpickling *executes*) and the module's recorded
`state` (its `__dict__`: `_parameters`, `_buffers`, `_modules`, `_init_kwargs`, ...).

`AdaUnpickler` resolves only the globals such a file needs, each to a replacement written here:

  * `_reconstruct_persistent_obj(meta)` -> `PersistentRecord(class_name, state)`; `module_src` is
    dropped unread, never compiled or executed;
  * `dnnlib.util.EasyDict` -> `dict`; `collections.OrderedDict` -> itself;
  * `torch.storage._load_from_bytes(b)` -> `torch.load(b, weights_only=True)` (must give a storage);
  * `torch._utils._rebuild_tensor_v2` / `_rebuild_parameter` -> plain tensors (backward hooks dropped);
  * `numpy(._)core.multiarray.scalar(dtype, bytes)` -> a numeric numpy scalar; `numpy.dtype`.

Any other global is refused with an `AdaPickleError` naming the file and the global.

`G_ema` is then converted into the project's `Generator` (rosinality state-dict keys):

  ADA                                          Generator
  mapping.fc{i}.weight/.bias (gains folded)    style.{i+1}.weight/.bias (lr_mul 0.01)
  mapping.w_avg                                latent average
  synthesis.b4.const                           input.input
  b{r}.conv{0,1}.affine                        modulation (weights folded to the 1/sqrt(fan_in) scale)
  b{r}.conv{0,1}.weight                        conv.weight[None] * sqrt(in*k*k) (so demodulation
                                               sees exactly ADA's weights)
  b{r}.conv{0,1}.bias / .noise_strength        activate.bias / noise.weight
  b{r}.conv{0,1}.noise_const                   noises.noise_k (the fixed noise, noise_mode 'const')
  b{r}.torgb.{affine,weight,bias}              to_rgb(s).conv.modulation / .conv.weight / .bias
  resample_filter (normalised 4x4)             blur / upsample kernels (x 4 = up**2 gain)
  conv_clamp (fp16-trained layers)             Generator(conv_clamp=...), applied in fp32

The equivalences: ADA's `normalize_2nd_moment` is `PixelNorm` (x * rsqrt(mean(x^2) + 1e-8));
`bias_act(lrelu)` is `fused_leaky_relu`; the upsampling conv (transposed conv, then the 4x4 filter
with padding 1 and gain 4) and the skip upsampler (pad (2, 1), gain 4) are the project's
`ModulatedConv2d(upsample=True)` and `Upsample`; W+ index use per layer is identical.
"""
from __future__ import annotations

import io
import math
import pickle
import pickletools
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from e4ecli.hub.assign import on_meta
from e4ecli.hub.types import GENERATOR_CONFIG_KEY, CheckpointError, LoadedCheckpoint
from e4ecli.models.stylegan2 import Generator, channel_plan

ROSINALITY_LR_MLP = 0.01
UP_GAIN = 4.0  # 2x upsampling: the filter is scaled by up**2
# a legacy (non-zip) torch.save file starts with a pickle of this magic number
_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C


class AdaPickleError(CheckpointError):
    """A .pkl that is refused or cannot be converted; the message names the file and the reason."""


@dataclass
class PersistentRecord:
    """What `_reconstruct_persistent_obj(meta)` would have rebuilt, as data: the class name and its `__dict__`."""

    class_name: str
    state: dict = field(repr=False)

    def _table(self, name: str) -> dict:
        table = self.state.get(name) if isinstance(self.state, dict) else None
        return table if isinstance(table, dict) else {}

    def module(self, name: str) -> "PersistentRecord | None":
        mod = self._table("_modules").get(name)
        return mod if isinstance(mod, PersistentRecord) else None

    def tensor(self, name: str) -> torch.Tensor | None:
        for table in ("_parameters", "_buffers"):
            t = self._table(table).get(name)
            if isinstance(t, torch.Tensor):
                return t
        return None

    def attr(self, name: str, default: Any = None) -> Any:
        return self.state.get(name, default) if isinstance(self.state, dict) else default

    def number(self, name: str, default: Any = None) -> float:
        """A numeric attribute (int, float, numpy or 0-d tensor); ValueError naming it otherwise."""
        value = self.attr(name, default)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        elif isinstance(value, np.ndarray) and value.size == 1:
            value = value.item()
        if not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(float(value)):
            raise ValueError(f"{self.class_name}.{name} is {str(value)[:40]!r}, not a number")
        return value


# -- the restricted unpickler -----------------------------------------------------------------
def _persistent_obj(meta: Any) -> PersistentRecord:
    """Replacement for torch_utils.persistence._reconstruct_persistent_obj: never touches module_src."""
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise pickle.UnpicklingError("a persistent object without the recorded class state of a StyleGAN2-ADA network")
    return PersistentRecord(str(meta.get("class_name", "?")), meta["state"])


def _load_from_bytes(data: Any):
    """Replacement for torch.storage._load_from_bytes: the bytes are read with weights_only=True."""
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("a tensor storage that is not stored as bytes")
    from e4ecli.hub.picklescan import check_bytes

    check_bytes(bytes(data), "embedded tensor bytes")
    storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(f"embedded tensor bytes hold a {type(storage).__name__}, not a storage")
    return storage


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_ignored: Any) -> torch.Tensor:
    """Replacement for torch._utils._rebuild_tensor_v2 (requires_grad, hooks and metadata dropped)."""
    if not isinstance(storage, torch.TypedStorage):
        raise pickle.UnpicklingError("a tensor rebuilt from something that is not a storage")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    numel = 1
    for s in size:
        numel *= s
    if numel > storage.size():  # a stride-0 view of 2**30 elements over a few bytes would expand when copied
        raise pickle.UnpicklingError(f"a tensor of shape {size} over a storage of {storage.size()} elements (a stride-0 or overlapping view)")
    return torch._utils._rebuild_tensor(storage, int(offset), size, stride)


def _rebuild_parameter(data: Any, *_ignored: Any) -> torch.Tensor:
    """Replacement for torch._utils._rebuild_parameter: the plain tensor (no hooks)."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("a parameter rebuilt from something that is not a tensor")
    return data


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    """Replacement for numpy's multiarray.scalar: numeric dtypes from raw bytes only."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"a numpy scalar of dtype {dtype!r} (only numeric scalars are read)")
    return np.frombuffer(bytes(data), dtype=dtype, count=1)[0]


_ALLOWED: dict[tuple[str, str], Callable] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_obj,
    ("dnnlib.util", "EasyDict"): dict,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): np.dtype,
}


class AdaUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only the globals of a StyleGAN2-ADA snapshot (see module doc)."""

    def __init__(self, file, where: str):
        super().__init__(file)
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise AdaPickleError(
                f"{self.where}: refused to load: the pickle references the global {module}.{name}, which is not part of a "
                f"StyleGAN2-ADA network pickle; e4ecli never runs code from a pickle (if the file is a genuine stylegan2-ada-pytorch "
                f"snapshot, report this global so it can be reviewed and allowed)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise AdaPickleError(f"{self.where}: refused to load: the pickle uses persistent ids ({str(pid)[:60]}), which StyleGAN2-ADA pickles do not")


def is_plain_pickle(path: str | Path) -> bool:
    """True for a pickle that is neither a torch zip checkpoint nor a legacy torch.save file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if f.read(1) != b"\x80" or zipfile.is_zipfile(f):
                return False
            f.seek(0)
            for op, arg, _ in pickletools.genops(f):  # reads only up to the first value
                if op.name not in ("PROTO", "FRAME"):
                    return not (op.name == "LONG1" and arg == _LEGACY_TORCH_MAGIC)
    except (OSError, ValueError):
        return False
    return False


def read_pickle(path: str | Path) -> Any:
    """Unpickle a StyleGAN2-ADA snapshot with AdaUnpickler -> its top-level dict (networks as PersistentRecord)."""
    path = Path(path)
    if not path.is_file():
        raise AdaPickleError(f"{path}: no such file")
    from e4ecli.hub.picklescan import PickleBomb, check_file

    try:
        check_file(path)  # memo and nesting bombs, before the unpickler runs
        with open(path, "rb") as f:
            return AdaUnpickler(f, str(path)).load()
    except PickleBomb as e:
        raise AdaPickleError(f"refused to load {e}") from None
    except AdaPickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, RuntimeError, OSError,
            MemoryError, RecursionError) as e:
        raise AdaPickleError(f"{path}: not a readable StyleGAN2-ADA pickle ({type(e).__name__}: {e})") from None


# -- G_ema -> Generator ---------------------------------------------------------------------------
@dataclass
class ConvertedGenerator:
    """G_ema as data for `Generator(**config)`: rosinality-key state dict + latent average (style_dim,)."""

    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]  # size, style_dim, n_mlp, channels, conv_clamp
    latent_avg: torch.Tensor

    def build(self) -> Generator:
        return on_meta(lambda: Generator(**self.config), self.state_dict, "StyleGAN2-ADA G_ema").eval()

    @property
    def fits_rosinality(self) -> bool:
        """Loadable by rosinality's own Generator(size, 512, 8, channel_multiplier) (conv_clamp aside)."""
        c = self.config
        return c["n_mlp"] == 8 and c["style_dim"] == 512 and any(c["channels"] == channel_plan(c["size"], m) for m in (1, 2))

    def checkpoint(self) -> dict[str, Any]:
        """The `e4e convert` file: {'g_ema', 'latent_avg'} (+ GENERATOR_CONFIG_KEY when rosinality's code cannot express it)."""
        out: dict[str, Any] = {"g_ema": self.state_dict, "latent_avg": self.latent_avg}
        if not self.fits_rosinality or self.config["conv_clamp"] is not None:
            out[GENERATOR_CONFIG_KEY] = {**self.config, "channels": dict(self.config["channels"]), "source": "stylegan2-ada G_ema"}
        return out


class _Converter:
    def __init__(self, where: str):
        self.where = where

    def fail(self, why: str) -> AdaPickleError:
        return AdaPickleError(f"{self.where}: {why}")

    def child(self, rec: PersistentRecord, name: str) -> PersistentRecord:
        mod = rec.module(name)
        if mod is None:
            raise self.fail(f"G_ema has no {name!r} sub-network where a StyleGAN2-ADA generator has one ({rec.class_name})")
        return mod

    def tensor(self, rec: PersistentRecord, name: str, what: str) -> torch.Tensor:
        t = rec.tensor(name)
        if t is None:
            raise self.fail(f"{what}.{name} is missing")
        return t.detach().to(torch.float32).clone()

    def linear(self, rec: PersistentRecord, what: str, scale: float, lr_mul: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """ADA FullyConnectedLayer -> EqualLinear weight/bias for the given `scale` (= lr_mul/sqrt(in)) and lr_mul."""
        w, b = self.tensor(rec, "weight", what), self.tensor(rec, "bias", what)
        wg, bg = float(rec.number("weight_gain", 1.0)), float(rec.number("bias_gain", 1.0))
        return _scaled(w, wg / scale), _scaled(b, bg / lr_mul)

    def clamp(self, rec: PersistentRecord, what: str) -> float | None:
        c = rec.attr("conv_clamp")
        return None if c is None else float(rec.number("conv_clamp"))

    def filter(self, rec: PersistentRecord, what: str) -> torch.Tensor:
        f = self.tensor(rec, "resample_filter", what)
        if tuple(f.shape) != (4, 4):
            raise self.fail(f"{what}.resample_filter has shape {tuple(f.shape)}; only 4x4 filters (the default [1,3,3,1]) are supported")
        return f * UP_GAIN


def _scaled(t: torch.Tensor, factor: float) -> torch.Tensor:
    return t if factor == 1.0 else (t.double() * factor).float()


def convert_g_ema(data: Any, where: str) -> ConvertedGenerator:
    """Top-level snapshot dict (from read_pickle) -> ConvertedGenerator for its G_ema; AdaPickleError naming the
    file and the field for records of the wrong type (a string num_layers, a state replaced by BUILD, ...)."""
    cv = _Converter(where)
    try:
        return _convert_g_ema(cv, data)
    except AdaPickleError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, RuntimeError, OverflowError, ZeroDivisionError) as e:
        raise cv.fail(f"unexpected content in the G_ema records: {e}") from None


def _convert_g_ema(cv: "_Converter", data: Any) -> ConvertedGenerator:
    if not isinstance(data, dict) or not isinstance(data.get("G_ema"), PersistentRecord):
        keys = ", ".join(map(str, list(data)[:6])) if isinstance(data, dict) else type(data).__name__
        raise cv.fail(f"not a StyleGAN2-ADA snapshot: no G_ema network (found {keys})")
    g = data["G_ema"]
    c_dim, z_dim, w_dim = int(g.number("c_dim", 0) or 0), int(g.number("z_dim", 0)), int(g.number("w_dim", 0))
    if c_dim > 0:
        raise cv.fail(f"conditional generator (c_dim={c_dim}): class-conditional StyleGAN2-ADA pickles are not supported yet; "
                      "use an unconditional one (trained without --cond)")
    if int(g.number("img_channels", 3)) != 3:
        raise cv.fail(f"generator makes {g.attr('img_channels')}-channel images; only RGB (3) generators are supported")
    if z_dim != w_dim:
        raise cv.fail(f"z_dim {z_dim} differs from w_dim {w_dim}; only z_dim == w_dim generators are supported")
    mapping, synthesis = cv.child(g, "mapping"), cv.child(g, "synthesis")
    if synthesis.module("b4") is None:
        raise cv.fail(f"G_ema's synthesis network ({synthesis.class_name}) has no b4 block: not a StyleGAN2(-ADA) generator "
                      "(StyleGAN3 generators are not supported)")
    size = int(synthesis.number("img_resolution", g.number("img_resolution", 0)))
    if size < 4 or size & (size - 1):
        raise cv.fail(f"unexpected img_resolution {size}")

    sd: dict[str, torch.Tensor] = {}
    n_mlp = _convert_mapping(cv, mapping, w_dim, sd)
    channels, clamps = _convert_synthesis(cv, synthesis, size, w_dim, sd)
    if len(set(clamps)) > 1:
        raise cv.fail(f"layers use different conv_clamp values {sorted(set(map(str, clamps)))}; only one value is supported")
    w_avg = mapping.tensor("w_avg")
    if w_avg is None or w_avg.numel() != w_dim:
        raise cv.fail("mapping.w_avg (the latent average) is missing")
    config = {"size": size, "style_dim": w_dim, "n_mlp": n_mlp, "channels": channels, "conv_clamp": clamps[0] if clamps else None}
    conv = ConvertedGenerator(sd, config, w_avg.detach().float().reshape(-1).clone())
    with torch.device("meta"):
        own = Generator(**config).state_dict()
    bad = sorted(set(own) ^ set(sd)) + [k for k in own if k in sd and own[k].shape != sd[k].shape]
    if bad:
        raise cv.fail(f"G_ema does not map onto the StyleGAN2 generator (e.g. {', '.join(bad[:3])})")
    return conv


def _convert_mapping(cv: _Converter, mapping: PersistentRecord, w_dim: int, sd: dict) -> int:
    n = int(mapping.number("num_layers", 0))
    if mapping.module("embed") is not None:
        raise cv.fail("the mapping network has a label embedding (conditional generator); not supported yet")
    if n < 1:
        raise cv.fail("the mapping network has no layers")
    scale = ROSINALITY_LR_MLP / math.sqrt(w_dim)
    for i in range(n):
        fc = cv.child(mapping, f"fc{i}")
        if fc.attr("activation", "lrelu") != "lrelu":
            raise cv.fail(f"mapping.fc{i} uses activation {fc.attr('activation')!r}; only lrelu is supported")
        sd[f"style.{i + 1}.weight"], sd[f"style.{i + 1}.bias"] = cv.linear(fc, f"mapping.fc{i}", scale, ROSINALITY_LR_MLP)
    return n


def _convert_synthesis(cv: _Converter, syn: PersistentRecord, size: int, w_dim: int, sd: dict) -> tuple[dict[int, int], list]:
    """Fill sd with the synthesis weights -> (channels per resolution, conv_clamp of every layer)."""
    channels: dict[int, int] = {}
    clamps: list = []
    noise_idx = 0
    affine_scale = 1 / math.sqrt(w_dim)
    for log_res in range(2, int(math.log2(size)) + 1):
        res = 2**log_res
        name = f"synthesis.b{res}"
        block = cv.child(syn, f"b{res}")
        if block.attr("architecture", "skip") != "skip":
            raise cv.fail(f"{name} uses the {block.attr('architecture')!r} architecture; only 'skip' generators (the default) are supported")
        if res == 4:
            const = cv.tensor(block, "const", name)
            channels[4] = int(const.shape[0])
            sd["input.input"] = const[None]
            layers = [("conv1", "conv1")]
            rgb = "to_rgb1"
        else:
            j = 2 * (log_res - 3)
            layers = [("conv0", f"convs.{j}"), ("conv1", f"convs.{j + 1}")]
            rgb = f"to_rgbs.{log_res - 3}"
            sd[f"{rgb}.upsample.kernel"] = cv.filter(block, name)
        for ada_name, key in layers:
            layer = cv.child(block, ada_name)
            what = f"{name}.{ada_name}"
            if layer.attr("activation", "lrelu") != "lrelu":
                raise cv.fail(f"{what} uses activation {layer.attr('activation')!r}; only lrelu is supported")
            weight = cv.tensor(layer, "weight", what)  # (out, in, k, k)
            fan_in = weight[0].numel()
            sd[f"{key}.conv.weight"] = _scaled(weight, math.sqrt(fan_in))[None]
            sd[f"{key}.conv.modulation.weight"], sd[f"{key}.conv.modulation.bias"] = cv.linear(cv.child(layer, "affine"), f"{what}.affine", affine_scale)
            sd[f"{key}.activate.bias"] = cv.tensor(layer, "bias", what)
            if int(layer.number("up", 1)) == 2:
                sd[f"{key}.conv.blur.kernel"] = cv.filter(layer, what)
            if layer.tensor("noise_strength") is not None:
                sd[f"{key}.noise.weight"] = cv.tensor(layer, "noise_strength", what).reshape(1)
                sd[f"noises.noise_{noise_idx}"] = cv.tensor(layer, "noise_const", what).reshape(1, 1, res, res)
            else:  # use_noise=False: no noise at all
                sd[f"{key}.noise.weight"] = torch.zeros(1)
                sd[f"noises.noise_{noise_idx}"] = torch.zeros(1, 1, res, res)
            noise_idx += 1
            clamps.append(cv.clamp(layer, what))
            channels[res] = int(weight.shape[0])
        torgb = cv.child(block, "torgb")
        what = f"{name}.torgb"
        w = cv.tensor(torgb, "weight", what)  # (3, in, 1, 1)
        in_ch = int(w.shape[1])
        wg = float(torgb.number("weight_gain", 1 / math.sqrt(in_ch)))
        # ADA: styles = affine(w) * weight_gain; rosinality: weight * (1/sqrt(in)) * modulation(w)
        sd[f"{rgb}.conv.weight"] = _scaled(w, wg * math.sqrt(in_ch))[None]
        sd[f"{rgb}.conv.modulation.weight"], sd[f"{rgb}.conv.modulation.bias"] = cv.linear(cv.child(torgb, "affine"), f"{what}.affine", affine_scale)
        sd[f"{rgb}.bias"] = cv.tensor(torgb, "bias", what).reshape(1, -1, 1, 1)
        clamps.append(cv.clamp(torgb, what))
    return channels, clamps


# -- entry points -----------------------------------------------------------------------------------
def convert_pickle(path: str | Path) -> ConvertedGenerator:
    """A StyleGAN2-ADA .pkl -> its G_ema as a ConvertedGenerator (nothing from the file is executed)."""
    return convert_g_ema(read_pickle(path), str(path))


def load_ada(path: str | Path) -> LoadedCheckpoint:
    """load_checkpoint for a StyleGAN2-ADA .pkl: kind 'generator', latent_avg = G_ema.mapping.w_avg (512,)."""
    conv = convert_pickle(path)
    return LoadedCheckpoint(Path(path), "generator", conv.build(), conv.latent_avg)
