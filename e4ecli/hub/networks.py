"""The weight files training and the metrics need, read safely: StyleGAN2 generator, IR-SE50 encoder init,
ArcFace (identity loss for faces), MoCo v2 (similarity loss for other domains) and the BiSeNet face parser
(face masks of video stitching).

Each is named by a file path or a zoo name (`stylegan2_ffhq_1024`, `ir_se50`, `moco_v2_resnet50`, `face_parsing`);
a missing file raises WeightsNotFound (a CheckpointError) saying which file and what is wrong with it; the
caller adds how to name another (cli/ words it with its option).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from e4ecli.hub.assign import on_meta
from e4ecli.hub.checkpoints import CheckpointError, load_checkpoint, safe_load, strip_prefix
from e4ecli.models.bisenet import BiSeNet
from e4ecli.models.identity import ArcFaceIRSE50, moco_resnet50
from e4ecli.models.stylegan2 import Generator, channel_plan

MOCO_PREFIX = "module.encoder_q."


class WeightsNotFound(CheckpointError):
    """A weights file named by path or zoo name that cannot be had. Fields: `spec` (as given), `what` (e.g.
    "the ArcFace network of the identity loss"), `reason` (no such file, not a regular file, or the zoo's
    text: unknown name, offline, bad download). str() says all that; the caller adds how to set another."""

    def __init__(self, spec: str, what: str, reason: str, from_zoo: bool = False):
        self.spec, self.what, self.reason, self.from_zoo = spec, what, reason, from_zoo
        super().__init__(f"{what}: {reason}" if from_zoo else f"{spec}: {reason} ({what}).")


def resolve_weights(spec: str, what: str) -> Path:
    """A file path as is; otherwise a zoo name, fetched into the zoo cache when missing (WeightsNotFound if
    neither). what: e.g. "the ArcFace network of the identity loss"."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise WeightsNotFound(spec, what, "not a regular file")
    if "/" in spec or "\\" in spec or path.suffix in (".pt", ".pth", ".pkl", ".ckpt"):
        raise WeightsNotFound(spec, what, "no such file")
    from e4ecli.hub import zoo

    try:
        return Path(zoo.resolve(spec))
    except zoo.ZooError as e:  # unknown name, offline, bad download: its text says what to do
        raise WeightsNotFound(spec, what, str(e), from_zoo=True) from None


def _state_dict(obj, path: Path, key: str | None = None) -> dict:
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            found = ", ".join(sorted(map(str, obj))[:6]) if isinstance(obj, dict) else type(obj).__name__
            raise CheckpointError(f"{path}: expected a '{key}' entry (found {found})")
        obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    return obj


class NotAGenerator(CheckpointError):
    """A generator was wanted and the file is an e4e/pSp checkpoint (`kind`: its encoder type)."""

    def __init__(self, path: str | Path, kind: str):
        self.path, self.kind = Path(path), kind
        super().__init__(f"{path}: an e4e/pSp checkpoint ({kind}), not a generator")


def load_stylegan(path: str | Path) -> tuple[Generator, torch.Tensor, str]:
    """A generator file -> (generator (eval), latent average (512,), where the average came from).

    Any generator `load_checkpoint` reads: rosinality {'g_ema', 'latent_avg'?} (with the project's
    generator config when present) or a StyleGAN2-ADA snapshot (.pkl, read without running its code).
    """
    loaded = load_checkpoint(path)
    if loaded.kind != "generator":
        raise NotAGenerator(path, loaded.kind)
    return loaded.generator, loaded.latent_avg.reshape(-1)[: loaded.generator.style_dim], loaded.latent_avg_source


def generator_file_config(gen: Generator) -> dict | None:
    """The GENERATOR_CONFIG_KEY entry a checkpoint needs for this generator, or None when rosinality's
    code expresses it (channel multiplier 1 or 2, 8 mapping layers, no conv_clamp)."""
    standard = any(gen.channels == channel_plan(gen.size, cm) for cm in (1, 2))
    if standard and gen.n_mlp == 8 and gen.conv_clamp is None:
        return None
    return {"size": gen.size, "style_dim": gen.style_dim, "n_mlp": gen.n_mlp, "channels": dict(gen.channels),
            "conv_clamp": gen.conv_clamp, "source": "e4e train"}


def init_from_ir_se50(encoder: nn.Module, path: str | Path) -> int:
    """Copy the IR-SE50 backbone (input_layer.*, body.*) of a face-recognition file into an encoder.

    As the original's `load_state_dict(..., strict=False)`: the file's head is ignored and the
    encoder's own layers (styles, lateral convs) keep their initialisation. Returns the number
    of tensors copied.
    """
    path = Path(path)
    sd = safe_load(path)
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    sd = _state_dict(sd, path)
    own = encoder.state_dict()
    wanted = [k for k in own if k.startswith(("input_layer.", "body."))]
    missing = [k for k in wanted if k not in sd]
    if missing:
        raise CheckpointError(f"{path}: not an IR-SE50 backbone for this encoder: {len(missing)} backbone tensors missing "
                              f"(e.g. {', '.join(missing[:3])})")
    bad = [f"{k}: file {tuple(sd[k].shape)} vs encoder {tuple(own[k].shape)}" for k in wanted if tuple(sd[k].shape) != tuple(own[k].shape)]
    if bad:
        raise CheckpointError(f"{path}: backbone shapes do not fit the encoder ({'; '.join(bad[:3])})")
    encoder.load_state_dict({k: sd[k] for k in wanted}, strict=False)
    return len(wanted)


def load_arcface(path: str | Path) -> ArcFaceIRSE50:
    """The published IR-SE50 ArcFace file (a bare state dict) -> network in eval mode, frozen."""
    path = Path(path)
    sd = _state_dict(safe_load(path), path)
    net = on_meta(ArcFaceIRSE50, sd, f"{path} [ArcFace IR-SE50]")
    return _frozen(net)


def load_moco(path: str | Path) -> nn.Module:
    """The published MoCo v2 file ({'state_dict': {'module.encoder_q.*'}}) -> ResNet-50 trunk, eval, frozen.

    Keeps `module.encoder_q.*` without its projection head `fc.*`, as the original MocoLoss does.
    """
    path = Path(path)
    sd = _state_dict(safe_load(path), path, "state_dict")
    trunk = {k: v for k, v in strip_prefix(sd, MOCO_PREFIX).items() if not k.startswith("fc.")}
    if not trunk:
        raise CheckpointError(f"{path}: no '{MOCO_PREFIX}*' weights: not a MoCo v2 checkpoint")
    net = on_meta(moco_resnet50, trunk, f"{path} [MoCo v2 ResNet-50]")
    return _frozen(net)


def load_face_parser(path: str | Path) -> BiSeNet:
    """face-parsing.PyTorch's `79999_iter.pth` (a bare BiSeNet state dict, 19 classes) -> network, eval, frozen.

    Strict: every key and shape of the published layout. A file saved without the batch norms'
    `num_batches_tracked` counters (not used in eval) gets zeros for them."""
    path = Path(path)
    sd = dict(_state_dict(safe_load(path), path))
    for key in [k for k in sd if k.endswith(".running_var")]:
        sd.setdefault(key[: -len("running_var")] + "num_batches_tracked", torch.zeros((), dtype=torch.long))
    net = on_meta(BiSeNet, sd, f"{path} [BiSeNet face parser]")
    return _frozen(net)


def _frozen(net: nn.Module) -> nn.Module:
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()
