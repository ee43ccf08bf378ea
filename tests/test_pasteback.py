"""Paste-back: the inverse of the alignment warp, blended into the original photo."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from e4ecli.pasteback import (PasteBackError, affine_from_quad, feather_mask, find_sidecar, load_photo, paste_back,
                              read_sidecar)
from editing_kit import KIT, kit_face_quad, need_kit, write_sidecar


def _align(photo: Image.Image, quad: np.ndarray, size: int) -> np.ndarray:
    """What alignment does with a quad: PIL's QUAD transform of the corners' continuous coordinates."""
    data = tuple((quad + 0.5).flatten())
    return np.asarray(photo.transform((size, size), Image.Transform.QUAD, data, Image.Resampling.BILINEAR))


@pytest.fixture(scope="module")
def face():
    need_kit()
    img = Image.open(KIT / "photos" / "face.jpg").convert("RGB")
    return img, np.asarray(img), kit_face_quad()


def _centre(a: np.ndarray, quad: np.ndarray, r: int = 150) -> np.ndarray:
    cx, cy = quad.mean(axis=0).astype(int)
    return a[cy - r:cy + r, cx - r:cx + r]


def test_round_trip_puts_the_aligned_face_back_where_it_came_from(face):
    img, photo, quad = face
    aligned = _align(img, quad, 512)
    back = paste_back(photo, aligned, affine_from_quad(quad, 512), 512)
    err = np.abs(back.astype(int) - photo).astype(float)
    assert _centre(err, quad).mean() < 1.0  # two bilinear resamplings, nothing more
    # the check is sharp: half a pixel of misregistration is already clearly worse
    shifted = paste_back(photo, aligned, affine_from_quad(quad + 0.5, 512), 512)
    assert _centre(np.abs(shifted.astype(int) - photo).astype(float), quad).mean() > 1.3


def test_only_the_quad_changes_and_its_edge_is_feathered(face):
    _, photo, quad = face
    size = 64
    red = np.zeros((size, size, 3), np.uint8)
    red[..., 0] = 255
    out = paste_back(photo, red, affine_from_quad(quad, size), size, feather=0.1)
    changed = np.any(out != photo, axis=-1)
    ys, xs = np.nonzero(changed)
    assert xs.min() >= np.floor(quad[:, 0].min()) and xs.max() <= np.ceil(quad[:, 0].max())
    assert ys.min() >= np.floor(quad[:, 1].min()) and ys.max() <= np.ceil(quad[:, 1].max())
    cx, cy = quad.mean(axis=0).astype(int)
    assert tuple(out[cy, cx]) == (255, 0, 0)  # fully pasted inside
    # half way through the feather (5% of the side in from the edge) the blend is half and half
    a = affine_from_quad(quad, size)
    edge = a @ np.array([size * 0.05, size / 2, 1.0])
    px, py = int(edge[0]), int(edge[1])
    assert abs(int(out[py, px, 0]) - (int(photo[py, px, 0]) + 255) / 2) < 40
    assert feather_mask(np.array([-1.0, 0.0, 3.2, 32.0]), np.array([32.0] * 4), 64, 0.1).tolist() == pytest.approx([0, 0, 0.5, 1])


def test_sidecar_fields_and_photo_lookup(tmp_path, face):
    _, photo, quad = face
    src = tmp_path / "photos" / "face.jpg"
    src.parent.mkdir()
    src.write_bytes((KIT / "photos" / "face.jpg").read_bytes())
    (tmp_path / "aligned").mkdir()
    side = write_sidecar(tmp_path / "aligned" / "face.json", "../photos/face.jpg", quad, 256, source_size=[1024, 1024])
    sc = read_sidecar(side)
    assert sc.source.resolve() == src.resolve()  # a relative source is relative to the sidecar
    assert np.allclose(sc.source_from_output, affine_from_quad(quad, 256))
    assert load_photo(sc).shape == photo.shape
    # an explicit affine wins over the quad
    explicit = affine_from_quad(quad + 3, 256)
    side2 = write_sidecar(tmp_path / "aligned" / "e.json", src, quad, 256, source_from_output=explicit.tolist())
    assert np.allclose(read_sidecar(side2).source_from_output, explicit)


@pytest.mark.parametrize("content, reason", [
    ("{not json", "cannot read"),
    ('{"output_size": 64, "quad": [[0,0],[0,1],[1,1],[1,0]]}', "missing field 'source'"),
    ('{"source": "x.jpg", "output_size": 64, "quad": [[0,0],[0,1]]}', "quad must be 4"),
    ('{"source": "x.jpg", "output_size": 64, "quad": [[0,0],[0,0],[0,0],[0,0]]}', "degenerate"),
])
def test_bad_sidecars_are_refused_with_the_reason(tmp_path, content, reason):
    side = tmp_path / "a.json"
    side.write_text(content)
    with pytest.raises(PasteBackError, match=reason):
        read_sidecar(side)


def test_a_photo_of_another_size_is_refused(tmp_path, face):
    _, _, quad = face
    side = write_sidecar(tmp_path / "a.json", KIT / "photos" / "face.jpg", quad, 256, source_size=[800, 600])
    with pytest.raises(PasteBackError, match="1024x1024 but"):
        load_photo(read_sidecar(side))


def test_sidecar_search_order(tmp_path):
    lat = tmp_path / "latents" / "sub" / "a.npy"
    lat.parent.mkdir(parents=True)
    lat.write_bytes(b"")
    assert find_sidecar(lat, "sub/a", [tmp_path / "aligned"]) is None
    beside = lat.with_suffix(".json")
    beside.write_text("{}")
    assert find_sidecar(lat, "sub/a", [tmp_path / "aligned"]) == beside
    aligned = tmp_path / "aligned" / "sub" / "a.json"
    aligned.parent.mkdir(parents=True)
    aligned.write_text("{}")
    assert find_sidecar(lat, "sub/a", [tmp_path / "aligned"]) == aligned


def test_a_soft_mask_replaces_the_feathered_square(face):
    """With the stitching blend mask: pasted where it is 1, untouched where it is 0 (also inside the quad), blended
    in between; without it, today's feathered square."""
    _, photo, quad = face
    size = 64
    red = np.zeros((size, size, 3), np.uint8)
    red[..., 0] = 255
    mask = np.zeros((size, size), np.float32)
    mask[16:48, 16:48] = 1.0
    mask[16:48, 30:34] = 0.5
    a = affine_from_quad(quad, size)
    out = paste_back(photo, red, a, size, mask=mask)

    def at(u, v):
        x, y = (a @ np.array([u, v, 1.0])).astype(int)
        return out[y, x].astype(int), photo[y, x].astype(int)

    got, _ = at(20, 20)
    assert tuple(got) == (255, 0, 0)
    got, orig = at(8, 32)  # inside the quad, outside the mask: the photo's own pixel
    assert np.array_equal(got, orig)
    got, orig = at(32, 32)  # half weight
    assert abs(got[0] - (orig[0] + 255) / 2) < 3 and abs(got[1] - orig[1] / 2) < 3
    changed = np.any(out != photo, axis=-1)
    ys, xs = np.nonzero(changed)
    corners = a @ np.array([[16, 48, 16, 48], [16, 16, 48, 48], [1, 1, 1, 1]], dtype=float)
    reach = np.hypot(a[0, 0], a[1, 0]) + 1  # bilinear sampling spreads the mask's edge by one face pixel
    assert xs.min() >= corners[0].min() - reach and xs.max() <= corners[0].max() + reach
    assert ys.min() >= corners[1].min() - reach and ys.max() <= corners[1].max() + reach
    # the default is unchanged: feathered square
    assert np.array_equal(paste_back(photo, red, a, size), paste_back(photo, red, a, size, feather=0.1))
    with pytest.raises(ValueError, match="mask"):
        paste_back(photo, red, a, size, mask=np.ones((32, 32)))
