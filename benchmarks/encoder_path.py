"""The e4e encoder's inference path against its eager path, side by side on one model:
`python benchmarks/encoder_path.py [--rounds 7] [--threads 2] [--batch 1]`.

The published FFHQ architecture (IR-SE50, 1024 px generator: 18 styles) with seeded weights and batch-norm
statistics (timing does not depend on the values). Eager = the module with autograd on (what training runs);
inference = autograd off (every command): batch norms folded, LeakyReLU fused, oneDNN prepacked weights on CPU
(e4ecli.models.encoders). The rounds alternate the two; the first call of each is timed apart (the inference
path builds its folded copy there and prepacks from the second call of a shape). Reports the largest difference
of the codes and the median wall and CPU seconds per image of each path."""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from e4ecli.models.encoders import Encoder4Editing


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    enc = Encoder4Editing(1024).eval()
    for m in enc.modules():  # batch norms that are not the identity, PReLUs that are not ReLUs
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 2), m.weight.data.normal_(1, 0.1), m.bias.data.normal_(0, 0.1)
        if isinstance(m, torch.nn.PReLU):
            m.weight.data.uniform_(0, 0.3)
    enc = enc.to(memory_format=torch.channels_last).requires_grad_(False)
    x = torch.randn(args.batch, 3, 256, 256).contiguous(memory_format=torch.channels_last)

    def eager():
        with torch.enable_grad():
            return enc(x)

    def inference():
        with torch.no_grad():
            return enc(x)

    first = {"eager": timed(eager), "inference": timed(inference)}
    diff = float((eager() - inference()).abs().max())
    times: dict[str, list[tuple[float, float]]] = {"eager": [], "inference": []}
    for _ in range(args.rounds):
        times["eager"].append(timed(eager))
        times["inference"].append(timed(inference))
    print(f"{torch.get_num_threads()} threads, batch {args.batch}, {args.rounds} rounds; max |codes diff| {diff:.2g}")
    print(f"{'path':<10} {'first s':>8} {'wall s/img':>11} {'cpu s/img':>10}")
    med = {}
    for name, rounds in times.items():
        med[name] = [statistics.median(r[i] for r in rounds) / args.batch for i in (0, 1)]
        print(f"{name:<10} {first[name][0]:>8.2f} {med[name][0]:>11.3f} {med[name][1]:>10.3f}")
    print(f"inference / eager: wall {med['inference'][0] / med['eager'][0]:.2f}, cpu {med['inference'][1] / med['eager'][1]:.2f}")


if __name__ == "__main__":
    main()
