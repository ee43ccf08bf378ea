"""What `e4e ui`'s fast preview saves: a generator rendered in full and downscaled (what `e4e edit --size`
does) against the same generator stopped at the preview's resolution (`Generator.synthesis(max_size=)`).

Run by hand (not part of the tests); the generator has random weights (the cost does not depend on them):

    python benchmarks/ui_preview.py                       # 1024 px generator, previews at 256, 1 thread
    python benchmarks/ui_preview.py --size 256 --preview 64 --threads 2

Prints the median seconds per image of each path and the ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="generator resolution (default 1024)")
    parser.add_argument("--preview", type=int, default=256, help="preview width (default 256)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per path (median; default 3)")
    args = parser.parse_args()

    import torch

    from e4ecli.files.images import area_resize
    from e4ecli.models.stylegan2 import Generator

    torch.set_num_threads(args.threads)
    gen = Generator(args.size).eval()
    w = torch.randn(1, gen.n_latent, 512)

    def full():
        return area_resize(gen.synthesis(w), args.preview)

    def fast():
        return gen.synthesis(w, max_size=args.preview)

    times = {}
    with torch.inference_mode():
        for name, fn in (("full + downscale", full), ("stopped early", fast)):
            fn()  # warm-up
            runs = []
            for _ in range(args.runs):
                start = time.perf_counter()
                out = fn()
                runs.append(time.perf_counter() - start)
            times[name] = statistics.median(runs)
            print(f"{name:>17}: {times[name]:.3f} s per image -> {tuple(out.shape[-2:])}")
    print(f"fast preview: x{times['full + downscale'] / times['stopped early']:.1f} ({args.size} px generator, {args.preview} px preview, "
          f"{args.threads} thread(s))")


if __name__ == "__main__":
    main()
