"""How fast a typo is answered: every command with a bad option, strength, sweep, direction name or path,
timed as a user runs it (a fresh `python -m e4ecli` process), next to `e4e --help`.

Run by hand (not part of the tests; tests/test_typo_latency.py checks the same cases do not import torch):

    python benchmarks/typo_latency.py            # median of 3 runs per case
    python benchmarks/typo_latency.py --runs 5
    python benchmarks/typo_latency.py --only invert: --only edit:   # some cases only

Each case must exit 2 (1 for `weights download`: its documented code for a name it cannot fetch) and create
nothing in the folder it runs in. The goal is <= 0.5 s per case.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (label, arguments, expected exit code). Paths are relative to an empty working folder holding `a.npy` (a
# latent), `photos/` (one file), `ck.pt` (a placeholder file) and `clip.mp4` (a real 2-frame clip): the typo, not
# a missing input, is what fails.
CASES: list[tuple[str, list[str], int]] = [
    ("--help", ["--help"], 0),
    ("invert: bad --stage", ["invert", "photos", "-o", "out", "--stage", "abc"], 2),
    ("invert: --batch-size 0", ["invert", "photos", "-o", "out", "--batch-size", "0"], 2),
    ("invert: bad --precision", ["invert", "photos", "-o", "out", "--precision", "fp8"], 2),
    ("invert: bad --detector", ["invert", "photos", "-o", "out", "--align", "--detector", "nope"], 2),
    ("invert: bad --refine", ["invert", "photos", "-o", "out", "--refine", "nope"], 2),
    ("invert: missing input", ["invert", "no_such_photos", "-o", "out"], 2),
    ("invert: missing --checkpoint", ["invert", "photos", "-o", "out", "-c", "no_such.pt"], 2),
    ("invert: pti, missing --checkpoint", ["invert", "photos", "-o", "out", "--refine", "pti", "-c", "no_such.pt"], 2),
    ("invert: unknown option", ["invert", "photos", "-o", "out", "--bacth-size", "2"], 2),
    ("render: bad --size", ["render", "a.npy", "-o", "out", "--size", "abc"], 2),
    ("render: bad --device", ["render", "a.npy", "-o", "out", "--device", "tpu"], 2),
    ("render: missing --checkpoint", ["render", "a.npy", "-o", "out", "--checkpoint", "no_such.pt"], 2),
    ("edit: bad strength", ["edit", "a.npy", "-o", "out", "-d", "age", "-s", "abc"], 2),
    ("edit: bad sweep", ["edit", "a.npy", "-o", "out", "-d", "age", "-s", "-3:3:x"], 2),
    ("edit: unknown direction", ["edit", "a.npy", "-o", "out", "-d", "agee", "-s", "3"], 2),
    ("edit: bad ganspace spec", ["edit", "a.npy", "-o", "out", "-d", "ganspace:x:1:2", "-s", "3"], 2),
    ("edit: bad sefa layers", ["edit", "a.npy", "-o", "out", "-d", "sefa:0:2-x", "-s", "3"], 2),
    ("edit: bad --beta", ["edit", "a.npy", "-o", "out", "-d", "text:a smile", "--beta", "2", "--relevance", "a.npy"], 2),
    ("edit: missing --checkpoint", ["edit", "a.npy", "-o", "out", "-d", "age", "-s", "3", "-c", "no_such.pt"], 2),
    ("edit: sweep, missing --checkpoint", ["edit", "a.npy", "-o", "out", "-d", "age", "-s", "-3:3:3", "--save-latents", "-c", "no_such.pt"], 2),
    ("edit: missing latents", ["edit", "no_such", "-o", "out", "-d", "age", "-s", "3"], 2),
    ("edit: bad --attribute", ["edit", "a.npy", "-o", "out", "-d", "styleflow:age", "-s", "40", "--attribute", "age"], 2),
    ("video: bad --easing", ["video", "a.npy", "-o", "v.mp4", "--easing", "bogus"], 2),
    ("video: bad strength", ["video", "a.npy", "-o", "v.mp4", "-d", "age", "-s", "abc"], 2),
    ("video: unknown direction", ["video", "a.npy", "-o", "v.mp4", "-d", "agee"], 2),
    ("video: bad suffix", ["video", "a.npy", "-o", "v.txt"], 2),
    ("video: missing --checkpoint", ["video", "a.npy", "-o", "v.mp4", "-c", "no_such.pt"], 2),
    ("video: missing latent", ["video", "no_such.npy", "-o", "v.mp4"], 2),
    ("edit-video: bad ramp strength", ["edit-video", "clip.mp4", "-o", "e.mp4", "-d", "age", "-s", "0:abc"], 2),
    ("edit-video: unknown direction", ["edit-video", "clip.mp4", "-o", "e.mp4", "-d", "agee", "-s", "3"], 2),
    ("edit-video: missing clip", ["edit-video", "no_such.mp4", "-o", "e.mp4", "-d", "age", "-s", "3"], 2),
    ("edit-video: missing --checkpoint", ["edit-video", "clip.mp4", "-o", "e.mp4", "-d", "age", "-s", "3", "-c", "no_such.pt"], 2),
    ("ui: remote --host", ["ui", "--host", "0.0.0.0"], 2),
    ("ui: missing --checkpoint", ["ui", "a.npy", "-c", "no_such.pt"], 2),
    ("align: bad --detector", ["align", "photos", "-o", "out", "--detector", "nope"], 2),
    ("align: missing input", ["align", "no_such_photos", "-o", "out"], 2),
    ("eval: bad --metrics", ["eval", "photos", "--metrics", "nope"], 2),
    ("eval: bad strength", ["eval", "photos", "-d", "age", "-s", "abc"], 2),
    ("eval: unknown direction", ["eval", "photos", "--metrics", "lec", "-d", "agee", "-s", "3"], 2),
    ("eval: bad --sweep", ["eval", "photos", "--sweep", "nope", "-d", "age", "-s", "3"], 2),
    ("eval: a clip with --metrics", ["eval", "clip.mp4", "-o", "r.json", "--metrics", "lpips"], 2),
    ("eval: a clip, missing --source", ["eval", "clip.mp4", "-o", "r.json", "--source", "no_such.mp4"], 2),
    ("export: bad --format", ["export", "-o", "out", "--format", "nope"], 2),
    ("convert: missing source", ["convert", "no_such.pkl", "-o", "g.pt"], 2),
    ("bench: bad --precision", ["bench", "--precision", "fp8"], 2),
    ("train: bad --batch-size", ["train", "--data", "photos", "--exp-dir", "run", "--batch-size", "0"], 2),
    ("train: bad --device", ["train", "--data", "photos", "--exp-dir", "run", "--device", "tpu"], 2),
    ("train: missing --data", ["train", "--data", "no_such", "--exp-dir", "run"], 2),
    ("directions sefa: bad --layers", ["directions", "sefa", "-c", "ck.pt", "--layers", "x", "-o", "s.npz"], 2),
    ("directions styleclip: bad -o", ["directions", "styleclip", "-c", "ck.pt", "-o", "r.txt"], 2),
    ("directions styleclip: missing -c", ["directions", "styleclip", "-c", "no_such.pt", "-o", "r.npz"], 2),
    ("directions fit: missing labels", ["directions", "fit", "--latents", "photos", "--labels", "no.csv", "-o", "d.npy"], 2),
    ("weights download: unknown name", ["weights", "download", "nope"], 1),
]

# cases answered after torch is imported, and why (tests/test_typo_latency.py holds every other case to no torch)
NEEDS_TORCH: dict[str, str] = {}  # none at present


def prepare(folder: Path) -> set[Path]:
    """The inputs every case may name; returns what the folder holds before the case runs."""
    import numpy as np

    np.save(folder / "a.npy", np.zeros((18, 512), np.float32))
    (folder / "photos").mkdir()
    (folder / "photos" / "p.png").write_bytes(b"not looked at")
    (folder / "ck.pt").write_bytes(b"not looked at")
    (folder / "clip.mp4").write_bytes(_clip())
    return set(folder.rglob("*"))


_CLIP: list[bytes] = []


def _clip() -> bytes:
    """A real, tiny H.264 clip (2 frames of 32 x 32 grey), made once with imageio-ffmpeg's ffmpeg."""
    if not _CLIP:
        import imageio_ffmpeg

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "clip.mp4"
            subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "color=c=gray:s=32x32:d=0.2:r=10",
                            "-pix_fmt", "yuv420p", str(path)], check=True, capture_output=True)
            _CLIP.append(path.read_bytes())
    return _CLIP[0]


def time_case(args: list[str], expected: int, runs: int) -> tuple[float, float, str]:
    """Median wall time and CPU time (user + system: what the process itself costs, less sensitive to a
    machine others are loading) of `python -m e4ecli ARGS` in a fresh folder; a problem ('' if none)."""
    import resource

    times, cpus, problem = [], [], ""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            before = prepare(folder)
            used = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "e4ecli", *args], cwd=folder, env=env, capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            now = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime)
            created = sorted(str(p.relative_to(folder)) for p in set(folder.rglob("*")) - before)
            if res.returncode != expected:
                problem = f"exit {res.returncode}, expected {expected}: {(res.stdout + res.stderr).strip()[-200:]}"
            elif created:
                problem = f"created {', '.join(created)}"
    return statistics.median(times), statistics.median(cpus), problem


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per case (the median is shown)")
    parser.add_argument("--goal", type=float, default=0.5, help="seconds a typo may take")
    parser.add_argument("--only", action="append", default=[], help="only the cases whose label contains this (repeatable; "
                                                                    "--help is always timed)")
    args = parser.parse_args()
    slow = bad = 0
    cases = [c for c in CASES if c[0] == "--help" or not args.only or any(o in c[0] for o in args.only)]
    print(f"{'case':<36} {'wall s':>7} {'cpu s':>6}  note")
    for label, argv, expected in cases:
        seconds, cpu, problem = time_case(argv, expected, args.runs)
        over = seconds > args.goal and label != "--help"
        slow += over
        bad += bool(problem)
        note = "over the goal; " * over + (f"torch: {NEEDS_TORCH[label]}; " if label in NEEDS_TORCH else "") + problem
        print(f"{label:<36} {seconds:>7.2f} {cpu:>6.2f}  {note}".rstrip("; "))
    print(f"{len(cases)} cases, {slow} over {args.goal:g} s, {bad} with a wrong exit code or a created file")
    return 1 if slow or bad else 0


if __name__ == "__main__":
    sys.exit(main())
