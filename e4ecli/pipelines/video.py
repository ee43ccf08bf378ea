"""Videos of latents: interpolation through keyframes, or an edit swept there and back.

Frames are rendered in batches and streamed to the writer: MP4 (and .mkv/.mov/.webm/.avi) through
imageio's ffmpeg plugin (imageio-ffmpeg ships the binary), GIF through Pillow. When an ffmpeg
format is asked for but imageio-ffmpeg is missing, a GIF is written instead (`write_video`
returns the path it wrote).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from e4ecli.edits import ops
from e4ecli.edits.specs import Edit
from e4ecli.files.batch import atomic_output
from e4ecli.files.video import FFMPEG_SUFFIXES, VideoError, even_sides, ffmpeg_available, output_for
from e4ecli.pipelines.edit import render_uint8

VIDEO_SUFFIXES = FFMPEG_SUFFIXES + (".gif",)

__all__ = ["FFMPEG_SUFFIXES", "VIDEO_SUFFIXES", "VideoError", "ffmpeg_available", "interpolation_latents", "output_for", "render_frames",
           "sweep_latents", "sweep_offsets", "write_video"]


def interpolation_latents(keyframes: torch.Tensor, n_frames: int, easing: str = "linear", loop: bool = False) -> torch.Tensor:
    """keyframes (K, S, D) -> (n_frames, S, D) linear in W+ (see ops.interpolate)."""
    return ops.interpolate(keyframes, n_frames, easing, loop)


def sweep_latents(latent: torch.Tensor, edit: Edit, low: float, high: float, n_frames: int, easing: str = "linear",
                  bounce: bool = True) -> torch.Tensor:
    """latent (S, D) -> (n_frames, S, D): the edit at strengths low -> high (-> low with bounce)."""
    values = ops.sweep_values(low, high, n_frames, easing, bounce).to(latent)
    return edit.apply(latent[None].expand(n_frames, *latent.shape).clone(), values)


def sweep_offsets(edit: Edit, low: float, high: float, n_frames: int, easing: str = "linear",
                  bounce: bool = True) -> list[torch.Tensor] | None:
    """The StyleSpace offsets of a swept StyleSpace/text edit (one (n_frames, C_l) per layer), else None."""
    if not edit.in_stylespace:
        return None
    return edit.style_offsets(ops.sweep_values(low, high, n_frames, easing, bounce).float(), n_frames)


def render_frames(gen, domain, latents: torch.Tensor, batch_size: int = 4, size: int | None = None,
                  precision: str = "fp32", offsets: list[torch.Tensor] | None = None) -> Iterator[np.ndarray]:
    """latents (F, S, D) (+ StyleSpace offsets, one (F, C_l) per layer) -> uint8 frames (h, w, 3), batch_size at a time."""
    step = max(1, batch_size)
    for start in range(0, latents.shape[0], step):
        extra = None if offsets is None else [o[start:start + step].to(latents.device) for o in offsets]
        images, _ = render_uint8(gen, domain, latents[start:start + step], batch_size, size, precision, extra)
        yield from images


def _ffmpeg_write(path: Path, frames: Iterable[np.ndarray], fps: float, quality: int) -> None:
    """H.264 through the ffmpeg binary of imageio-ffmpeg (the flags imageio uses for libx264), with its exit
    status and error output checked: a disk that fills up, a codec that fails, a killed ffmpeg all raise
    VideoError with ffmpeg's own last words (imageio's writer ignores them and leaves a broken file)."""
    import subprocess
    import tempfile
    from fractions import Fraction

    import imageio_ffmpeg

    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise VideoError("no frames to write")
    first = even_sides(np.ascontiguousarray(first))
    h, w = first.shape[:2]
    crf = int((1 - quality / 10.0) * 51)
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo", "-vcodec", "rawvideo", "-s", f"{w}x{h}",
           "-pix_fmt", "rgb24", "-r", str(Fraction(fps).limit_denominator()), "-i", "-", "-an",
           "-vcodec", "libx264", "-pix_fmt", "yuv420p", "-crf", str(crf), str(path)]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        try:
            try:
                proc.stdin.write(first.tobytes())
                for frame in it:
                    proc.stdin.write(even_sides(np.ascontiguousarray(frame)).tobytes())
                proc.stdin.close()
            except BrokenPipeError:  # ffmpeg stopped early: its exit status and message say why
                pass
            code = proc.wait()
        finally:
            if proc.poll() is None:  # an exception (or Ctrl-C) while rendering: do not leave ffmpeg behind
                proc.kill()
                proc.wait()
            try:
                proc.stdin.close()
            except OSError:
                pass
        if code != 0:
            err.seek(0)
            lines = [ln.strip() for ln in err.read().decode("utf-8", "replace").splitlines() if ln.strip()]
            raise VideoError(f"ffmpeg failed (exit status {code})" + (f": {lines[-1]}" if lines else ""))


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float, quality: int = 8) -> Path:
    """Write uint8 frames (h, w, 3) to `path` atomically; returns the path written (GIF fallback)."""
    target, _ = output_for(Path(path))
    with atomic_output(target) as tmp:
        if target.suffix.lower() == ".gif":
            import imageio.v3 as iio

            stack = [np.ascontiguousarray(f) for f in frames]
            if not stack:
                raise VideoError("no frames to write")
            iio.imwrite(tmp, np.stack(stack), extension=".gif", duration=1000.0 / fps, loop=0)
        else:
            _ffmpeg_write(tmp, frames, fps, quality)
    return target
