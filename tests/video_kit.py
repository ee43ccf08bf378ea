"""Clips made inside the tests: the kit's photos/face.jpg moved and turned along a smooth path over a
textured background, with a sine tone as the sound (ffmpeg from imageio-ffmpeg)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import KIT, kit_or_skip
from e4ecli.files import video as V

FPS = 12


def background(width: int, height: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    r = 120 + 60 * np.sin(xx / 9.0)
    g = 110 + 50 * np.cos(yy / 7.0)
    b = 140 + 40 * np.sin((xx + yy) / 13.0)
    return np.stack([r, g, b], axis=-1).clip(0, 255).astype(np.uint8)


def clip_frames(n: int, width: int = 200, height: int = 160, face: int = 110) -> list[np.ndarray]:
    kit_or_skip("photos/face.jpg")
    photo = Image.open(KIT / "photos" / "face.jpg").convert("RGB").resize((face, face), Image.Resampling.LANCZOS)
    bg = background(width, height)
    frames = []
    for i in range(n):
        t = i / max(1, n - 1)
        angle = 6.0 * np.sin(2 * np.pi * t)
        tile = photo.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=(128, 128, 128))
        x = int(round((width - face) / 2 + 14 * np.sin(2 * np.pi * t)))
        y = int(round((height - face) / 2 + 6 * np.cos(2 * np.pi * t)))
        frame = Image.fromarray(bg.copy())
        frame.paste(tile, (x, y))
        frames.append(np.asarray(frame))
    return frames


def make_clip(path: Path, n: int = 14, audio: bool = True, **kw) -> Path:
    """An H.264 clip of n frames at FPS with (or without) a 440 Hz tone as long as the clip."""
    path = Path(path)
    silent = path.with_name(".silent_" + path.name)
    V.write_video(silent if audio else path, clip_frames(n, **kw), FPS)
    if audio:
        subprocess.run([V.ffmpeg_exe(), "-v", "error", "-y", "-nostdin", "-i", str(silent), "-f", "lavfi", "-i",
                        f"sine=frequency=440:sample_rate=16000:duration={n / FPS}", "-map", "0:v", "-map", "1:a", "-c:v", "copy",
                        "-c:a", "aac", "-movflags", "+faststart", str(path)], check=True)
        silent.unlink()
    return path
