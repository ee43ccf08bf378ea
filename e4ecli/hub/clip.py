"""CLIP ViT-B/32 (OpenAI's weights) through open-clip-torch, for text edits and relevance matrices.

The weights: the zoo entry `clip_vit_b32_openai` (OpenAI's published `ViT-B-32.pt`, sha256 as in its URL) fetched by
the one fetcher, or `--clip-weights FILE`. Read without running code from the file:

  * OpenAI's file is a TorchScript archive (`<name>/data.pkl` + `<name>/data/<k>` storages + `<name>/code/`):
    its `data.pkl` is unpickled with `TorchScriptUnpickler`, which resolves only tensor rebuilding, storage types
    and TorchScript's module records (`__torch__.*`, rebuilt as plain attribute records); the TorchScript code is
    never compiled or run. The parameters are collected under their module paths (OpenAI's state-dict keys).
  * any other file is read with torch.load(weights_only=True): a state dict in the OpenAI/open_clip layout
    (optionally under 'state_dict'), as `torch.save(model.state_dict())` of open_clip's ViT-B-32 writes.

The state dict must match open_clip's `ViT-B-32-quickgelu` exactly (keys and shapes), else CheckpointError
names the file and the first mismatch. open_clip is imported only here, when a text direction needs it.
"""
from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from e4ecli.errors import SettingError
from e4ecli.hub.types import CheckpointError

ZOO_NAME = "clip_vit_b32_openai"
MODEL_NAME = "ViT-B-32-quickgelu"  # OpenAI's ViT-B/32 uses QuickGELU
EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")  # OpenAI's build_model drops these
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


class _Record:
    """A TorchScript module object, as data: its attributes."""

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state


def _record_class(name: str) -> type:
    return type(name, (_Record,), {})


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


_STORAGE_TYPES = {f"{n}Storage": _StorageType(d) for n, d in (
    ("Float", torch.float32), ("Half", torch.float16), ("Double", torch.float64), ("BFloat16", torch.bfloat16), ("Long", torch.int64),
    ("Int", torch.int32), ("Short", torch.int16), ("Char", torch.int8), ("Byte", torch.uint8), ("Bool", torch.bool))}


def _rebuild_tensor(storage, offset, size, stride, *_ignored) -> torch.Tensor:
    t = torch.empty((0,), dtype=storage.dtype)
    t.set_(storage, offset, tuple(size), tuple(stride))
    return t


class TorchScriptUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, where: str):
        super().__init__(file)
        self.archive, self.prefix, self.where = archive, prefix, where
        self.storages: dict[str, Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__"):
            return _record_class(name)
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda data, *_: data
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in _STORAGE_TYPES:
            return _STORAGE_TYPES[name]
        if module == "torch.jit._pickle" and name in ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist"):
            return list
        if module == "torch.jit._pickle" and name == "restore_type_tag":
            return lambda value, _tag: value
        raise pickle.UnpicklingError(f"{self.where}: refused the global {module}.{name} (not part of a TorchScript weights archive)")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"{self.where}: unexpected persistent id {pid!r:.60}")
        storage_type, key, _location, numel = pid[1], str(pid[2]), pid[3], int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"{self.where}: storage {key} of an unknown type")
        if key not in self.storages:
            dtype = storage_type.dtype
            data = self.archive.read(f"{self.prefix}data/{key}")
            itemsize = torch.empty((), dtype=dtype).element_size()
            if len(data) < numel * itemsize:
                raise pickle.UnpicklingError(f"{self.where}: storage {key} is truncated")
            self.storages[key] = torch.UntypedStorage.from_buffer(data[: numel * itemsize], dtype=torch.uint8)
            self.storages[key] = torch.storage.TypedStorage(wrap_storage=self.storages[key], dtype=dtype, _internal=True)
        return self.storages[key]


def _flatten(obj: Any, prefix: str, out: dict[str, torch.Tensor], depth: int = 0) -> None:
    if depth > 64:
        raise CheckpointError("TorchScript archive nested too deeply")
    state = obj._state if isinstance(obj, _Record) else obj
    if not isinstance(state, dict):
        return
    for name, value in state.items():
        if not isinstance(name, str) or name.startswith("_"):
            continue
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, _Record):
            _flatten(value, f"{prefix}{name}.", out, depth + 1)


def read_torchscript_weights(path: Path) -> dict[str, torch.Tensor]:
    """The parameters and buffers of a TorchScript archive, by module path, without running any of its code."""
    where = str(path)
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pickles:
            raise CheckpointError(f"{path}: a zip archive without data.pkl: neither a TorchScript archive nor a torch.save file")
        prefix = pickles[0][: -len("data.pkl")]
        import io

        try:
            obj = TorchScriptUnpickler(io.BytesIO(archive.read(pickles[0])), archive, prefix, where).load()
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
            raise CheckpointError(f"{path}: not a readable TorchScript weights archive ({e})") from None
    out: dict[str, torch.Tensor] = {}
    _flatten(obj, "", out)
    if not out:
        raise CheckpointError(f"{path}: a TorchScript archive without any weights")
    return out


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return any(n.count("/") == 1 and n.endswith("/constants.pkl") for n in names) or any("/code/" in n for n in names)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """CLIP weights from OpenAI's TorchScript file or a torch.save'd state dict, read safely."""
    from e4ecli.hub.checkpoints import safe_load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such CLIP weights file")
    if _is_torchscript(path):
        sd = read_torchscript_weights(path)
    else:
        data = safe_load(path)
        if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
            data = data["state_dict"]
        if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
            raise CheckpointError(f"{path}: expected a CLIP state dict of tensors (OpenAI's ViT-B-32.pt or open_clip's layout)")
        sd = dict(data)
    return {k: v for k, v in sd.items() if k not in EXTRA_KEYS}


@dataclass
class Clip:
    """A loaded CLIP: `encode_text(list of prompts) -> (n, D)`, `embed_images(images in [-1, 1]) -> (n, D)`,
    `token_ids(text) -> BPE ids without start/end`, `dim`, and `identity` (the weights file's content id)."""

    model: Any
    tokenizer: Callable
    encode: Callable[[str], list]
    dim: int
    identity: str
    device: torch.device

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """CLIP text embeddings (n, D). The causal text transformer's end-token output does not depend on the padding
        after it, so the context is cut after the longest prompt's end token (the same numbers, 77/L times faster)."""
        tokens = self.tokenizer(prompts).to(self.device)
        m = self.model
        if getattr(m, "text_pool_type", None) != "argmax" or not isinstance(getattr(m, "attn_mask", None), torch.Tensor):
            return m.encode_text(tokens).float()
        end = tokens.argmax(dim=-1)  # the end token has the largest id
        n = int(end.max()) + 1
        x = m.token_embedding(tokens[:, :n]) + m.positional_embedding[:n]
        x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask[:n, :n]))
        x = x[torch.arange(x.shape[0], device=x.device), end]
        x = m.text_projection(x) if isinstance(m.text_projection, torch.nn.Linear) else x @ m.text_projection
        return x.float()

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        """Generator renders (M, 3, H, W) in [-1, 1] -> CLIP image embeddings (M, D): as CLIP's preprocessing of the
        uint8 images (bicubic resize of the shorter side to 224, centre crop, normalisation)."""
        import torch.nn.functional as F

        x = ((images.float().clamp(-1, 1) + 1) * 127.5)
        if quantize:
            x = x.round()
        x = x / 255.0
        size = self.model.visual.image_size
        side = size[0] if isinstance(size, (tuple, list)) else size
        h, w = x.shape[-2:]
        scale = side / min(h, w)
        nh, nw = max(side, round(h * scale)), max(side, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        top, left = (nh - side) // 2, (nw - side) // 2
        x = x[..., top:top + side, left:left + side]
        mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
        return self.model.encode_image(((x - mean) / std).to(self.device)).float()


def build_model(model_name: str = MODEL_NAME):
    """open_clip's model (random init, eval) and tokenizer for `model_name`."""
    import logging

    try:
        import open_clip
    except ImportError:
        raise CheckpointError("text directions need CLIP from open-clip-torch: pip install 'e4ecli[clip]' (or pip install open-clip-torch)") from None

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip warns that it made a random init: the weights are loaded next
    try:
        model = open_clip.create_model(model_name, pretrained=None)
    finally:
        root.setLevel(level)
    return model.eval(), open_clip.get_tokenizer(model_name)


class ClipUnavailable(CheckpointError, SettingError):
    """The zoo's CLIP weights are not cached and cannot be fetched; the message names the setting that gives a file."""


def load_clip(weights: str | Path | None, device: torch.device | str = "cpu", model_name: str = MODEL_NAME, download: bool = True) -> Clip:
    """CLIP ViT-B/32 from `weights` (a file) or the zoo entry (fetched when missing); CheckpointError on a file of
    another layout, naming it."""
    from e4ecli.files.provenance import content_id

    if weights is None:
        from e4ecli.hub import zoo

        try:
            path = Path(zoo.resolve(ZOO_NAME, download=download))
        except zoo.ZooError as e:
            raise ClipUnavailable("CLIP weights: {reason} (or give {clip_weights} FILE)", settings=True, reason=str(e)) from None
    else:
        path = Path(weights).expanduser()
    sd = read_state_dict(path)
    model, tokenizer = build_model(model_name)
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [k for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        first = (f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}" if unexpected else
                 f"{wrong[0]} is {tuple(sd[wrong[0]].shape)}, expected {tuple(expected[wrong[0]].shape)}")
        raise CheckpointError(f"{path}: not CLIP ViT-B/32 weights in OpenAI's layout ({len(missing)} missing, {len(unexpected)} unexpected, "
                              f"{len(wrong)} mis-shaped keys; {first})")
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    device = torch.device(device)
    model = model.to(device)
    from open_clip.tokenizer import SimpleTokenizer

    bpe = tokenizer if isinstance(tokenizer, SimpleTokenizer) else SimpleTokenizer()
    return Clip(model, tokenizer, bpe.encode, int(model.text_projection.shape[1]), content_id(path), device)
