"""`e4e align` and `e4e invert --align`: FFHQ alignment conformance, landmark backends and their
fallback, batch behaviour (no face, several faces, EXIF rotation, tiny images, workers, reruns)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from e4ecli.alignment import AlignError, align_face, apply_alignment, face_quad, plan_alignment
from conftest import kit_or_skip as _kit_or_skip, run

MEAN_TOL = 0.5  # grey levels, the conformance kit's tolerance for aligned images



def kit_or_skip() -> Path:
    return _kit_or_skip("cases/align.npz")


def dlib_or_skip():
    from e4ecli.landmarks import dlib_problem

    problem = dlib_problem()
    if problem:
        pytest.skip(f"dlib backend unavailable: {problem}")


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def diff_stats(a, b) -> tuple[float, int]:
    d = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
    return float(d.mean()), int(d.max())


@pytest.fixture(scope="module")
def case():
    kit = kit_or_skip()
    with np.load(kit / "cases" / "align.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def face_jpg() -> Path:
    return kit_or_skip() / "photos" / "face.jpg"


@pytest.fixture(scope="module")
def dlib_backend():
    dlib_or_skip()
    from e4ecli.landmarks import DlibLandmarks

    return DlibLandmarks()


@pytest.fixture(scope="module")
def astronaut_head() -> np.ndarray:
    """A real face (scikit-image's astronaut), cropped to leave out the mission patch dlib also fires on."""
    data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(data.astronaut()[0:280, 80:360])


@pytest.fixture(scope="module")
def ffhq_run(face_jpg, tmp_path_factory):
    """One `e4e align` at the FFHQ setting (1024, supersample 4 -> a 4096 transform), shared by tests."""
    dlib_or_skip()
    root = tmp_path_factory.mktemp("ffhq")
    res = run("align", face_jpg, "-o", root / "out", "--detector", "dlib")
    return root, res


# -- conformance ----------------------------------------------------------------------------------
def test_geometry_from_stored_landmarks_reproduces_e4e_align_face(case, face_jpg):
    """The geometry alone (no detector): the original's crop at e4e's setting (256, transform 256)."""
    out, plan = align_face(Image.open(face_jpg).convert("RGB"), case["landmarks_0"], output_size=256, supersample=1)
    mean, mx = diff_stats(out, case["aligned256_0"])
    print(f"aligned256 from stored landmarks: mean {mean:.4f} max {mx}")
    assert out.size == (256, 256) and mean <= MEAN_TOL
    assert plan.transform_size == 256 and plan.shrink == 1 and any(plan.pad)  # this photo needs the feathered padding


def test_dlib_backend_reproduces_original_landmarks(case, face_jpg, dlib_backend):
    """dlib on the JPEG as the original scripts read it gives the stored landmarks exactly."""
    faces = dlib_backend.detect(pixels(face_jpg).astype(np.uint8), source=face_jpg)
    assert len(faces) == 1
    assert np.array_equal(faces[0].landmarks, case["landmarks_0"].astype(np.float64))


def test_align_cli_reproduces_ffhq_setting(ffhq_run, case):
    root, res = ffhq_run
    assert res.exit_code == 0, res.output
    mean, mx = diff_stats(pixels(root / "out" / "face.png"), case["aligned1024_0"])
    print(f"aligned1024 via e4e align --detector dlib: mean {mean:.4f} max {mx}")
    assert mean <= MEAN_TOL


def test_align_cli_reproduces_e4e_setting(face_jpg, case, tmp_path):
    dlib_or_skip()
    res = run("align", face_jpg, "-o", tmp_path, "--size", 256, "--supersample", 1, "--detector", "dlib")
    assert res.exit_code == 0, res.output
    mean, mx = diff_stats(pixels(tmp_path / "face.png"), case["aligned256_0"])
    print(f"aligned256 via e4e align --detector dlib: mean {mean:.4f} max {mx}")
    assert mean <= MEAN_TOL


def test_sidecar_describes_the_crop(ffhq_run, case, face_jpg):
    """The sidecar has what pasting back needs, and its affine map sends output corners to the quad."""
    root, _ = ffhq_run
    info = json.loads((root / "out" / "face.json").read_text())
    assert info["source"] == str(face_jpg.resolve()) and info["detector"] == "dlib"
    assert info["output_size"] == 1024 and info["transform_size"] == 4096 and info["supersample"] == 4
    assert np.array_equal(np.array(info["landmarks"]), case["landmarks_0"])
    plan = plan_alignment(case["landmarks_0"], (1024, 1024), 1024, 4)
    assert np.allclose(info["quad"], plan.quad_source) and info["crop"] == list(plan.crop) and info["pad"] == list(plan.pad)
    a = np.array(info["source_from_output"])
    corners = np.array([[0, 0, 1], [0, 1024, 1], [1024, 1024, 1], [1024, 0, 1]], dtype=float)
    assert np.allclose(corners @ a.T, np.array(info["quad"]) + 0.5)
    assert not [p for p in (root / "out").iterdir() if p.name.startswith(".")], "temp files left behind"


def test_rerun_skips_finished_files(ffhq_run, face_jpg):
    root, _ = ffhq_run
    before = (root / "out" / "face.png").stat().st_mtime_ns
    res = run("align", face_jpg, "-o", root / "out", "--detector", "dlib")
    assert res.exit_code == 0, res.output
    assert (root / "out" / "face.png").stat().st_mtime_ns == before
    record = [json.loads(x) for x in (root / "out" / "manifest.jsonl").read_text().splitlines()]
    assert [r["output"] for r in record] == ["face.png"] and record[0]["status"] == "ok"


# -- geometry -------------------------------------------------------------------------------------
def test_alignment_undoes_rotation(face_jpg, dlib_backend):
    """The kit's face rotated 20 degrees off-centre aligns like the upright one."""
    rotated = face_jpg.parent / "rotated_face.png"
    outs, quads = [], []
    for path in (face_jpg, rotated):
        img = Image.open(path).convert("RGB")
        (face,) = dlib_backend.detect(np.asarray(img), source=path)
        out, plan = align_face(img, face.landmarks, 256, 1)
        outs.append(np.asarray(out, dtype=np.int16))
        quads.append(plan.quad_source)
    angle = [math.degrees(math.atan2(*(q[3] - q[0])[::-1])) for q in quads]
    assert abs(abs(angle[1] - angle[0]) - 20) < 1.5, angle
    centre = slice(48, 208)
    mean = float(np.abs(outs[0][centre, centre] - outs[1][centre, centre]).mean())
    assert mean < 8, f"aligned faces differ by {mean:.1f} grey levels on average"
    unaligned = np.asarray(Image.open(rotated).convert("RGB").resize((256, 256)), dtype=np.int16)
    assert np.abs(outs[0][centre, centre] - unaligned[centre, centre]).mean() > 3 * mean  # the check can fail


def test_plan_follows_the_face_when_the_photo_is_shifted(case):
    """Translating photo and landmarks together leaves the quad's shape and the output's frame unchanged."""
    lm = case["landmarks_0"].astype(np.float64)
    a = plan_alignment(lm, (1024, 1024), 256, 1)
    b = plan_alignment(lm + [300, 200], (1324, 1224), 256, 1)
    assert np.allclose(b.quad_source - a.quad_source, [300, 200])
    assert np.allclose(b.source_from_output()[:, :2], a.source_from_output()[:, :2])


def test_large_faces_are_shrunk_before_resampling(case):
    """A face many times the output size is first downscaled by an integer factor (FFHQ's shrink step)."""
    lm = case["landmarks_0"].astype(np.float64) * 4
    plan = plan_alignment(lm, (4096, 4096), 256, 1)
    assert plan.shrink == 7 and plan.resized == (585, 585)
    img = Image.new("RGB", (4096, 4096), (90, 120, 150))
    out = apply_alignment(img, plan)
    assert out.size == (256, 256) and np.abs(np.asarray(out, dtype=int) - [90, 120, 150]).max() <= 1


def test_bad_landmarks_are_refused():
    with pytest.raises(AlignError):
        face_quad(np.zeros((5, 2)))
    with pytest.raises(AlignError):
        face_quad(np.full((68, 2), np.nan))
    with pytest.raises(AlignError):
        face_quad(np.zeros((68, 2)))


# -- batch behaviour ------------------------------------------------------------------------------
def test_no_face_and_tiny_and_broken_files_fail_alone(astronaut_head, tmp_path):
    """Landscape, tiny image and a broken file: one line each, the face still aligned, exit 1."""
    dlib_or_skip()
    data = pytest.importorskip("skimage.data")
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    Image.fromarray(astronaut_head).save(photos / "sub" / "astronaut.png")
    Image.fromarray(data.coffee()).save(photos / "coffee.jpg")
    Image.fromarray(astronaut_head).resize((12, 12)).save(photos / "tiny.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    res = run("align", photos, "-o", tmp_path / "out", "--size", 128, "--supersample", 1, "--detector", "dlib")
    assert res.exit_code == 1, res.output
    assert (tmp_path / "out" / "sub" / "astronaut.png").is_file() and (tmp_path / "out" / "sub" / "astronaut.json").is_file()
    assert Image.open(tmp_path / "out" / "sub" / "astronaut.png").size == (128, 128)
    records = {r["source"]: r for r in map(json.loads, (tmp_path / "out" / "manifest.jsonl").read_text().splitlines())}
    assert records[str(photos / "coffee.jpg")]["status"] == "failed"
    assert "no face found" in records[str(photos / "coffee.jpg")]["error"]
    assert "no face found" in records[str(photos / "tiny.png")]["error"]
    assert records[str(photos / "broken.jpg")]["status"] == "failed"
    assert records[str(photos / "sub" / "astronaut.png")]["status"] == "ok"
    assert not (tmp_path / "out" / "coffee.png").exists()


@pytest.fixture(scope="module")
def two_faces(astronaut_head, tmp_path_factory) -> Path:
    """Two copies of a face side by side: a small one on the left, a larger one on the right."""
    small = Image.fromarray(astronaut_head).resize((200, 200), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (520, 300), (128, 128, 128))
    canvas.paste(small, (0, 50))
    canvas.paste(Image.fromarray(astronaut_head), (240, 10))
    path = tmp_path_factory.mktemp("two") / "pair.png"
    canvas.save(path)
    return path


def test_largest_face_by_default(two_faces, tmp_path):
    dlib_or_skip()
    res = run("align", two_faces, "-o", tmp_path, "--size", 64, "--supersample", 1, "--detector", "dlib")
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "pair.json").read_text())
    assert info["faces_found"] == 2 and info["faces_written"] == 1
    assert np.array(info["quad"])[:, 0].mean() > 260  # the right, larger face
    assert not (tmp_path / "pair_0.png").exists()


def test_all_faces_left_to_right(two_faces, tmp_path):
    dlib_or_skip()
    res = run("align", two_faces, "-o", tmp_path, "--size", 64, "--supersample", 1, "--detector", "dlib", "--all-faces")
    assert res.exit_code == 0, res.output
    infos = [json.loads((tmp_path / f"pair_{k}.json").read_text()) for k in range(2)]
    assert [i["face"] for i in infos] == [0, 1] and all(i["faces_written"] == 2 for i in infos)
    xs = [np.array(i["quad"])[:, 0].mean() for i in infos]
    assert xs[0] < 240 < xs[1]
    assert infos[0]["qsize"] < infos[1]["qsize"]
    a, b = pixels(tmp_path / "pair_0.png"), pixels(tmp_path / "pair_1.png")
    assert np.abs(a - b).mean() < 25  # the same face, aligned to the same frame
    assert not (tmp_path / "pair.png").exists()
    before = (tmp_path / "pair_1.png").stat().st_mtime_ns
    res = run("align", two_faces, "-o", tmp_path, "--size", 64, "--supersample", 1, "--detector", "dlib", "--all-faces")
    assert res.exit_code == 0 and (tmp_path / "pair_1.png").stat().st_mtime_ns == before
    (tmp_path / "pair_1.png").unlink()  # an interrupted earlier run: redone
    res = run("align", two_faces, "-o", tmp_path, "--size", 64, "--supersample", 1, "--detector", "dlib", "--all-faces")
    assert res.exit_code == 0 and (tmp_path / "pair_1.png").is_file()


def test_exif_orientation_is_applied_before_detection(astronaut_head, tmp_path):
    """A phone photo stored sideways with an EXIF orientation tag aligns like the upright photo."""
    dlib_or_skip()
    Image.fromarray(astronaut_head).save(tmp_path / "upright.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(np.rot90(astronaut_head).copy()).save(tmp_path / "sideways.jpg", quality=95, exif=exif.tobytes())
    res = run("align", tmp_path / "upright.jpg", tmp_path / "sideways.jpg", "-o", tmp_path / "out",
              "--size", 128, "--supersample", 1, "--detector", "dlib")
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "out" / "sideways.json").read_text())
    assert info["orientation"] == 6 and info["source_size"] == [280, 280]
    up = json.loads((tmp_path / "out" / "upright.json").read_text())
    assert np.abs(np.array(info["landmarks"]) - np.array(up["landmarks"])).mean() < 2
    mean, _ = diff_stats(pixels(tmp_path / "out" / "upright.png"), pixels(tmp_path / "out" / "sideways.png"))
    assert mean < 4


@pytest.mark.slow
def test_parallel_workers_write_the_same_files(astronaut_head, two_faces, tmp_path):
    dlib_or_skip()
    data = pytest.importorskip("skimage.data")
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(astronaut_head).save(photos / "a.png")
    Image.fromarray(data.coffee()).save(photos / "b.png")
    Image.open(two_faces).save(photos / "c.png")
    common = ["--size", 64, "--supersample", 1, "--detector", "dlib"]
    serial = run("align", photos, "-o", tmp_path / "serial", *common)
    parallel = run("align", photos, "-o", tmp_path / "parallel", *common, "--workers", 2)
    assert serial.exit_code == parallel.exit_code == 1, parallel.output
    for name in ("a.png", "c.png"):
        assert np.array_equal(pixels(tmp_path / "serial" / name), pixels(tmp_path / "parallel" / name))
    assert not (tmp_path / "parallel" / "b.png").exists()
    assert "no face found" in parallel.output


# -- landmark backends ----------------------------------------------------------------------------
def _refused_url(port_file: str) -> str:
    """A URL nothing listens on: the connection is refused at once (a real network failure)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{port_file}"


@pytest.fixture
def offline_fan(monkeypatch, tmp_path):
    """face-alignment with an empty weight cache and unreachable weight URLs."""
    from e4ecli import landmarks

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(landmarks, "FAN_URL", _refused_url("2DFAN4-11f355bf06.pth.tar"))
    monkeypatch.setattr(landmarks, "S3FD_URL", _refused_url("s3fd-619a316812.pth"))


def test_default_detector_falls_back_to_dlib_with_one_line(offline_fan, astronaut_head, tmp_path):
    dlib_or_skip()
    Image.fromarray(astronaut_head).save(tmp_path / "astro.png")
    res = run("align", tmp_path / "astro.png", "-o", tmp_path / "out", "--size", 64, "--supersample", 1)
    assert res.exit_code == 0, res.output
    notes = [line for line in res.output.splitlines() if "face-alignment unavailable" in line]
    assert len(notes) == 1 and "using dlib instead" in notes[0], res.output
    assert "downloading" not in res.output  # nothing was downloaded
    assert json.loads((tmp_path / "out" / "astro.json").read_text())["detector"] == "dlib"
    leftovers = [p for p in (tmp_path / "torch_home").rglob("*.pth*") if p.suffix != ".lock"]  # hub.fetch's lock stays
    assert not leftovers  # no partial weight file left in the cache


def test_no_detector_at_all_is_a_clear_error(offline_fan, face_jpg, tmp_path, monkeypatch):
    from e4ecli import landmarks

    monkeypatch.setenv(landmarks.DLIB_PREDICTOR_ENV, str(tmp_path / "missing.dat"))
    res = run("align", face_jpg, "-o", tmp_path / "out")
    assert res.exit_code == 2
    assert "no landmark detector can run" in res.output
    assert "torch_home" in res.output and "missing.dat" in res.output  # where to place the files
    res = run("align", face_jpg, "-o", tmp_path / "out", "--detector", "dlib")
    assert res.exit_code == 2 and "missing.dat" in res.output


def test_dlib_predictor_is_found_without_importing_its_package():
    dlib_or_skip()
    from e4ecli.landmarks import DLIB_PREDICTOR_NAME, dlib_predictor_path

    sys.modules.pop("face_recognition_models", None)
    path = dlib_predictor_path()
    assert path is not None and path.name == DLIB_PREDICTOR_NAME and path.is_file()
    assert "face_recognition_models" not in sys.modules


class _DlibAsFan:
    """A stand-in for face_alignment.FaceAlignment with its API (detector boxes [x0, y0, x1, y1, score],
    float32 landmarks), computing with dlib: used where the FAN weights cannot be downloaded."""

    def __init__(self, dlib_backend):
        import dlib

        self.dlib, self.backend, self.seen = dlib, dlib_backend, []
        self.face_detector = self

    def detect_from_image(self, image):
        self.seen.append(image.shape)
        rects, scores, _ = self.backend._detector.run(image, 1, 0)
        return [np.array([r.left(), r.top(), r.right(), r.bottom(), s], dtype=np.float32) for r, s in zip(rects, scores)]

    def get_landmarks_from_image(self, image, detected_faces=None, return_bboxes=False):
        out = []
        for b in detected_faces:
            rect = self.dlib.rectangle(*(int(round(float(v))) for v in b[:4]))
            out.append(np.array([[p.x, p.y] for p in self.backend._predictor(image, rect).parts()], dtype=np.float32))
        return (out or None), None, detected_faces


def _fan_weights_cached() -> bool:
    from e4ecli.landmarks import fan_weight_files

    return all(p.is_file() for _, p in fan_weight_files())


def test_face_alignment_adapter(face_jpg, dlib_backend, monkeypatch):
    """FanLandmarks turns face-alignment's output into faces, searching big photos at reduced size."""
    from e4ecli import landmarks
    from e4ecli.landmarks import FanLandmarks

    monkeypatch.setattr(landmarks, "DETECT_MAX_SIDE", 640)  # face.jpg (1024 px) counts as big
    big = pixels(face_jpg).astype(np.uint8)
    if _fan_weights_cached():
        fan = FanLandmarks("cpu", download=False)
    else:  # the network's weights cannot be downloaded here: a stand-in with its API
        fan = FanLandmarks(model=_DlibAsFan(dlib_backend))
    faces = fan.detect(big)
    assert len(faces) == 1 and faces[0].landmarks.shape == (68, 2) and faces[0].landmarks.dtype == np.float64
    reference = dlib_backend.detect(big)[0]
    assert np.abs(faces[0].landmarks - reference.landmarks).mean() < (6 if _fan_weights_cached() else 1e-9)
    x0, y0, x1, y1 = faces[0].box
    assert 150 < x0 < 320 and 700 < x1 < 880 and 280 < y0 < 420 and 820 < y1 < 980  # full-size coordinates
    if isinstance(fan._fa, _DlibAsFan):
        assert fan._fa.seen == [(640, 640, 3)]
    assert fan.detect(np.zeros((64, 64, 3), np.uint8)) == []


@pytest.mark.skipif(not _fan_weights_cached(), reason="face-alignment weights not in the torch hub cache (offline)")
def test_face_alignment_backend_aligns_like_dlib(face_jpg, case, tmp_path):
    res = run("align", face_jpg, "-o", tmp_path, "--size", 256, "--supersample", 1, "--device", "cpu")
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "face.json").read_text())
    assert info["detector"] == "face-alignment"
    assert np.abs(np.array(info["landmarks"]) - case["landmarks_0"]).mean() < 6
    assert diff_stats(pixels(tmp_path / "face.png"), case["aligned256_0"])[0] < 12


# -- e4e invert --align ---------------------------------------------------------------------------

@pytest.mark.slow
def test_invert_align_end_to_end(e4e_64, astronaut_head, tmp_path):
    """invert --align: latent plus the sidecar next to it; a photo without a face fails alone."""
    dlib_or_skip()
    data = pytest.importorskip("skimage.data")
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(astronaut_head).save(photos / "astro.png")
    Image.fromarray(data.coffee()).save(photos / "coffee.png")
    res = run("invert", photos, "-o", tmp_path / "lat", "--align", "--save-aligned", "--detector", "dlib", "--checkpoint", e4e_64, "--device", "cpu")
    assert res.exit_code == 1, res.output
    assert "no face found" in res.output and not (tmp_path / "lat" / "coffee.npy").exists()
    assert np.load(tmp_path / "lat" / "astro.npy").shape == (10, 512)
    info = json.loads((tmp_path / "lat" / "astro.json").read_text())
    assert info["output"] == "astro.npy" and info["output_size"] == 256 and info["transform_size"] == 256
    assert info["source"] == str((photos / "astro.png").resolve()) and info["detector"] == "dlib"
    assert info["aligned_image"] == "astro.aligned.png" and Image.open(tmp_path / "lat" / "astro.aligned.png").size == (256, 256)


def test_invert_align_feeds_the_encoder_what_align_writes(astronaut_head, dlib_backend, tmp_path):
    """The in-memory alignment of invert --align equals `e4e align --size 256 --supersample 1` (e4e's recipe)."""
    from e4ecli.domains import domain_for
    from e4ecli.pipelines.align import FaceAligner
    from e4ecli.pipelines.invert import _Preprocess

    Image.fromarray(astronaut_head).save(tmp_path / "astro.png")
    res = run("align", tmp_path / "astro.png", "-o", tmp_path / "aligned", "--size", 256, "--supersample", 1, "--detector", "dlib")
    assert res.exit_code == 0, res.output
    domain = domain_for("ffhq_encode")
    x, info, face = _Preprocess(domain, FaceAligner(dlib_backend, 256, 1), keep_face=True)(tmp_path / "astro.png")
    expected = domain.preprocess(Image.open(tmp_path / "aligned" / "astro.png"))
    assert x.shape == (3, 256, 256) and bool((x == expected).all())
    assert np.array_equal(np.asarray(face), np.asarray(Image.open(tmp_path / "aligned" / "astro.png")))  # what --save-aligned keeps
    assert info["quad"] == json.loads((tmp_path / "aligned" / "astro.json").read_text())["quad"]


def test_help_has_examples():
    res = run("align", "--help")
    assert res.exit_code == 0 and "--all-faces" in res.output and "e4e align ./photos" in res.output
    assert "e4ecli[dlib]" in res.output  # the install hint survives rich markup
    res = run("invert", "--help")
    assert "--align" in res.output and "--detector" in res.output


def test_all_faces_refuses_names_that_would_collide(tmp_path):
    """photo.jpg's faces become photo_0.png, photo_1.png: a photo_1.jpg beside it would be overwritten."""
    for name in ("photo.png", "photo_1.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    res = run("align", tmp_path, "-o", tmp_path / "out", "--all-faces", "--detector", "dlib")
    assert res.exit_code == 2 and "photo_1.png would overwrite the faces of" in res.output
    assert not (tmp_path / "out").exists()
