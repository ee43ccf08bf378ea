"""Image decoding: odd-but-valid files become RGB, invalid ones raise ImageError with the reason."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from e4ecli.files.images import ImageError, load_rgb, to_uint8


@pytest.fixture
def photo():
    from skimage import data

    return Image.fromarray(data.astronaut())  # 512x512 RGB


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    arr = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(arr).save(p)
    img = load_rgb(p)
    got = np.asarray(img)[:, :, 0]
    assert img.mode == "RGB" and got.min() == 0 and got.max() == 255
    assert abs(int(got[32, 32]) - round(arr[32, 32] / 257)) <= 1


def test_cmyk_palette_gray_and_alpha_modes_convert(tmp_path, photo):
    photo.convert("CMYK").save(tmp_path / "cmyk.jpg")
    photo.convert("L").save(tmp_path / "gray.png")
    photo.convert("P").save(tmp_path / "pal.png")
    rgba = photo.convert("RGBA")
    rgba.putalpha(0)  # fully transparent -> white background
    rgba.save(tmp_path / "rgba.png")
    la = photo.convert("LA")
    la.save(tmp_path / "la.png")
    for name in ("cmyk.jpg", "gray.png", "pal.png", "rgba.png", "la.png"):
        img = load_rgb(tmp_path / name)
        assert img.mode == "RGB" and img.size == (512, 512), name
    assert np.asarray(load_rgb(tmp_path / "rgba.png")).min() == 255


def test_palette_with_transparency(tmp_path):
    p = Image.new("P", (8, 8), 0)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.info["transparency"] = 0
    p.save(tmp_path / "t.png", transparency=0)
    assert np.asarray(load_rgb(tmp_path / "t.png"))[0, 0].tolist() == [255, 255, 255]


def test_exif_orientation_is_applied(tmp_path, photo):
    wide = photo.crop((0, 0, 512, 256))  # 512 wide, 256 tall
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    wide.save(tmp_path / "rot.jpg", exif=exif)
    assert load_rgb(tmp_path / "rot.jpg").size == (256, 512)


def test_tiny_and_extreme_aspect_images_are_valid(tmp_path):
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "one.png")
    Image.new("RGB", (4000, 2), (10, 20, 30)).save(tmp_path / "strip.png")
    assert load_rgb(tmp_path / "one.png").size == (1, 1)
    assert load_rgb(tmp_path / "strip.png").size == (4000, 2)


def test_invalid_files_raise_with_reason(tmp_path, photo):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello, not an image")
    buf = io.BytesIO()
    photo.save(buf, "JPEG")
    (tmp_path / "trunc.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    cases = {"empty.jpg": "empty", "text.png": "not an image", "trunc.jpg": "truncated"}
    for name, reason in cases.items():
        with pytest.raises(ImageError, match=reason):
            load_rgb(tmp_path / name)


def test_decompression_bomb_is_refused(tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (10_000, 9_500)).save(bomb)  # 95 Mpx, a few kB on disk
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ImageError, match="decompression bomb"):
        load_rgb(bomb)


def test_to_uint8_truncates_like_tensor2im():
    import torch

    x = torch.tensor([-2.0, -1.0, 0.0, 0.999, 1.0, 3.0]).view(1, 3, 1, 2)
    got = to_uint8(x)
    expected = (np.clip((x.numpy() + 1) / 2, 0, 1) * 255).astype(np.uint8)
    assert got.shape == (1, 1, 2, 3)
    assert np.array_equal(got, np.moveaxis(expected, 1, -1))
    assert got[0, 0, 1].tolist() == [0, int(0.9995 * 255), 255]  # truncated, not rounded
