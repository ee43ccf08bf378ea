"""Cost of StyleCLIP's relevance matrix (`e4e directions styleclip`) per channel, on this machine.

A row of the matrix is 2 x N renders (the channel at mean -/+ alpha std on N sampled codes) and as many CLIP
ViT-B/32 image embeddings. This times one row at N = --samples with a seeded generator of the given size
(rosinality's channel plan, multiplier 2) and seeded CLIP weights (random init: the same arithmetic as
OpenAI's), then extrapolates to StyleCLIP's N = 100 and to every conv channel of the generator.

    OMP_NUM_THREADS=1 python benchmarks/relevance_cost.py --size 256 --samples 2
    python benchmarks/relevance_cost.py --size 1024 --samples 2 --device cuda
"""
from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=4)
    args = ap.parse_args()

    from e4ecli.edits import stylespace as ss
    from e4ecli.hub.clip import Clip, build_model
    from e4ecli.models.stylegan2 import Generator
    from open_clip.tokenizer import SimpleTokenizer

    dev = torch.device(args.device)
    torch.manual_seed(0)
    gen = Generator(args.size).eval().to(dev)
    model, tok = build_model()
    clip = Clip(model.to(dev), tok, SimpleTokenizer().encode, 512, "seeded", dev)
    stats = ss.style_stats(gen, samples=512)
    styles = ss.sample_styles(gen, args.samples, 0)
    target = ss.all_channels(gen)[0]
    ss.channel_rows(gen, [s[:1] for s in styles], stats, [target], clip.embed_images, batch_size=args.batch_size)  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    ss.channel_rows(gen, styles, stats, [target], clip.embed_images, batch_size=args.batch_size)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    row = time.perf_counter() - t
    per_sample = row / args.samples
    channels = sum(ss.conv_layout(gen))
    print(f"{args.size} px on {args.device} ({torch.get_num_threads()} thread(s)): one channel x {args.samples} samples "
          f"= {row:.2f} s ({per_sample:.2f} s per sample: 2 renders + 2 CLIP embeddings)")
    print(f"  StyleCLIP's 100 samples: {100 * per_sample:.1f} s per channel; all {channels} conv channels: "
          f"{100 * per_sample * channels / 3600:.1f} h")


if __name__ == "__main__":
    main()
