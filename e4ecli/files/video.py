"""Streaming video files: probe, read frame by frame, write with the source's audio.

Everything goes through the ffmpeg binary that imageio-ffmpeg ships (`imageio_ffmpeg.get_ffmpeg_exe()`);
no ffprobe is needed. Memory is flat in a clip's length: frames are read one at a time from ffmpeg's
pipe and written one at a time into the encoder's pipe.

- `probe(path)` -> VideoInfo (size, frame rate, frame count, codec, audio, variable frame rate), read
  from the container header and the video stream's packet list (no decoding).
- `iter_frames(path)` -> uint8 (H, W, 3) RGB frames; a clip damaged part way yields the frames before
  the damage and then raises TruncatedVideo naming the frame where it stopped.
- `VideoWriter(path, fps, audio_from=SOURCE)` encodes frames (H.264 for mp4/mov/mkv/avi, VP9 for webm,
  GIF for gif) and muxes the source's first audio stream in unchanged (`-c:a copy`); the file appears
  under its final name only once complete (temp + rename).

Limits and decisions:
- Frames larger than MAX_PIXELS (4096 x 4096 = 16.8 megapixels; 4K UHD fits, 8K does not) are refused.
- A variable frame rate clip is accepted: it is read at its average rate as a constant-rate clip
  (ffmpeg repeats or drops frames to keep the timing, so the sound stays in sync), and
  VideoInfo.note says so; its frame count is then the duration times that rate.
- Audio that the output container cannot hold unchanged (Vorbis into mp4, say) is re-encoded (AAC, or
  Opus for webm) and the writer's `audio_note` says so; a source without audio gives a silent output.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from glob import escape as glob_escape
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from e4ecli.files.kinds import VIDEO_SUFFIXES, is_video  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    import numpy as np

MAX_PIXELS = 4096 * 4096
NOPTS = -(2**63)
IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe", "jpegls_pipe", "ppm_pipe")


class VideoError(ValueError):
    """A video that cannot be read or written as asked; str() is one line naming the file and the reason."""


class NotAVideo(VideoError):
    """The file is not a video ffmpeg can read (text, an image named .mp4, a file cut before its index)."""


class EmptyVideo(VideoError):
    """The file holds no video frames."""


class FrameTooLarge(VideoError):
    """The frames are larger than MAX_PIXELS."""


class TruncatedVideo(VideoError):
    """The clip is damaged part way: `frames_read` frames (0 .. frames_read-1) were read before it stopped."""

    def __init__(self, message: str, frames_read: int):
        super().__init__(message)
        self.frames_read = frames_read


FFMPEG_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi")  # written through ffmpeg; .gif through Pillow


def ffmpeg_available() -> bool:
    """Whether imageio-ffmpeg (and its ffmpeg binary) is there; checked without torch or numpy work."""
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return False
    return True


def output_for(path: Path) -> tuple[Path, bool]:
    """The file a video writer will make for `path`: (that path, whether it is a GIF fallback for a missing
    ffmpeg). Raises VideoError for a suffix that is not a video type."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise VideoError(f"{path}: unsupported video type '{path.suffix}'; use .mp4 or .gif (also {', '.join(FFMPEG_SUFFIXES[1:])})")
    if suffix in FFMPEG_SUFFIXES and not ffmpeg_available():
        return path.with_suffix(".gif"), True
    return path, False


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int  # as displayed (a rotation flag in the container is applied)
    height: int
    fps: Fraction  # the rate frames are read and written at (the average one for a variable rate)
    frame_count: int | None  # video packets in the file (None when they could not be listed)
    duration: float | None  # seconds, from the container header
    codec: str
    container: str
    has_audio: bool
    audio_codec: str | None
    variable_frame_rate: bool
    fps_range: tuple[float, float] | None = None  # slowest and fastest instantaneous rate, when variable
    rotation: int = 0

    @property
    def note(self) -> str | None:
        if not self.variable_frame_rate:
            return None
        lo, hi = self.fps_range or (0.0, 0.0)
        return (f"{self.path}: variable frame rate ({lo:.3g}-{hi:.3g} fps); read as a constant {float(self.fps):.4g} fps "
                "(frames repeated or dropped to keep the timing)")

    def as_dict(self) -> dict:
        return {"width": self.width, "height": self.height, "fps": float(self.fps), "fps_exact": str(self.fps),
                "frame_count": self.frame_count, "duration": self.duration, "codec": self.codec, "container": self.container,
                "has_audio": self.has_audio, "audio_codec": self.audio_codec, "variable_frame_rate": self.variable_frame_rate}


def _last_words(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Press [q]")]
    if not lines:
        return ""
    line = next((ln for ln in lines if not ln.startswith("Last message")), lines[0])  # the first: the cause
    return re.sub(r"^\[[^\]]*\]\s*", "", line)


def _header(path: Path) -> str:
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    return proc.stderr.decode("utf-8", "replace")


def _nice_rate(rate: Fraction) -> Fraction:
    """29.97... -> 30000/1001; 25.0 -> 25; otherwise a small fraction close to the rate."""
    for base in (1, 1001):
        n = round(rate * base / (1000 if base == 1001 else 1))
        cand = Fraction(n * (1000 if base == 1001 else 1), base)
        if n and abs(float(cand - rate)) < 1e-3 * float(rate):
            return cand
    return rate.limit_denominator(1001)


def _packets(path: Path) -> tuple[int, list[int], Fraction | None]:
    """(video packets, their presentation times, the time base) from the container, without decoding."""
    cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "framecrc", "-"]
    pts: list[int] = []
    tb = None
    count = 0
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        try:
            for raw in proc.stdout:
                line = raw.decode("ascii", "replace")
                if line.startswith("#tb 0:"):
                    num, _, den = line.split(":", 1)[1].strip().partition("/")
                    tb = Fraction(int(num), int(den or 1))
                elif line[:1].isdigit():
                    fields = [f.strip() for f in line.split(",")]
                    if len(fields) >= 4 and fields[0] == "0":
                        count += 1
                        try:
                            t = int(fields[2])
                            pts.append(t if t != NOPTS else int(fields[1]))  # AVI has decode times only
                        except ValueError:
                            pass
        finally:
            proc.stdout.close()
            proc.wait()
    return count, pts, tb


MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"junk", b"pdin", b"styp", b"sidx")


def starts_like_mp4(path: Path) -> bool:
    """Whether the file begins with an ISO media / QuickTime box (what an MP4 or MOV, even a truncated one, starts
    with): ffmpeg's mov reader takes any file named .mp4/.mov and calls the lack of an index a truncation."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return len(head) == 8 and head[4:8] in MP4_BOXES


def not_video_content(path: Path) -> str:
    """Why a file named like a video is none, from its first bytes: empty, text, or other data."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        return os.strerror(e.errno) if e.errno else "it cannot be read"
    if not head:
        return "the file is empty"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:  # a character cut by the 4096-byte window is still text
        text = head[:e.start].decode("utf-8") if e.start >= len(head) - 3 and len(head) == 4096 else None
    if text is not None and all(c.isprintable() or c in "\t\r\n" for c in text):
        return "it holds text, not video data"
    return "its content does not start like any video container"


def probe(path: Path | str) -> VideoInfo:
    """Read a clip's header and packet list (no decoding). Raises NotAVideo, EmptyVideo, FrameTooLarge."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    text = _header(path)
    m_input = re.search(r"^Input #0, ([^ ]+), from", text, re.M)
    if not m_input:
        reason = _last_words(text.replace(str(path), "")).strip(": ") or "ffmpeg cannot read it"
        if "moov atom not found" in text:
            reason = (("the file is cut short before its index (moov atom not found): a truncated or unfinished recording")
                      if starts_like_mp4(path) else not_video_content(path))
        raise NotAVideo(f"{path}: not a readable video ({reason})")
    container = m_input.group(1).rstrip(",")
    video = re.search(r"Stream #0:\d+[^:]*: Video: (.*)$", text, re.M)
    if container in IMAGE_FORMATS or (video and container.endswith("_pipe")):
        kind = container.replace("_pipe", "").upper() if container != "image2" else "still"
        raise NotAVideo(f"{path}: is a {kind} image, not a video")
    if not video:
        raise EmptyVideo(f"{path}: has no video stream (0 frames)")
    desc = video.group(1)
    codec = desc.split()[0].rstrip(",")
    size = re.search(r"(?:^|[ ,])(\d{1,6})x(\d{1,6})(?:[ ,\[]|$)", desc)
    if not size:
        raise NotAVideo(f"{path}: its video stream has no frame size ({codec})")
    width, height = int(size.group(1)), int(size.group(2))
    rot = re.search(r"rotation of (-?[\d.]+) degrees", text)
    rotation = int(round(float(rot.group(1)))) % 360 if rot else 0
    if rotation in (90, 270):
        width, height = height, width
    if width * height > MAX_PIXELS:
        raise FrameTooLarge(f"{path}: frames of {width}x{height} are larger than the limit of {MAX_PIXELS / 1e6:.1f} megapixels "
                            "(4096x4096); scale the clip down first, e.g. ffmpeg -i IN -vf scale=-2:1080 OUT.mp4")
    if width == 0 or height == 0:
        raise EmptyVideo(f"{path}: its frames are empty ({width}x{height})")
    m_fps = re.search(r"([\d.]+)(k?) fps", desc) or re.search(r"([\d.]+)(k?) tbr", desc)
    header_fps = Fraction(m_fps.group(1)) * (1000 if m_fps.group(2) else 1) if m_fps else None
    m_dur = re.search(r"Duration: (\d+):(\d+):([\d.]+)", text)
    duration = int(m_dur.group(1)) * 3600 + int(m_dur.group(2)) * 60 + float(m_dur.group(3)) if m_dur else None
    audio = re.search(r"Stream #0:\d+[^:]*: Audio: ([^ ,]+)", text)

    count, pts, tb = _packets(path)
    if count == 0:
        raise EmptyVideo(f"{path}: has 0 video frames")
    variable, fps_range, fps = False, None, header_fps
    if tb is not None and len(pts) >= 2:
        times = sorted(set(pts))
        steps = [b - a for a, b in zip(times, times[1:]) if b > a]
        if steps:
            steps.sort()
            lo, hi = steps[0], steps[-1]
            median = steps[len(steps) // 2]
            # a step off the median by more than a tick of rounding and 10% means the rate varies
            if hi - lo > 2 and hi > 1.1 * lo:
                variable = True
                fps_range = (float(1 / (hi * tb)), float(1 / (lo * tb)))
                span = (times[-1] - times[0]) * tb
                fps = _nice_rate(Fraction(len(times) - 1) / span) if span else header_fps
            else:  # constant: the mean step (a millisecond time base rounds 30000/1001 fps to steps of 33 and 34)
                span = (times[-1] - times[0]) * tb
                measured = Fraction(len(times) - 1) / span if span else 1 / (median * tb)
                close = header_fps and abs(header_fps - measured) < measured / 100
                fps = _nice_rate(header_fps if close else measured)
    if not fps:
        fps = Fraction(25) if header_fps is None else header_fps
    if variable:
        count = None  # known once read: ffmpeg repeats or drops frames to keep the timing
    return VideoInfo(path=path, width=width, height=height, fps=fps, frame_count=count, duration=duration, codec=codec,
                     container=container, has_audio=audio is not None, audio_codec=audio.group(1) if audio else None,
                     variable_frame_rate=variable, fps_range=fps_range, rotation=rotation)


def iter_frames(path: Path | str, info: VideoInfo | None = None) -> Iterator[np.ndarray]:
    """Yield the clip's frames, uint8 (H, W, 3) RGB, one at a time (ffmpeg decodes ahead into a pipe).

    A clip that ends early or with decoding errors yields the frames before the damage and then raises
    TruncatedVideo; closing the generator early stops ffmpeg."""
    import numpy as np  # here, not at the top: the commands check their video options without numpy

    path = Path(path)
    info = info or probe(path)
    w, h = info.width, info.height
    rate = ["-fps_mode", "cfr", "-r", str(info.fps)] if info.variable_frame_rate else ["-fps_mode", "passthrough"]
    cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path), "-map", "0:v:0", "-an", "-sn", *rate,
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    frame_bytes = w * h * 3
    read = 0
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, bufsize=frame_bytes)
        partial = False
        try:
            while True:
                buf = proc.stdout.read(frame_bytes)
                if len(buf) < frame_bytes:
                    partial = len(buf) > 0
                    break
                yield np.frombuffer(buf, np.uint8).reshape(h, w, 3).copy()
                read += 1
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    expected = info.frame_count
    if info.duration and not info.variable_frame_rate:  # a cut mp4 keeps its full duration in the header
        expected = max(expected or 0, round(info.duration * float(info.fps)))
    damaged = code != 0 or partial or bool(text.strip())
    if read == 0:
        raise (EmptyVideo if not damaged else TruncatedVideo)(
            f"{path}: no frame could be decoded" + (f" ({_last_words(text)})" if text.strip() else ""), *(() if not damaged else (0,)))
    if damaged and (partial or code != 0 or (expected is not None and read < expected - 1)):
        words = _last_words(text) or f"ffmpeg exit status {code}"
        of = f" of {expected}" if expected and expected > read else ""
        raise TruncatedVideo(f"{path}: damaged or truncated: stopped at frame {read}{of} ({words}); the {read} frames before it were read", read)


def count_frames(path: Path | str) -> int:
    """Frames as iter_frames yields them (decodes the clip; for tests and checks)."""
    return sum(1 for _ in iter_frames(path))


# -- writing --------------------------------------------------------------------------------------------
def even_sides(frame: np.ndarray) -> np.ndarray:
    """H.264 in yuv420p needs even sides: repeat the last row/column when one is odd."""
    import numpy as np

    h, w = frame.shape[:2]
    if h % 2 or w % 2:
        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return frame


def _video_codec(suffix: str, crf: int) -> list[str]:
    if suffix == ".gif":
        return ["-vf", "split[a][b];[a]palettegen=stats_mode=diff[p];[b][p]paletteuse", "-loop", "0"]
    if suffix == ".webm":
        return ["-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p", "-crf", str(min(63, crf + 12)), "-b:v", "0", "-row-mt", "1"]
    return ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(crf), "-preset", "medium"]


def _run(cmd: list[str]) -> tuple[int, str]:
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc.returncode, proc.stderr.decode("utf-8", "replace")


def _remove_stale_temps(*paths: Path) -> None:
    """Temp files of an earlier writer of these paths that was killed (its process is gone): removed."""
    for path in paths:
        for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp*"):
            m = re.match(rf"\.{re.escape(path.name)}\.(\d+)-[0-9a-f]+\.tmp", tmp.name)
            if not m:
                continue
            try:
                os.kill(int(m.group(1)), 0)
                continue  # still running
            except ProcessLookupError:
                pass
            except (PermissionError, OverflowError, ValueError):
                continue
            tmp.unlink(missing_ok=True)


class VideoWriter:
    """Write frames to `path` at `fps`, with the first audio stream of `audio_from` copied in unchanged.

        with VideoWriter(out, info.fps, audio_from=clip) as writer:
            for frame in frames:
                writer.write(frame)

    The video is encoded into a hidden temp file while frames arrive, then muxed with the audio into a
    second temp file that is renamed onto `path` when the block ends without an exception. An exception
    (or a kill) leaves no file under `path`. `audio_note` says what happened to the sound, if anything
    unusual; `frames` counts the frames written."""

    def __init__(self, path: Path | str, fps: Fraction | float, audio_from: Path | str | None = None, crf: int = 17):
        from e4ecli.files.batch import temp_name

        self.path = Path(path)
        self.suffix = self.path.suffix.lower()
        if self.suffix not in VIDEO_SUFFIXES:
            raise VideoError(f"{self.path}: unsupported video type '{self.path.suffix}'; use one of {', '.join(VIDEO_SUFFIXES)}")
        self.fps = Fraction(fps).limit_denominator(1_000_000)
        self.audio_from = Path(audio_from) if audio_from is not None else None
        self.crf = crf
        self.frames = 0
        self.size: tuple[int, int] | None = None
        self.audio_note: str | None = None
        self._proc: subprocess.Popen | None = None
        self._err = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # the intermediate video-only file is always MKV (any codec goes in), except for GIF
        inner = self.path.with_suffix(".gif" if self.suffix == ".gif" else ".mkv")
        _remove_stale_temps(self.path, inner)
        self._video_tmp = temp_name(inner)

    def __enter__(self) -> "VideoWriter":
        return self

    def _start(self, w: int, h: int) -> None:
        self.size = (w, h)
        cmd = [ffmpeg_exe(), "-y", "-v", "error", "-nostdin", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
               "-r", str(self.fps), "-i", "-", "-an", *_video_codec(self.suffix, self.crf), str(self._video_tmp)]
        self._err = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._err)

    def write(self, frame: np.ndarray) -> None:
        import numpy as np

        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise VideoError(f"{self.path}: frames must be uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
        frame = even_sides(np.ascontiguousarray(frame))
        h, w = frame.shape[:2]
        if self._proc is None:
            self._start(w, h)
        elif (w, h) != self.size:
            raise VideoError(f"{self.path}: frame {self.frames} is {w}x{h}, the clip is {self.size[0]}x{self.size[1]}")
        try:
            self._proc.stdin.write(frame.tobytes())
        except BrokenPipeError:
            self._finish_encoder()  # raises with ffmpeg's reason
            raise VideoError(f"{self.path}: ffmpeg stopped taking frames") from None
        self.frames += 1

    def _finish_encoder(self) -> None:
        proc = self._proc
        try:
            proc.stdin.close()
        except OSError:
            pass
        code = proc.wait()
        self._err.seek(0)
        text = self._err.read().decode("utf-8", "replace")
        self._err.close()
        if code != 0:
            raise VideoError(f"{self.path}: ffmpeg failed to encode (exit status {code}): {_last_words(text)}")

    def _mux(self, tmp: Path) -> None:
        ffmpeg = ffmpeg_exe()
        fmt = {".mkv": "matroska", ".mov": "mov", ".mp4": "mp4", ".webm": "webm", ".avi": "avi", ".gif": "gif"}[self.suffix]
        base = [ffmpeg, "-y", "-v", "error", "-nostdin", "-i", str(self._video_tmp)]
        tail = ((["-movflags", "+faststart"] if self.suffix in (".mp4", ".mov") else [])
                + (["-bsf:v", "h264_mp4toannexb"] if self.suffix == ".avi" else []) + ["-f", fmt, str(tmp)])
        has_audio = False
        if self.audio_from is not None and self.suffix != ".gif":
            try:
                has_audio = probe_audio(self.audio_from)
            except VideoError:
                has_audio = False
        if not has_audio:
            if self.audio_from is not None and self.suffix != ".gif":
                self.audio_note = f"{self.audio_from} has no audio stream: the output is silent"
            elif self.audio_from is not None:
                self.audio_note = "GIF holds no sound: the audio was left out"
            code, text = _run(base + ["-map", "0:v:0", "-c", "copy"] + tail)
            if code != 0:
                raise VideoError(f"{self.path}: ffmpeg failed to write (exit status {code}): {_last_words(text)}")
            return
        audio_in = ["-i", str(self.audio_from), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy"]
        code, text = _run(base + audio_in + ["-c:a", "copy"] + tail)
        if code == 0:
            return
        reencode = ["-c:a", "libopus"] if self.suffix == ".webm" else ["-c:a", "aac", "-b:a", "192k"]
        code2, text2 = _run(base + audio_in + reencode + tail)
        if code2 != 0:
            raise VideoError(f"{self.path}: ffmpeg could not add the audio of {self.audio_from} (exit status {code2}): {_last_words(text2)}")
        self.audio_note = (f"the audio of {self.audio_from} cannot go into {self.suffix} unchanged ({_last_words(text)}); "
                           f"it was re-encoded ({reencode[1]})")

    def close(self) -> Path:
        from e4ecli.files.batch import atomic_output

        if self._proc is None:
            raise EmptyVideo(f"{self.path}: no frames to write")
        try:
            self._finish_encoder()
            with atomic_output(self.path) as tmp:
                self._mux(tmp)
        finally:
            self._video_tmp.unlink(missing_ok=True)
            self._proc = None
        return self.path

    def abort(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            try:
                self._proc.stdin.close()
            except OSError:
                pass
            self._err.close()
            self._proc = None
        self._video_tmp.unlink(missing_ok=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def probe_audio(path: Path | str) -> bool:
    """Whether the file has an audio stream (header only)."""
    return re.search(r"Stream #0:\d+[^:]*: Audio:", _header(Path(path))) is not None


def write_video(path: Path | str, frames: Iterable[np.ndarray], fps: Fraction | float, audio_from: Path | str | None = None,
                crf: int = 17) -> VideoWriter:
    """Write all `frames` (streamed) to `path`; returns the closed writer (frames, audio_note)."""
    writer = VideoWriter(path, fps, audio_from=audio_from, crf=crf)
    with writer:
        for frame in frames:
            writer.write(frame)
    return writer


def audio_packets(path: Path | str) -> list[str]:
    """The checksums of the first audio stream's packets (to check that audio was copied unchanged)."""
    cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path), "-map", "0:a:0", "-c", "copy", "-f", "framecrc", "-"]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
    if proc.returncode != 0:
        return []
    out = []
    for line in proc.stdout.decode("ascii", "replace").splitlines():
        if line[:1].isdigit():
            fields = [f.strip() for f in line.split(",")]
            if len(fields) >= 6:
                out.append(fields[5])
    return out


__all__ = ["VIDEO_SUFFIXES", "MAX_PIXELS", "VideoError", "NotAVideo", "EmptyVideo", "FrameTooLarge", "TruncatedVideo",
           "VideoInfo", "probe", "iter_frames", "count_frames", "VideoWriter", "write_video", "audio_packets", "is_video",
           "ffmpeg_exe"]
