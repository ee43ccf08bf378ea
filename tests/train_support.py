"""Shared set-up of the `e4e train` tests: the conformance kit, real photos, small generators,
a torch hub cache holding a (seeded, untrained) AlexNet for LPIPS, and the DDP worker."""
from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from conftest import KIT  # noqa: E402  (../shared/conformance)


def kit():
    """The conformance kit's `weights` module (skips the test when the kit is absent)."""
    from conftest import kit_or_skip

    kit_or_skip()
    import weights

    return weights


def real_photos() -> list[tuple[str, np.ndarray]]:
    """Five real photos from the kit: two portraits, a face crop, a photo crop and a car."""
    kit()
    e4e = np.load(KIT / "cases" / "e4e_256.npz")
    cars = np.load(KIT / "cases" / "e4e_cars_512.npz")
    return [
        ("face", np.asarray(Image.open(KIT / "photos" / "face.jpg").convert("RGB"))),
        ("rotated", np.asarray(Image.open(KIT / "photos" / "rotated_face.png").convert("RGB"))),
        ("aligned", e4e["input_0"]),
        ("crop", e4e["input_1"]),
        ("car", cars["input_0"]),
    ]


def write_photos(folder: Path, names: list[str] | None = None, size: int = 80, formats=(".png", ".jpg")) -> list[Path]:
    """Write (a subset of) the real photos, downscaled, as image files under `folder` (some in a subfolder)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (name, arr) in enumerate(real_photos()):
        if names is not None and name not in names:
            continue
        sub = folder / "sub" if i % 2 else folder
        sub.mkdir(exist_ok=True)
        path = sub / f"{name}{formats[i % len(formats)]}"
        Image.fromarray(arr).resize((size, size), Image.BILINEAR).save(path)
        out.append(path)
    return out


def generator_64(path: Path, seed: int = 7) -> Path:
    """The kit's 64 px generator (the decoder part of manifest Encoder4Editing_64) as a rosinality file."""
    w = kit()
    torch.save({"g_ema": w.make_state_dict(w.load_manifest("Encoder4Editing_64"), "decoder", seed)}, path)
    return path


def tiny_generator(path: Path, size: int = 8, channels: int = 16, seed: int = 0) -> Path:
    """A narrow seeded StyleGAN2 generator with a latent_avg, for the longer tests (4 styles at 8 px)."""
    from e4ecli.models.stylegan2 import Generator

    torch.manual_seed(seed)
    g = Generator(size, channels={2**i: channels for i in range(2, int(np.log2(size)) + 1)}, n_mlp=2)
    torch.save({"g_ema": g.state_dict(), "latent_avg": g.mean_latent(256, seed=1)[0]}, path)
    return path


def arcface_file(path: Path) -> Path:
    """The ArcFace IR-SE50 file in its published layout (kit seed 61); it also serves as IR-SE50 encoder init."""
    kit().write_network("arcface_ir_se50", "model", 61, path)
    return path


def moco_file(path: Path) -> Path:
    kit().write_network("moco_v2_resnet50", "state_dict", 62, path, key="state_dict")
    return path


def alexnet_cache(monkeypatch, torch_home: Path) -> Path:
    """Point $TORCH_HOME at `torch_home` and put a seeded, untrained AlexNet where torchvision caches its
    ImageNet download, so LPIPS runs its real loading path offline."""
    import torchvision

    from e4ecli.training.losses import lpips_backbone_file

    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    path, _ = lpips_backbone_file("alex")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digests(state: dict) -> dict[str, str]:
    return {k: hashlib.sha256(v.detach().cpu().contiguous().numpy().tobytes()).hexdigest() for k, v in state.items()}


def ddp_worker(rank: int, world: int, port: int, opts: dict, out_dir: str) -> None:
    """One process of a gloo DDP run started like torchrun would: environment variables, then the trainer.

    Writes (test output, outside the experiment folder) out_dir/rank<r>.json: digests of this rank's
    encoder and discriminator weights and the steps it ran.
    """
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from e4ecli.runtime import setup_distributed
    from e4ecli.training import loop

    dist, device = setup_distributed("cpu")
    try:
        plan = loop.prepare(opts, set())
        dist.barrier()
        trainer = loop.Trainer(plan, dist, device)
        events = list(trainer.run())
        steps = [e.step for e in events if isinstance(e, loop.StepDone)]
        report = {"steps": steps, "encoder": digests(trainer.c.encoder.state_dict()),
                  "discriminator": digests(trainer.c.discriminator.state_dict()) if trainer.c.discriminator is not None else {},
                  "wrote_log": trainer.log is not None}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(report))
    finally:
        dist.close()
