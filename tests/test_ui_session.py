"""`e4e ui`'s callbacks without a browser: a 64 px e4e from the kit, the kit's photo aligned with dlib, the kit's
published directions. What each control does, the one-line errors, the upload limits and the temporary folder."""
from __future__ import annotations

import os
import shlex
import shutil
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import KIT, kit_or_skip, run, write_e4e_64
from editing_kit import vitb32_file, write_relevance  # noqa: F401  (fixture)
from e4ecli.ui import callbacks as cb
from e4ecli.ui.command import View, parse_command, to_command
from e4ecli.ui.session import UIError

pytest.importorskip("dlib", reason="the page aligns photos with dlib here (pip install 'e4ecli[dlib]')")


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    kit_or_skip()
    import weights

    from e4ecli.hub.checkpoints import file_id, load_checkpoint
    from e4ecli.ui.session import Session

    root = tmp_path_factory.mktemp("ui")
    ck = write_e4e_64(weights, root / "e4e_64.pt")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("E4E_DIRECTIONS", str(KIT / "directions"))
        mp.setenv("E4E_HOME", str(root / "home"))
        s = Session(load_checkpoint(ck), f"e4e_64.pt:{file_id(ck)}", str(ck), torch.device("cpu"), root / "session",
                    inputs=[root / "listed"], detector="dlib", preview_size=32)
    yield s
    s.close()


@pytest.fixture(scope="module")
def opened(session):
    """The kit's photo uploaded, aligned and inverted (done once)."""
    values = [0.0] * len(session.sliders)
    result = cb.open_input(session, str(KIT / "photos" / "face.jpg"), cb.initial_view(session), None, "none", 30, values, False, 0.1)
    assert result[-1] == "", result[-1]
    return result


def values_with(session, **strengths):
    return [strengths.get(s.spec.replace(":", "_"), 0.0) for s in session.sliders]


def test_the_page_offers_the_published_directions_and_sefa(session):
    specs = [s.spec for s in session.sliders]
    assert specs[:3] == ["age", "smile", "pose"] and [s for s in specs if s.startswith("sefa:")] == [f"sefa:{k}" for k in range(5)]
    # lipstick moves style 10, which a 64 px generator (10 styles) lacks: listed as not offered, with the reason
    assert [n for n in session.unavailable if n.startswith("lipstick:") and "style 10" in n] and "white_hair" in specs
    age = session.slider("age")
    assert (age.low, age.high) == (-3.0, 3.0)


def test_a_photo_opens_aligned_with_its_reconstruction_and_the_invert_command(session, opened):
    o, view, crop, recon, distortion, preview, command, status = opened
    assert crop.shape == (256, 256, 3) and recon.shape == (64, 64, 3) and preview.shape == (32, 32, 3)
    assert "MSE" in distortion and "PSNR" in distortion
    assert o.sidecar is not None and o.latent.shape == (10, 512)
    assert command.splitlines()[0].startswith("e4e invert face.jpg -o latents/ --checkpoint ") and "--align" in command
    # the latent is the one `e4e invert` writes for this photo: the page ran the same pipeline
    assert np.allclose(np.load(o.folder / "face.npy"), o.latent.numpy())


def test_moving_a_slider_changes_the_preview_and_the_command(session, opened):
    o, view = opened[0], opened[1]
    _, still, _, _ = cb.update(session, o, view, values_with(session), False, 0.1)
    v2, moved, command, status = cb.update(session, o, view, values_with(session, age=3.0, sefa_1=-5.0), False, 0.1)
    assert status == "" and v2.edits == (("age", 3.0), ("sefa:1", -5.0))
    assert command.splitlines()[-1].endswith("-d age -s 3 -d sefa:1 -s -5")
    assert np.abs(moved.astype(int) - still.astype(int)).mean() > 1
    full = cb.update(session, o, view, values_with(session, age=3.0, sefa_1=-5.0), False, 0.1, full=True)[1]
    assert full.shape == (64, 64, 3)
    pasted = cb.update(session, o, view, values_with(session, age=3.0), True, 0.1)
    assert pasted[3] == "" and pasted[1].shape[:2] == (1024, 1024) and "--paste-back --aligned latents/" in pasted[2]


def test_the_fast_preview_is_the_generator_stopped_early(session, opened):
    gen = session.generator
    w = opened[0].latent[None]
    with torch.inference_mode():
        coarse = gen.synthesis(w, max_size=32)
        assert coarse.shape[-1] == 32 and torch.equal(gen.synthesis(w, max_size=64), gen.synthesis(w))


def test_pasted_settings_reproduce_the_view(session, opened):
    o, view = opened[0], opened[1]
    want, _, command, _ = cb.update(session, o, view, values_with(session, smile=-1.5, sefa_0=7.25), True, 0.3)
    r = cb.load_settings(session, command, o, replace_edits(view))
    new_o, new_view, values, stage, refine, steps, paste, feather = r[:8]
    assert r[-1] == "" and new_view == want and new_o is o
    assert values == values_with(session, smile=-1.5, sefa_0=7.25) and paste and feather == 0.3 and refine == "none"
    assert r[-2] == command


def replace_edits(view: View) -> View:
    from dataclasses import replace

    return replace(view, edits=(), paste_back=False)


def test_settings_with_another_dial_invert_the_photo_again(session, opened):
    o, view = opened[0], opened[1]
    r = cb.load_settings(session, to_command(View(source="face.jpg", stage=0, edits=(("pose", 1.0),))), o, view)
    new_o, new_view, stage = r[0], r[1], r[3]
    assert r[-1] == "" and new_o is not o and new_view.stage == 0 and stage == 0
    assert not torch.equal(new_o.latent, o.latent)
    assert torch.allclose(new_o.latent, new_o.latent[:1].expand_as(new_o.latent))  # stage 0: one code for every style


def test_refining_reports_its_steps_and_writes_the_refine_options(session, opened):
    o, view = opened[0], opened[1]
    steps = []
    text = to_command(View(source="face.jpg", refine="w", refine_steps=2, edits=(("age", 1.0),)))
    r = cb.load_settings(session, text, o, view, on_step=lambda step, loss: steps.append(step))
    assert r[-1] == "" and steps == [0, 1] and r[1].refine == "w" and (r[4], r[5]) == ("w", 2)
    assert "--refine w --refine-steps 2" in r[-2] and torch.allclose(r[0].latent, r[0].latent[:1].expand_as(r[0].latent))


@pytest.mark.parametrize("text, reason", [("e4e edit a.npy -o e/ -d lipstick -s 3", "not a direction on this page"),
                                          ("e4e edit a.npy -o e/ -d age -s 30", "outside the page's range"),
                                          ("rm -rf /", "no e4e command")])
def test_settings_the_page_cannot_show_leave_it_as_it_is(session, opened, text, reason):
    o, view = opened[0], opened[1]
    r = cb.load_settings(session, text, o, view)
    assert r[0] is o and r[1] == view and reason in r[-1] and "\n" not in r[-1]


def test_downloads_write_the_png_latent_pasted_photo_and_sweep(session, opened):
    from PIL import Image

    o, view = opened[0], opened[1]
    view = cb.update(session, o, view, values_with(session, age=2.0), True, 0.1)[0]
    files, view2, command, status = cb.make_downloads(session, o, view, "age")
    assert status == "" and [os.path.basename(f) for f in files] == ["face.png", "face.npy", "face.pasted.png", "face_sweep.gif"]
    assert np.allclose(np.load(files[1]), session.edited(o, (("age", 2.0),)).numpy())
    assert Image.open(files[3]).n_frames > 8 and view2.sweep == ("age", 0.0, 2.0, 16)
    assert command.splitlines()[-1] == "e4e video latents/face.npy -o face_sweep.gif --checkpoint " + \
        f"{session.checkpoint} -d age -s 0:2 -n 16"
    assert all(f.startswith(str(session.workdir)) for f in files)


def test_bad_inputs_are_one_line_on_the_page(session, tmp_path, monkeypatch):
    import e4ecli.ui.session as ui_session

    blank = [0.0] * len(session.sliders)
    view = cb.initial_view(session)

    def status(path):
        r = cb.open_input(session, str(path), view, None, "none", 30, blank, False, 0.1)
        assert r[0] is None and "\n" not in r[-1]
        return r[-1]

    (tmp_path / "notes.jpg").write_text("not a picture")
    assert status(tmp_path / "notes.jpg") == "⚠ notes.jpg: not an image (unrecognised format)"  # no temporary path shown
    np.save(tmp_path / "wrong.npy", np.zeros((3, 7), np.float32))
    assert status(tmp_path / "wrong.npy").startswith("⚠ wrong.npy:") and str(session.workdir) not in status(tmp_path / "wrong.npy")
    from PIL import Image

    Image.new("RGB", (300, 200), (90, 120, 200)).save(tmp_path / "sky.png")
    assert "no face found" in status(tmp_path / "sky.png")
    (tmp_path / "run.sh").write_text("echo hi")
    assert "upload a photo" in status(tmp_path / "run.sh")
    monkeypatch.setattr(ui_session, "MAX_UPLOAD_BYTES", 1000)
    assert "over the upload limit of" in status(KIT / "photos" / "face.jpg")
    monkeypatch.setattr(ui_session, "MAX_UPLOAD_BYTES", 20 << 20)
    monkeypatch.setattr(ui_session, "MAX_UPLOAD_PIXELS", 1000)
    assert "megapixels" in status(tmp_path / "sky.png")
    assert cb.update(session, None, view, values_with(session, age=1.0), False, 0.1)[3] == "open a photo or a latent first"


def test_uploads_stay_in_the_session_folder_whatever_their_name(session, tmp_path):
    shutil.copy(KIT / "photos" / "face.jpg", tmp_path / "face.jpg")
    for name in ("../../escape.jpg", "/etc/passwd.jpg", "..\\..\\win.jpg", "-rf .jpg", "..jpg", "a\x00b.jpg"):
        dest = session.accept_upload(tmp_path / "face.jpg", name)
        assert dest.resolve().is_relative_to(session.workdir.resolve()) and dest.is_file()
        assert not dest.name.startswith(("-", "."))
    with pytest.raises(UIError, match="upload a photo"):  # a name reduced to nothing has no image type
        session.accept_upload(tmp_path / "face.jpg", "...")


def test_listed_latents_open_with_paste_back_from_their_sidecar(session, opened):
    o = opened[0]
    listed = session.inputs[0]
    listed.mkdir(exist_ok=True)
    shutil.copy(o.folder / "face.npy", listed / "face.npy")
    shutil.copy(o.folder / "face.json", listed / "face.json")
    assert session.listed_files() == [str(listed / "face.npy")]
    r = cb.open_input(session, str(listed / "face.npy"), cb.initial_view(session), None, "none", 30, values_with(session, age=1.0), True, 0.1,
                      uploaded=False)
    assert r[-1] == "" and r[0].sidecar is not None and r[5].shape[:2] == (1024, 1024)
    assert parse_command(r[6]) == r[1] and r[6].startswith(f"e4e edit {listed / 'face.npy'} -o edited/")


def test_the_session_folder_is_removed_on_close(session, tmp_path):
    from e4ecli.ui.session import Session

    other = Session.__new__(Session)
    other.workdir = tmp_path / "w"
    (other.workdir / "0001").mkdir(parents=True)
    other.close()
    assert not other.workdir.exists()


def test_the_cli_checks_its_options_before_loading_anything(tmp_path):
    start = time.perf_counter()
    r = run("ui", "--host", "0.0.0.0", "--checkpoint", tmp_path / "none.pt")
    assert r.exit_code == 2 and "--allow-remote" in r.output
    r = run("ui", tmp_path / "missing", "--port", "70000")
    assert r.exit_code == 2 and "missing: no such file or folder" in r.output and "--port 70000" in r.output
    r = run("ui", "--relevance", tmp_path / "rel.npz", "--clip-weights", tmp_path / "clip.pt")
    assert r.exit_code == 2 and "--relevance" in r.output and "e4e directions styleclip" in r.output and "--clip-weights" in r.output
    assert time.perf_counter() - start < 5
    from e4ecli.cli.ui import is_local

    assert is_local("127.0.0.1") and is_local("::1") and is_local("localhost") and not is_local("0.0.0.0") and not is_local("192.168.1.4")


def test_a_generator_alone_opens_latents_and_refuses_photos_in_one_line(case_checkpoint, tmp_path, monkeypatch):
    from e4ecli.hub.checkpoints import file_id, load_checkpoint
    from e4ecli.ui.session import Session

    ck = case_checkpoint("stylegan2_64_cm1")
    monkeypatch.setenv("E4E_DIRECTIONS", str(KIT / "directions"))
    s = Session(load_checkpoint(ck), f"g.pt:{file_id(ck)}", str(ck), torch.device("cpu"), tmp_path / "s", preview_size=32)
    assert not s.can_invert and s.n_stages == 0
    blank = [0.0] * len(s.sliders)
    photo = cb.open_input(s, str(KIT / "photos" / "face.jpg"), cb.initial_view(s), None, "none", 30, blank, False, 0.1)
    assert photo[0] is None and "holds only a generator" in photo[-1]
    np.save(tmp_path / "w.npy", np.load(KIT / "cases" / "stylegan2_64_cm1.npz")["wplus"][0])
    r = cb.open_input(s, str(tmp_path / "w.npy"), cb.initial_view(s), None, "none", 30, [1.0] + blank[1:], False, 0.1)
    assert r[-1] == "" and r[3].shape == (64, 64, 3) and r[5].shape == (32, 32, 3)
    assert r[6] == f"e4e edit w.npy -o edited/ --checkpoint {ck} -d {s.sliders[0].spec} -s 1"
    s.close()


@pytest.fixture(scope="module")
def text_session(session, vitb32_file, tmp_path_factory):  # noqa: F811
    """The same model with seeded CLIP weights and a seeded relevance file: the page's text box."""
    from e4ecli.ui.session import Session

    root = tmp_path_factory.mktemp("uitext")
    rel = write_relevance(session.generator, root / "rel.npz")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("E4E_DIRECTIONS", str(KIT / "directions"))
        s = Session(session.ckpt, session.ident, session.checkpoint, torch.device("cpu"), root / "session", preview_size=32,
                    clip_weights=vitb32_file, relevance=rel)
    yield s
    s.close()


def test_the_text_box_renders_a_styleclip_edit_as_e4e_edit_does_and_round_trips(session, text_session, tmp_path, monkeypatch):
    assert not session.has_text and "--relevance FILE" in session.text_note and "\n" not in session.text_note
    s = text_session
    assert s.has_text and s.text_note == ""
    lat = tmp_path / "a.npy"
    np.save(lat, 0.5 * np.random.RandomState(0).randn(10, 512).astype(np.float32))
    r = cb.open_input(s, str(lat), cb.initial_view(s), None, "none", 30, values_with(s), False, 0.1, uploaded=False)
    assert r[-1] == "", r[-1]
    o, view = r[0], r[1]
    age = values_with(s, age=2.0)
    text = ("a face with lipstick", "", 0.05, 4.0)
    v2, image, command, status = cb.update(s, o, view, age, False, 0.1, full=True, text=text)
    assert status == "" and v2.edits == (("age", 2.0), ("text:a face with lipstick", 4.0))
    line = command.splitlines()[-1]
    assert "-d age -s 2 -d 'text:a face with lipstick' -s 4 --beta 0.05 --clip-weights " in line and "--relevance " in line
    age_only = cb.update(s, o, view, age, False, 0.1, full=True)[1]
    assert np.abs(image.astype(int) - age_only.astype(int)).mean() > 0.5  # the text edit moves the picture beyond the slider's
    # the command box's line renders the same picture with `e4e edit`
    monkeypatch.setenv("E4E_DIRECTIONS", str(KIT / "directions"))
    words = shlex.split(line)[1:]
    words[words.index("-o") + 1] = str(tmp_path / "out")
    result = run(*words, "--device", "cpu")
    assert result.exit_code == 0, result.output
    from e4ecli.files.images import load_rgb

    assert np.abs(np.asarray(load_rgb(tmp_path / "out" / "a.png")).astype(int) - image.astype(int)).max() <= 1
    # load settings reproduces the view and the text box's controls
    back = cb.load_settings(s, command, o, replace(view, edits=()))
    assert back[-1] == "" and back[1] == v2 and back[8] == text and back[-2] == command
    # a bad prompt or beta: one line on the page, no picture
    for bad, why in ((("smile\x1b[2J", "", 0.05, 4.0), "U+001B"), (("a face with lipstick", "", 0.99, 4.0), "largest usable value")):
        _, img, _, status = cb.update(s, o, view, values_with(s), False, 0.1, text=bad)
        assert img is None and why in status and "\n" not in status, status
