"""Inputs for benchmarks/cuda_check.sh: `python benchmarks/cuda_check.py OUT WORK`.

Writes WORK/ck1024.pt (an e4e checkpoint in the published FFHQ 1024 layout, seeded random weights: timing and the
code paths do not depend on the values), WORK/g64.pt (a 64 px rosinality generator for `e4e train`), WORK/photos
(64 photos from scikit-image at 512 px), WORK/train (8 at 72 px), and OUT/agreement.json: the largest difference
between CPU and CUDA (fp32, TF32 off) of the encoder's codes and of the generator's images for the same inputs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data

from e4ecli.hub.checkpoints import load_checkpoint
from e4ecli.models.encoders import Encoder4Editing
from e4ecli.models.stylegan2 import Generator


def write_checkpoints(work: Path) -> None:
    torch.manual_seed(0)
    enc, gen = Encoder4Editing(1024), Generator(1024)
    state = {**{f"encoder.{k}": v for k, v in enc.state_dict().items()}, **{f"decoder.{k}": v for k, v in gen.state_dict().items()}}
    opts = {"encoder_type": "Encoder4Editing", "stylegan_size": 1024, "dataset_type": "ffhq_encode", "start_from_latent_avg": True}
    torch.save({"state_dict": state, "opts": opts, "latent_avg": gen.mean_latent(4096)[0].detach()}, work / "ck1024.pt")
    g64 = Generator(64)
    torch.save({"g_ema": g64.state_dict(), "latent_avg": g64.mean_latent(1024)[0].detach()}, work / "g64.pt")


def agreement(checkpoint: Path) -> dict:
    inverter = load_checkpoint(checkpoint).inverter().eval()
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(1)) * 2 - 1
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    with torch.no_grad():
        codes_cpu = inverter.encode(x)
        images_cpu = inverter.decode(codes_cpu)
        inverter.cuda()
        codes_gpu = inverter.encode(x.cuda()).cpu()
        images_gpu = inverter.decode(codes_cpu.cuda()).cpu()
    return {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(),
            "codes_max_abs_diff_cpu_vs_cuda_fp32": float((codes_cpu - codes_gpu).abs().max()),
            "codes_max_abs": float(codes_cpu.abs().max()),
            "images_max_abs_diff_cpu_vs_cuda_fp32": float((images_cpu - images_gpu).abs().max())}


def write_photos(work: Path) -> None:
    sources = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.immunohistochemistry(), data.retina()]
    (work / "photos").mkdir(exist_ok=True)
    (work / "train").mkdir(exist_ok=True)
    for i in range(64):
        shifted = np.ascontiguousarray(np.roll(sources[i % len(sources)], 7 * i, axis=1))
        Image.fromarray(shifted).resize((512, 512)).save(work / "photos" / f"p{i:02d}.png")
    for i in range(8):
        Image.fromarray(sources[i % len(sources)]).resize((72, 72)).save(work / "train" / f"t{i}.png")


def main() -> None:
    out, work = Path(sys.argv[1]), Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    write_checkpoints(work)
    report = agreement(work / "ck1024.pt")
    print(json.dumps(report, indent=1))
    (out / "agreement.json").write_text(json.dumps(report, indent=1))
    write_photos(work)


if __name__ == "__main__":
    main()
