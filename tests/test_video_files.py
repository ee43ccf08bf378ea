"""files/video.py: probing, streaming frames, writing with the source's audio, and the typed errors."""
from __future__ import annotations

import subprocess
from fractions import Fraction

import numpy as np
import pytest

from e4ecli.files import video as V


def ffmpeg(*args: str) -> None:
    subprocess.run([V.ffmpeg_exe(), "-v", "error", "-y", "-nostdin", *args], check=True)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    src = ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", "1.2"]
    ffmpeg(*src, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-movflags", "+faststart", str(d / "ok.mp4"))
    ffmpeg(*src, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(d / "index_at_end.mp4"))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=30000/1001", "-t", "0.5", "-c:v", "libx264", "-an", str(d / "silent.mkv"))
    data = (d / "ok.mp4").read_bytes()
    (d / "cut.mp4").write_bytes(data[: len(data) // 2])
    (d / "cut_index.mp4").write_bytes((d / "index_at_end.mp4").read_bytes()[: len(data) // 2])
    (d / "text.mp4").write_text("not a video\n")
    ffmpeg("-f", "lavfi", "-i", "color=c=red:size=32x32", "-frames:v", "1", "-f", "image2", "-c:v", "png", str(d / "image.png"))
    (d / "image.mp4").write_bytes((d / "image.png").read_bytes())
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", "0.5", "-c:a", "aac", str(d / "audio_only.mp4"))
    # variable frame rate: 10 frames at 25 fps, then 10 at 12.5 fps
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25,setpts='if(lt(N,10),N,10+(N-10)*2)/25/TB'", "-frames:v", "20",
           "-fps_mode", "vfr", "-c:v", "libx264", str(d / "vfr.mp4"))
    return d


def test_probe_and_frames(clips):
    info = V.probe(clips / "ok.mp4")
    assert (info.width, info.height, info.fps, info.frame_count) == (64, 48, Fraction(25), 30)
    assert info.has_audio and info.audio_codec == "aac" and not info.variable_frame_rate and info.codec == "h264"
    frames = list(V.iter_frames(clips / "ok.mp4", info))
    assert len(frames) == 30 and frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
    silent = V.probe(clips / "silent.mkv")
    assert silent.fps == Fraction(30000, 1001) and not silent.has_audio


def test_writer_copies_the_audio_unchanged_at_the_source_rate(clips, tmp_path):
    info = V.probe(clips / "ok.mp4")
    frames = list(V.iter_frames(clips / "ok.mp4", info))
    out = tmp_path / "out.mp4"
    writer = V.write_video(out, (f[:, ::-1] for f in frames), info.fps, audio_from=clips / "ok.mp4")
    assert writer.frames == 30 and writer.audio_note is None
    back = V.probe(out)
    assert (back.fps, back.frame_count, back.has_audio) == (info.fps, 30, True)
    assert V.audio_packets(out) == V.audio_packets(clips / "ok.mp4") != []
    again = np.stack(list(V.iter_frames(out)))
    assert np.abs(again.astype(int) - np.stack(frames)[:, :, ::-1]).mean() < 3  # codec noise only
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]  # no temp files left

    silent = V.write_video(tmp_path / "s.mkv", frames[:5], Fraction(30000, 1001), audio_from=clips / "silent.mkv")
    assert "no audio stream" in silent.audio_note and V.probe(tmp_path / "s.mkv").fps == Fraction(30000, 1001)


def test_a_failed_write_leaves_nothing(clips, tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError), V.VideoWriter(out, 25, audio_from=clips / "ok.mp4") as w:
        w.write(np.zeros((48, 64, 3), np.uint8))
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs_have_one_line_typed_errors(clips):
    cases = {"text.mp4": V.NotAVideo, "image.mp4": V.NotAVideo, "audio_only.mp4": V.EmptyVideo, "cut_index.mp4": V.NotAVideo}
    for name, kind in cases.items():
        with pytest.raises(kind) as e:
            V.probe(clips / name)
        assert str(clips / name) in str(e.value) and "\n" not in str(e.value)
    assert "image" in str(pytest.raises(V.NotAVideo, V.probe, clips / "image.mp4").value)


def test_text_named_like_a_video_is_not_called_a_truncated_recording(clips, tmp_path):
    """ffmpeg's mov reader takes any .mp4 and reports a missing index ('moov atom not found'): a text file, an empty
    file or random bytes are said to be no video; an MP4 cut before its index keeps the truncation reading."""
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "noise.mov").write_bytes(bytes(range(256)) * 8)
    expected = {clips / "text.mp4": "it holds text, not video data", tmp_path / "empty.mp4": "the file is empty",
                tmp_path / "noise.mov": "does not start like any video container",
                clips / "cut_index.mp4": "cut short before its index (moov atom not found)"}
    for path, words in expected.items():
        with pytest.raises(V.NotAVideo) as e:
            V.probe(path)
        assert f"{path}: not a readable video" in str(e.value) and words in str(e.value), str(e.value)
        assert ("moov" in str(e.value)) == (path.name == "cut_index.mp4")


def test_a_truncated_clip_yields_the_frames_before_the_damage(clips):
    got = []
    with pytest.raises(V.TruncatedVideo) as e:
        for f in V.iter_frames(clips / "cut.mp4"):
            got.append(f)
    assert 0 < len(got) < 30 and e.value.frames_read == len(got)
    assert f"stopped at frame {len(got)} of 30" in str(e.value)


def test_huge_frames_are_refused(monkeypatch, clips):
    monkeypatch.setattr(V, "MAX_PIXELS", 64 * 40)
    with pytest.raises(V.FrameTooLarge, match="64x48 are larger than the limit"):
        V.probe(clips / "ok.mp4")


def test_variable_frame_rate_is_read_at_a_constant_average_rate(clips):
    info = V.probe(clips / "vfr.mp4")
    assert info.variable_frame_rate and "variable frame rate" in info.note
    lo, hi = info.fps_range
    assert lo == pytest.approx(12.5, rel=0.02) and hi == pytest.approx(25, rel=0.02)
    n = sum(1 for _ in V.iter_frames(clips / "vfr.mp4", info))
    assert n == pytest.approx(info.duration * float(info.fps), abs=2)


def test_temp_files_of_a_killed_writer_are_removed(tmp_path):
    dead = 2**22 + 12345  # above the default pid_max: no such process
    stale = [tmp_path / f".out.mp4.{dead}-abc123.tmp.mp4", tmp_path / f".out.mkv.{dead}-abc123.tmp.mkv"]
    for p in stale:
        p.write_bytes(b"partial")
    V.write_video(tmp_path / "out.mp4", [np.zeros((16, 16, 3), np.uint8)] * 3, 10)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
