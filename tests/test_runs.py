"""The batch-run layer used as a library (no typer, no rich): the same skip / manifest / lock behaviour
as `e4e`, reported as events and typed problems."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from editing_kit import g64, g64_path, wplus64  # noqa: F401
from e4ecli.files.latents import LATENT_EXTENSIONS
from e4ecli.files.provenance import Settings
from e4ecli.pipelines.render import render
from e4ecli.runs import (BatchRun, Finished, ItemDone, ItemFailed, ItemSkipped, NameClash, NoInputs, Note, OutputLocked,
                         OutputsClash, OutputUnusable, OverwritesInput, Started)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def latents(tmp_path, wplus64):
    root = tmp_path / "latents"
    root.mkdir()
    np.save(root / "a.npy", wplus64[0])
    np.save(root / "b.npy", wplus64[1])
    return root


def render_run(g64, inputs, out, size=32, **kw):
    """One library render run; returns its events."""
    with BatchRun.prepare("render", inputs, out, LATENT_EXTENSIONS, suffixes=[".png"], **kw) as run:
        finished = run.start(Settings("render", checkpoint="g64", precision="fp32", size=size), "g64")
        return list(run.execute(render(run.items, g64, out, device=torch.device("cpu"), size=size, finished=finished)))


def kinds(events) -> list[str]:
    return [type(e).__name__ for e in events]


def test_a_library_run_records_skips_and_redoes_like_the_cli(tmp_path, latents, g64):
    out = tmp_path / "out"
    events = render_run(g64, [latents, tmp_path / "gone.npy"], out)
    assert isinstance(events[0], Started) and events[0].total == 2 and events[0].missing == ((str(tmp_path / "gone.npy"), "no such file or folder"),)
    assert kinds(events[1:]) == ["ItemDone", "ItemDone", "Finished"]
    fin = events[-1]
    assert (fin.done, fin.skipped, fin.failed, fin.ok) == (2, 0, 1, False)  # the missing input counts as failed
    lines = {r["output"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert lines["a.png"]["status"] == "ok" and lines["a.png"]["settings"]["size"] == 32 and len(lines["a.png"]["fingerprint"]) == 16
    assert any(r["status"] == "failed" and r["source"].endswith("gone.npy") for r in lines.values())
    made = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert sorted(made) == ["a.png", "b.png"]

    # the same run again: nothing redone, nothing written
    again = render_run(g64, [latents], out)
    assert kinds(again) == ["Started", "ItemSkipped", "ItemSkipped", "Finished"] and again[-1].ok
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == made

    # another setting: both redone, and a note says why
    other = render_run(g64, [latents], out, size=16)
    assert kinds(other) == ["Started", "Note", "ItemDone", "ItemDone", "Finished"]
    assert other[1] == Note("redoing outputs an earlier run made differently: size (2)")
    assert all(e.result.outputs[0].stat().st_mtime_ns != made[e.result.outputs[0].name] for e in other if isinstance(e, ItemDone))


def test_a_bad_input_fails_alone(tmp_path, latents, g64):
    (latents / "bad.npy").write_bytes(b"not a latent")
    events = render_run(g64, [latents], tmp_path / "out")
    failed = [e for e in events if isinstance(e, ItemFailed)]
    assert [Path(e.source).name for e in failed] == ["bad.npy"] and failed[0].error
    assert events[-1].done == 2 and events[-1].failed == 1 and not events[-1].ok


def test_problems_are_typed_and_create_nothing(tmp_path, latents):
    out = tmp_path / "out"
    with pytest.raises(NoInputs) as e:
        BatchRun.prepare("render", [tmp_path / "none"], out, LATENT_EXTENSIONS)
    assert e.value.missing == [(str(tmp_path / "none"), "no such file or folder")]
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputUnusable, match="is a file, not a folder"):
        BatchRun.prepare("render", [latents], tmp_path / "file", LATENT_EXTENSIONS)
    (tmp_path / "other").mkdir()
    np.save(tmp_path / "other" / "a.npy", np.zeros((10, 512), np.float32))
    with pytest.raises(NameClash) as e:
        BatchRun.prepare("render", [latents, tmp_path / "other"], out, LATENT_EXTENSIONS)
    assert list(e.value.clashes) == ["a"]
    np.save(latents / "a_0.npy", np.zeros((10, 512), np.float32))
    with pytest.raises(OutputsClash) as e:  # a -> a_0.png, a.png; a_0 -> a_0_0.png, a_0.png
        BatchRun.prepare("render", [latents], out, LATENT_EXTENSIONS, suffixes=["_0.png", ".png"])
    assert [p.name for p, _ in e.value.clashes] == ["a_0.png"]
    with pytest.raises(OverwritesInput):
        BatchRun.prepare("render", [latents], latents, LATENT_EXTENSIONS, suffixes=[".npy"])
    assert not out.exists()


def test_the_folder_is_locked_against_another_process(tmp_path, latents):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[2]);"
                               "from e4ecli.runs import BatchRun; BatchRun.prepare('x', [sys.argv[3]], sys.argv[1], {'.npy'});"
                               "print('held', flush=True); time.sleep(60)", str(out), str(ROOT), str(latents)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputLocked):
            BatchRun.prepare("render", [latents], out, LATENT_EXTENSIONS)
    finally:
        holder.kill()
        holder.wait()


def test_the_run_layer_loads_no_cli():
    code = ("import sys; import e4ecli.runs; "
            "print(sorted(m for m in ('typer', 'rich', 'torch', 'e4ecli.cli') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}).stdout
    assert out.strip() == "[]"


def test_finished_counts_every_result():
    fin = Finished("x", Path("."), {"ok": 1, "skipped": 2})
    assert (fin.done, fin.skipped, fin.failed, fin.ok) == (1, 2, 0, True)
    assert not Finished("x", Path("."), {"ok": 1}, stopped="no space left on device").ok
    assert ItemSkipped  # the event types are importable from e4ecli.runs


# -- the invert pipeline as an object -------------------------------------------------------------
@pytest.fixture(scope="module")
def e4e_photos(kit_weights, tmp_path_factory):
    from conftest import e4e_64_with_photos

    return e4e_64_with_photos(kit_weights, tmp_path_factory.mktemp("photos"), seed=3)


def test_invert_pipeline_from_a_checkpoint_runs_under_the_run_layer(tmp_path, e4e_photos):
    from e4ecli.files.images import IMAGE_EXTENSIONS
    from e4ecli.pipelines.invert import InvertConfig, InvertPipeline

    ckpt_path, photos = e4e_photos
    pipe = InvertPipeline.from_checkpoint(ckpt_path, InvertConfig(stage=0, save_reconstructions=True, size=32))
    assert pipe.suffixes == [".npy", ".png"]
    out = tmp_path / "out"

    def once():
        with BatchRun.prepare("invert", [photos], out, IMAGE_EXTENSIONS, suffixes=pipe.suffixes) as run:
            return run.run(pipe(run.items, out, finished=run.start(pipe.settings("e4e64"), "e4e64")))

    first = once()
    assert (first.done, first.failed) == (2, 0)
    w = np.load(out / "a.npy")
    assert w.shape == (pipe.ckpt.generator.n_latent, 512)
    assert np.allclose(w, w[0])  # stage 0: pure W, every style the same code
    assert json.loads((out / "manifest.jsonl").read_text().splitlines()[0])["settings"]["stage"] == 0
    assert once().skipped == 2


def test_invert_pipeline_refuses_what_it_cannot_run(g64_path, e4e_photos):
    from e4ecli.pipelines.invert import InvertConfig, InvertPipeline, NoEncoder, StageError

    with pytest.raises(NoEncoder, match="holds only a generator"):
        InvertPipeline.from_checkpoint(g64_path)
    with pytest.raises(StageError, match="out of range"):
        InvertPipeline.from_checkpoint(e4e_photos[0], InvertConfig(stage=99))


# -- a single-output job: `e4e video` as a library -------------------------------------------------------
def video_job(g64, keyframes, target, frames, **kw):
    """`e4e video`'s job through the run layer: (up to date before anything rendered, events)."""
    from e4ecli.files.provenance import content_id
    from e4ecli.pipelines.video import interpolation_latents, render_frames, write_video
    from e4ecli.runs import OutputRun

    keys = torch.from_numpy(np.stack([np.load(k) for k in keyframes]))
    with OutputRun.prepare("video", target, keyframes, **kw) as job:
        up = job.start(Settings("video", checkpoint="g64", frames=frames, fps=8, keyframes=[content_id(k) for k in keys]), "g64")

        def make(tmp: Path) -> dict:
            write_video(tmp, render_frames(g64.generator, g64.domain, interpolation_latents(keys, frames), 2, 16), 8)
            return {"frames": frames}

        return up, list(job.execute(make))


def test_a_single_output_job_skips_redoes_and_locks_like_the_cli(tmp_path, latents, g64):
    import imageio.v3 as iio

    from e4ecli.runs import UnrecordedOutput

    keyframes = [latents / "a.npy", latents / "b.npy"]
    target = tmp_path / "clips" / "v.gif"
    up, events = video_job(g64, keyframes, target, 3)
    assert not up and kinds(events) == ["Started", "ItemDone", "Finished"] and events[-1].ok
    assert iio.imread(target, index=None).shape[0] == 3 and sorted(p.name for p in target.parent.iterdir()) == ["manifest.jsonl", "v.gif"]
    line = json.loads((target.parent / "manifest.jsonl").read_text())
    assert (line["output"], line["status"], line["frames"], line["settings"]["frames"]) == ("v.gif", "ok", 3, 3)
    made = target.stat().st_mtime_ns

    up, events = video_job(g64, keyframes, target, 3)  # the same settings: nothing rendered, nothing written
    assert up and kinds(events) == ["Started", "ItemSkipped", "Finished"] and target.stat().st_mtime_ns == made

    up, events = video_job(g64, keyframes, target, 4)  # another setting: redone, and a note says why
    assert not up and kinds(events) == ["Started", "Note", "ItemDone", "Finished"]
    assert events[1] == Note(f"redoing {target}: it was made differently (frames (1))")
    assert iio.imread(target, index=None).shape[0] == 4

    other = tmp_path / "other.gif"  # a file no run recorded is not replaced unless asked
    other.write_bytes(b"mine")
    with pytest.raises(UnrecordedOutput, match="has no record of how it was made"):
        video_job(g64, keyframes, other, 2)
    assert other.read_bytes() == b"mine"
    assert video_job(g64, keyframes, other, 2, overwrite=True)[1][-1].done == 1
    with pytest.raises(OverwritesInput):
        video_job(g64, keyframes, keyframes[0], 2, require_record=False)

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[2]);"
                               "from e4ecli.files.guard import lock_output; lock_output(sys.argv[1]);"
                               "print('held', flush=True); time.sleep(60)", str(target.parent), str(ROOT)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputLocked):
            video_job(g64, keyframes, target, 5)
    finally:
        holder.kill()
        holder.wait()
    assert iio.imread(target, index=None).shape[0] == 4
