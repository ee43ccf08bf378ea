"""Published checkpoint formats in, safely, and models out.

Formats recognised (from the contents, never from the file name):
  * e4e / pSp:   {'state_dict': {'encoder.*', 'decoder.*'}, 'opts': {...}, 'latent_avg'?}
  * generator:   rosinality StyleGAN2 {'g_ema': {...}, 'latent_avg'?} (training files' 'g', 'd',
                 'args' are ignored); the project's own generator layout is the same plus
                 'e4ecli_generator_config': {'size', 'style_dim', 'n_mlp', 'channels', 'conv_clamp', ...}
                 (written by `e4e convert` when rosinality's code cannot express the generator;
                 size/style_dim/n_mlp/channels must agree with the weights, conv_clamp is applied)
  * a PTI-tuned generator (.safetensors: fp16 deltas from a base checkpoint, via e4ecli.hub.tuned)
  * NVIDIA StyleGAN2-ADA snapshot (.pkl, a plain pickle): its G_ema, via e4ecli.hub.ada, which
    never executes the source code such pickles embed

Every file is read with `torch.load(weights_only=True)`: a file that would need arbitrary code
to unpickle is refused with a CheckpointError naming it. Architecture (generator size, channel
plan, mapping depth, encoder type and depth) comes from `opts` and the tensor shapes.

Speed: zip-format files are memory-mapped (`mmap=True`) and the modules are built on the meta
device, then take the file's tensors as their parameters (`load_state_dict(assign=True)`): no
random initialisation that the file would overwrite, no copy of the weights.
"""
from __future__ import annotations

import argparse
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from e4ecli.domains import domain_for
from e4ecli.hub import ada, zoo
from e4ecli.hub.assign import load_strict, on_meta
from e4ecli.hub.fetch import looks_like_html
from e4ecli.hub.file_ids import FILE_IDS, FILE_IDS_KEPT, file_id, remembered  # noqa: F401  (file ids are read without torch)
from e4ecli.hub.types import GENERATOR_CONFIG_KEY, CheckpointError, LoadedCheckpoint
from e4ecli.models.encoders import ENCODERS, ir_blocks, style_count
from e4ecli.models.stylegan2 import Generator

__all__ = ["GENERATOR_CONFIG_KEY", "CheckpointError", "LoadedCheckpoint", "safe_load", "file_id", "load_checkpoint",
           "build_generator", "generator_config", "load_strict", "mean_latent", "strip_prefix"]

LATENT_AVG_SAMPLES = 4096  # rosinality's `truncation_mean`; seeded so repeated runs agree
LATENT_AVG_SEED = 0


def safe_load(path: str | Path) -> Any:
    """torch.load with weights_only=True; argparse.Namespace (old training files' 'args') allowed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if looks_like_html(path):
        raise CheckpointError(f"{path}: a web page (HTML), not a checkpoint: a download that saved Google Drive's quota or "
                              "virus-scan page? Delete it and download the file again (`e4e weights download NAME` tries the mirrors).")
    from e4ecli.hub.picklescan import PickleBomb, check_tensors

    mmap = zipfile.is_zipfile(path)  # the legacy (pre-1.6) format cannot be memory-mapped
    if not mmap:
        with open(path, "rb") as f:
            if f.read(1) != b"\x80":  # every torch.save file is a zip archive or a protocol-2+ pickle
                raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    try:
        _scan(path)  # memo and nesting bombs, before any unpickler runs
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        check_tensors(data, str(path))  # stride-0 views, before anything copies them
        return data
    except PickleBomb as e:
        raise CheckpointError(f"refused to load {e}") from None
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: refused to load: the file needs arbitrary Python code to unpickle, which e4ecli never runs "
            f"({first}). Re-save it as plain tensors (a dict of state dicts) or use a published checkpoint."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None


SCAN_FACT = "bomb scan v1"  # a stricter scanner renames this, and every file is scanned again


def _scan(path: Path) -> None:
    """The pickle bomb scan (memo indices, nesting depth), once per file version: a file that passed is
    not scanned again until it changes."""
    from e4ecli.hub.picklescan import check_file

    def run() -> str:
        check_file(path)  # raises on a bomb: nothing remembered
        return "clean"

    remembered(path, SCAN_FACT, run)


def strip_prefix(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


# -- generators -------------------------------------------------------------------------------
def generator_config(sd: dict, where: str = "generator") -> dict:
    """Infer Generator(**config) from a rosinality g_ema state dict's keys and shapes."""
    try:
        mlp = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
        n_rgbs = len({k.split(".")[1] for k in sd if k.startswith("to_rgbs.")})
        size = 2 ** (n_rgbs + 2)
        channels = {4: int(sd["input.input"].shape[1])}
        for i in range(n_rgbs):
            channels[2 ** (i + 3)] = int(sd[f"convs.{2 * i}.conv.weight"].shape[1])
        style_dim = int(sd["style.1.weight"].shape[0])
    except (KeyError, IndexError, AttributeError) as e:
        raise CheckpointError(f"{where}: not a rosinality StyleGAN2 state dict (missing {e})") from None
    if not mlp:
        raise CheckpointError(f"{where}: no mapping network (style.N.weight) in the generator state dict")
    return {"size": size, "style_dim": style_dim, "n_mlp": len(mlp), "channels": channels}


def build_generator(sd: dict, where: str = "generator", file_config: Any = None) -> Generator:
    """Generator from a g_ema state dict; `file_config`: the file's GENERATOR_CONFIG_KEY entry, if any."""
    config = generator_config(sd, where)
    if file_config is not None:
        config["conv_clamp"] = _check_file_config(file_config, config, where)
    return on_meta(lambda: Generator(**config), sd, where).eval()


def _check_file_config(file_config: Any, inferred: dict, where: str) -> float | None:
    """Validate a GENERATOR_CONFIG_KEY entry against the weights -> conv_clamp (None: off)."""
    if not isinstance(file_config, dict):
        raise CheckpointError(f"{where}: {GENERATOR_CONFIG_KEY} is a {type(file_config).__name__}, expected a dict")
    for key in ("size", "style_dim", "n_mlp", "channels"):
        if key in file_config:
            value = file_config[key]
            if key == "channels" and isinstance(value, dict):
                value = {int(k): int(v) for k, v in value.items()}
            if value != inferred[key]:
                raise CheckpointError(f"{where}: {GENERATOR_CONFIG_KEY}[{key!r}] is {value}, but the weights say {inferred[key]}")
    clamp = file_config.get("conv_clamp")
    if clamp is not None and (isinstance(clamp, bool) or not isinstance(clamp, (int, float)) or clamp <= 0):
        raise CheckpointError(f"{where}: {GENERATOR_CONFIG_KEY}['conv_clamp'] must be a positive number or None, got {clamp!r}")
    return None if clamp is None else float(clamp)


def mean_latent(gen: Generator) -> torch.Tensor:
    """The latent average as the original computes it when a file lacks one (seeded) -> (512,)."""
    return gen.mean_latent(LATENT_AVG_SAMPLES, seed=LATENT_AVG_SEED)[0]


def _as_dict(opts: Any) -> dict:
    if opts is None:
        return {}
    if isinstance(opts, argparse.Namespace):
        return vars(opts)
    if isinstance(opts, dict):
        return dict(opts)
    raise CheckpointError(f"'opts' has unexpected type {type(opts).__name__}")


def _ir_depth(sd: dict, where: str) -> int:
    n_units = len({k.split(".")[1] for k in sd if k.startswith("body.")})
    for depth in (50, 100, 152):
        if sum(len(b) for b in ir_blocks(depth)) == n_units:
            return depth
    raise CheckpointError(f"{where}: the encoder body has {n_units} units, which matches no IR-SE 50/100/152 backbone")


def load_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Load an e4e/pSp checkpoint, a bare rosinality generator or a StyleGAN2-ADA .pkl (CPU, eval mode).

    A file in the weights cache under a zoo entry's name must hold what that name promises (kind,
    resolution, domain); otherwise CheckpointError says so.
    """
    try:
        loaded = _load_any(Path(path))
    except CheckpointError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, RuntimeError, OverflowError) as e:
        # a file that unpickles safely but holds the wrong kinds of values where the format has a field
        raise CheckpointError(f"{path}: unexpected checkpoint content ({type(e).__name__}: {str(e)[:200]})") from None
    problem = zoo.content_problem(loaded.path, "encoder" if loaded.has_encoder else "generator", loaded.generator.size,
                                  loaded.domain.short if loaded.opts.get("dataset_type") else None)
    if problem:
        raise CheckpointError(problem)
    return loaded


def _load_any(path: Path) -> LoadedCheckpoint:
    from e4ecli.hub import tuned

    if path.is_file() and tuned.is_tuned_file(path):
        return tuned.load_tuned(path, load_checkpoint, file_id)
    if ada.is_plain_pickle(path):
        return ada.load_ada(path)
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(ckpt).__name__}")
    for name in ("state_dict", "g_ema"):
        if name in ckpt and not isinstance(ckpt[name], dict):
            raise CheckpointError(f"{path}: '{name}' is a {type(ckpt[name]).__name__}, not a dict of tensors")
    if ckpt.get("latent_avg") is not None and not isinstance(ckpt["latent_avg"], torch.Tensor):
        raise CheckpointError(f"{path}: 'latent_avg' is a {type(ckpt['latent_avg']).__name__}, not a tensor")
    if "state_dict" in ckpt and any(str(k).startswith("encoder.") for k in ckpt["state_dict"]):
        return _load_psp(path, ckpt)
    if "g_ema" in ckpt:
        gen = build_generator(ckpt["g_ema"], f"{path} [g_ema]", ckpt.get(GENERATOR_CONFIG_KEY))
        if "latent_avg" in ckpt and ckpt["latent_avg"] is not None:
            avg, source = ckpt["latent_avg"].float().reshape(-1)[: gen.style_dim], "file"
        else:
            avg, source = mean_latent(gen), f"mapping network mean of {LATENT_AVG_SAMPLES} seeded samples"
        return LoadedCheckpoint(path, "generator", gen, avg, latent_avg_source=source)
    keys = ", ".join(sorted(map(str, ckpt))[:6])
    raise CheckpointError(f"{path}: not an e4e/pSp checkpoint ('state_dict' with encoder.*/decoder.*) "
                          f"nor a StyleGAN2 generator ('g_ema'); top-level keys: {keys}")


def _load_psp(path: Path, ckpt: dict) -> LoadedCheckpoint:
    try:
        opts = _as_dict(ckpt.get("opts"))
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    sd = ckpt["state_dict"]
    enc_sd, dec_sd = strip_prefix(sd, "encoder."), strip_prefix(sd, "decoder.")
    if not dec_sd:
        raise CheckpointError(f"{path}: the state dict has no decoder.* (generator) weights")
    gen = build_generator(dec_sd, f"{path} [decoder]", ckpt.get(GENERATOR_CONFIG_KEY))
    encoder_type = opts.get("encoder_type") or ("SingleStyleCodeEncoder" if "linear.weight" in enc_sd else "Encoder4Editing")
    if not isinstance(encoder_type, str) or encoder_type not in ENCODERS:
        raise CheckpointError(f"{path}: unsupported encoder_type {encoder_type!r} (supported: {', '.join(ENCODERS)})")
    try:
        size = int(opts.get("stylegan_size") or gen.size)
    except (TypeError, ValueError, OverflowError):
        raise CheckpointError(f"{path}: opts.stylegan_size is {str(opts.get('stylegan_size'))[:40]!r}, not a number") from None
    if size != gen.size:
        raise CheckpointError(f"{path}: opts.stylegan_size is {size} but the decoder weights are for a {gen.size} px generator")
    depth = _ir_depth(enc_sd, f"{path} [encoder]")
    encoder = on_meta(lambda: ENCODERS[encoder_type](gen.size, depth), enc_sd, f"{path} [encoder {encoder_type}]")
    if encoder.style_count != gen.n_latent:
        raise CheckpointError(f"{path}: encoder predicts {encoder.style_count} styles, generator needs {gen.n_latent}")

    n = style_count(gen.size)
    avg = ckpt.get("latent_avg")
    source = "file"
    if avg is None:
        avg, source = mean_latent(gen), f"mapping network mean of {LATENT_AVG_SAMPLES} seeded samples"
    avg = avg.float()
    if avg.ndim == 1 or avg.shape[0] == 1:
        avg = avg.reshape(1, -1).repeat(n, 1)
    if tuple(avg.shape) != (n, gen.style_dim):
        raise CheckpointError(f"{path}: latent_avg has shape {tuple(avg.shape)}, expected ({n}, {gen.style_dim}) or ({gen.style_dim},)")
    return LoadedCheckpoint(path, encoder_type, gen, avg, encoder.eval(), opts, domain_for(opts.get("dataset_type"), opts.get("input_size")), source)
