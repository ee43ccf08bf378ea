"""Seconds per frame of each `e4e edit-video` stage, and the peak memory, on a clip made here (the kit's face
moving over a background, with a tone): `python benchmarks/video_stages.py --frames 6 [--pti] [--device cuda]`.

Uses the conformance kit's 256 px e4e (`e4e_256` case, seeded weights: timing does not depend on the values),
the dlib detector and an age direction; the stages are pipelines.video_edit's own timings (track+align, invert,
PTI epoch, edit+render, encode), divided by the frame count. peak_rss_mb is the process's maximum resident set
(ru_maxrss, the seeded weights' set-up included); pipeline_peak_rss_mb the peak during edit_video alone (VmHWM
reset through /proc/self/clear_refs on Linux; the checkpoint's weights are paged in there, so it includes the
model): run it with --frames 30 and --frames 120 to see that it does not grow with the clip.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT.parent / "shared" / "conformance"


def clip_frames(n: int, width: int, height: int, face: int):
    from PIL import Image

    photo = Image.open(KIT / "photos" / "face.jpg").convert("RGB").resize((face, face), Image.Resampling.LANCZOS)
    yy, xx = np.mgrid[0:height, 0:width]
    bg = np.stack([120 + 60 * np.sin(xx / 9.0), 110 + 50 * np.cos(yy / 7.0), 140 + 40 * np.sin((xx + yy) / 13.0)], -1).astype(np.uint8)
    for i in range(n):
        t = i / max(1, n - 1)
        frame = Image.fromarray(bg.copy())
        frame.paste(photo.rotate(6 * np.sin(2 * np.pi * t), fillcolor=(128, 128, 128)),
                    (int((width - face) / 2 + 20 * np.sin(2 * np.pi * t)), int((height - face) / 2)))
        yield np.asarray(frame)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--width", type=int, default=480)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--pti", action="store_true", help="also time one PTI epoch (one Adam step per frame)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", choices=("256", "64"), default="256", help="the kit's e4e_256 case, or a 64 px e4e seeded from the "
                                                                         "Encoder4Editing_64 manifest (for long clips: memory)")
    args = ap.parse_args()
    sys.path.insert(0, str(KIT))
    import subprocess

    import torch
    import weights

    from e4ecli.pipelines.directions import resolve
    from e4ecli.files import video as V
    from e4ecli.hub.checkpoints import load_checkpoint
    from e4ecli.landmarks import open_landmarks
    from e4ecli.pipelines.video_edit import Ramp, VideoEditOptions, edit_video

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        silent, clip = tmp / "silent.mp4", tmp / "clip.mp4"
        V.write_video(silent, clip_frames(args.frames, args.width, args.height, int(args.height * 0.6)), 25)
        subprocess.run([V.ffmpeg_exe(), "-v", "error", "-y", "-i", str(silent), "-f", "lavfi", "-i", f"sine=duration={args.frames / 25}",
                        "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", str(clip)], check=True)
        if args.model == "256":
            ckpt = load_checkpoint(weights.write_checkpoint("e4e_256", tmp / "e4e_256.pt"))
        else:
            manifest = weights.load_manifest("Encoder4Editing_64")
            sd = {f"{part}.{k}": v for i, part in enumerate(("encoder", "decoder"))
                  for k, v in weights.make_state_dict(manifest, part, 7 + i).items()}
            opts = {"encoder_type": "Encoder4Editing", "stylegan_size": 64, "dataset_type": "ffhq_encode", "start_from_latent_avg": True,
                    "input_size": 64}
            torch.save({"state_dict": sd, "opts": opts, "latent_avg": torch.zeros(512)}, tmp / "e4e_64.pt")
            ckpt = load_checkpoint(tmp / "e4e_64.pt")
        edit = resolve(str(KIT / "directions" / "age.pt"), ckpt.generator)
        info = V.probe(clip)
        device = torch.device(args.device)
        opts = VideoEditOptions(pti_steps=1 if args.pti else 0, batch_size=1)
        try:  # reset the high-water mark: the peak below is the pipeline's, not the seeded weights' set-up
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        r = edit_video(clip, info, tmp / "out.mp4", tmp / "work", backend=open_landmarks("dlib", "cpu"), ckpt=ckpt, ckpt_id="bench",
                       steps=[(edit, Ramp(3, 3))], opts=opts, device=device)
        per_frame = {k: round(v / args.frames, 3) for k, v in r.timings.items()}
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        try:
            status = Path("/proc/self/status").read_text()
            pipeline_mb = int(status.split("VmHWM:")[1].split()[0]) / 1024
        except (OSError, IndexError, ValueError):
            pipeline_mb = None
        print(json.dumps({"frames": args.frames, "size": f"{args.width}x{args.height}", "aligned": 256, "model": args.model, "device": args.device,
                          "threads": torch.get_num_threads(), "seconds_per_frame": per_frame, "peak_rss_mb": round(peak_mb),
                          "pipeline_peak_rss_mb": round(pipeline_mb) if pipeline_mb else None}))


if __name__ == "__main__":
    main()
