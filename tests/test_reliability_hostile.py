"""Reliability, round two (issue 17): no data loss on a full disk or a writer error, never writing over the
inputs, output-name collisions found before work starts, one writer per output folder, unusable -o, and
terminal safety for hostile file names. Real files, real subprocesses; a real full disk (a small tmpfs)
where this machine allows mounting one, else writers that raise ENOSPC.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "250", "OMP_NUM_THREADS": "1"}



def cli(*args, cwd=None, timeout=300, **kw):
    return subprocess.run([sys.executable, "-m", "e4ecli", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def gen(tmp_path_factory) -> Path:
    """A tiny 64 px generator (16 channels): renders in milliseconds."""
    import torch

    from e4ecli.models.stylegan2 import Generator

    torch.manual_seed(0)
    g = Generator(64, 512, n_mlp=2, channels={r: 16 for r in (4, 8, 16, 32, 64)})
    path = tmp_path_factory.mktemp("tiny") / "tiny_g64.pt"
    torch.save({"g_ema": g.state_dict(), "latent_avg": torch.zeros(512)}, path)
    return path


def latent(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.random.default_rng(seed).standard_normal((10, 512)).astype(np.float32))
    return path


def no_traceback(res) -> None:
    text = res.output if hasattr(res, "output") else res.stdout + res.stderr
    assert "Traceback" not in text, text
    if hasattr(res, "exception") and res.exception is not None:
        assert isinstance(res.exception, SystemExit), repr(res.exception)


# -- a full disk ----------------------------------------------------------------------------------
def _mount_tmpfs(where: Path, size: str) -> bool:
    if os.geteuid() != 0 or os.environ.get("E4E_TEST_FAKE_ENOSPC"):  # the variable tries the fallbacks here
        return False
    where.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True).returncode == 0


@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    """(folder, fill): `fill()` makes every further write into `folder` fail with ENOSPC -- a real full tmpfs
    where mounting is allowed (root with CAP_SYS_ADMIN: CI's container and this machine), otherwise writers
    that raise ENOSPC for paths under the folder."""
    disk = tmp_path / "disk"
    mounted = _mount_tmpfs(disk, "2m")
    disk.mkdir(exist_ok=True)

    def fill():
        if mounted:
            fd = os.open(disk / ".filler", os.O_WRONLY | os.O_CREAT)
            try:
                for chunk in (1 << 16, 1 << 10, 1):
                    try:
                        while True:
                            os.write(fd, b"\0" * chunk)
                    except OSError as e:
                        assert e.errno == errno.ENOSPC
            finally:
                os.close(fd)
            return
        real_write, real_open = os.write, open
        inside = str(disk.resolve())

        def write(fd, data):
            if os.path.realpath(f"/proc/self/fd/{fd}").startswith(inside) and len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(fd, data)

        from PIL import Image

        real_save = Image.Image.save

        def save(self, fp, *a, **k):
            if str(Path(fp).resolve()).startswith(inside):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_save(self, fp, *a, **k)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(Image.Image, "save", save)
        del real_open

    yield disk, fill, mounted
    if mounted:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_full_disk_keeps_the_previous_outputs_and_whole_manifest_lines(gen, tmp_path, full_disk):
    disk, fill, _ = full_disk
    src = tmp_path / "lat"
    for i in range(3):
        latent(src / f"a{i}.npy", i)
    out = disk / "out"
    first = run("render", src, "-o", out, "-c", gen, "--device", "cpu")
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in out.glob("*.png")}
    manifest_before = (out / "manifest.jsonl").read_text()
    fill()
    res = run("render", src, "-o", out, "-c", gen, "--device", "cpu", "--overwrite")
    no_traceback(res)
    assert res.exit_code == 1, res.output
    assert "no space left on device" in res.output.lower()
    failed = [ln for ln in res.output.splitlines() if ln.startswith("✗")]
    assert failed and all(".tmp" not in ln for ln in failed)  # the output is named, not the hidden temp file
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == before  # nothing replaced by a torn file
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp.png")]
    text = (out / "manifest.jsonl").read_text()
    assert text.startswith(manifest_before) or text == manifest_before
    for line in text.splitlines():
        json.loads(line)  # every line whole


def test_manifest_append_on_a_full_disk_is_one_line_and_cut_back(tmp_path, monkeypatch):
    from e4ecli.files.batch import Manifest, ManifestError, Record

    m = Manifest(tmp_path)
    m.add(Record("a.npy", "a.png", "ok"))
    real = os.write
    calls = []

    def half_then_full(fd, data):  # a partial write, then ENOSPC: the torn half line must go again
        calls.append(len(data))
        if len(calls) == 1:
            return real(fd, bytes(data)[:5])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(ManifestError, match="no space left on device writing .*manifest.jsonl"):
        m.add(Record("b.npy", "b.png", "ok"))
    monkeypatch.setattr(os, "write", real)
    m._fh.close()
    assert [json.loads(x)["source"] for x in (tmp_path / "manifest.jsonl").read_text().splitlines()] == ["a.npy"]


# -- never over the inputs ------------------------------------------------------------------------------
def test_invert_into_its_input_folder_refuses_naming_the_file(tmp_path):
    from PIL import Image

    folder = tmp_path / "selfout"
    folder.mkdir()
    Image.new("RGB", (32, 32), (9, 9, 9)).save(folder / "input_0.png")
    data = (folder / "input_0.png").read_bytes()
    res = run("invert", folder, "-o", folder, "--save-reconstructions", "-c", tmp_path / "not_loaded.pt", "--device", "cpu")
    no_traceback(res)
    assert res.exit_code == 2 and "overwrite the input" in res.output and "input_0.png" in res.output, res.output
    assert (folder / "input_0.png").read_bytes() == data
    assert sorted(p.name for p in folder.iterdir()) == ["input_0.png"]  # nothing created


def test_align_into_its_input_folder_refuses_before_the_detector_starts(tmp_path):
    from PIL import Image

    folder = tmp_path / "d"
    folder.mkdir()
    Image.new("RGB", (32, 32), (9, 9, 9)).save(folder / "photo.png")
    for extra in ([], ["--all-faces"]):
        if extra:
            (folder / "photo.png").rename(folder / "photo_0.png")
            Image.new("RGB", (32, 32), (9, 9, 9)).save(folder / "photo.png")
        res = run("align", folder, "-o", folder, *extra)
        no_traceback(res)
        assert res.exit_code == 2 and "overwrite the input" in res.output, res.output
        assert "landmark" not in res.output


def test_sweep_frames_and_strips_that_collide_are_refused_before_any_work(gen, tmp_path):
    x = tmp_path / "x"
    latent(x / "a.npy", 0)
    latent(x / "a" / "00_s-1.npy", 1)  # its strip x/a/00_s-1.png is a's first frame
    np.save(tmp_path / "dir.npy", np.eye(512, dtype=np.float32)[0])
    res = run("edit", x, "-o", tmp_path / "out", "-c", gen, "-d", tmp_path / "dir.npy", "-s", "-1:1:3", "--device", "cpu")
    no_traceback(res)
    assert res.exit_code == 2, res.output
    assert "00_s-1.png" in res.output and "several inputs" in res.output
    assert not (tmp_path / "out").exists()


def test_edit_pasted_name_collision_with_another_input(gen, tmp_path):
    """a.pasted.npy renders to a.pasted.png, which is a's paste-back name: caught with the plan, before work."""
    from e4ecli.files.batch import Item
    from e4ecli.files.guard import shared_outputs

    out = tmp_path / "o"
    planned = {Item(Path("a.npy"), "a"): [out / "a.png", out / "a.pasted.png"], Item(Path("a.pasted.npy"), "a.pasted"): [out / "a.pasted.png"]}
    clashes = shared_outputs(planned)
    assert [p.name for p, _ in clashes] == ["a.pasted.png"]


# -- one writer per output folder --------------------------------------------------------------------
def test_a_second_run_into_a_busy_output_folder_is_refused(gen, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    latent(tmp_path / "lat" / "a.npy")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[2]);"
                               "from e4ecli.files.guard import lock_output; lock_output(sys.argv[1]); print('held', flush=True); time.sleep(60)",
                               str(out), str(ROOT)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = run("render", tmp_path / "lat", "-o", out, "-c", gen, "--device", "cpu")
        no_traceback(res)
        assert res.exit_code == 2 and "another e4e is writing" in res.output, res.output
        assert "use another -o folder" in res.output  # the CLI's word of what to do
        assert not (out / "manifest.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    res = run("render", tmp_path / "lat", "-o", out, "-c", gen, "--device", "cpu")  # released with its process
    assert res.exit_code == 0, res.output


def test_concurrent_runs_into_one_folder_never_lose_records(gen, tmp_path):
    """Two real processes started together: one runs, the other is refused; the manifest lists every output written."""
    for i in range(4):
        latent(tmp_path / "p" / f"a{i}.npy", i)
        latent(tmp_path / "q" / f"b{i}.npy", 10 + i)
    out = tmp_path / "out"
    procs = [subprocess.Popen([sys.executable, "-m", "e4ecli", "render", str(tmp_path / d), "-o", str(out), "-c", str(gen), "--device", "cpu"],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for d in ("p", "q")]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for code, err in results:
        assert code in (0, 2) and "Traceback" not in err, err
        if code == 2:
            assert "another e4e is writing" in err
    written = {p.name for p in out.glob("*.png")}
    recorded = {r["output"] for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert written == recorded


# -- an unusable -o --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["file", "under_file", "dev_null", "proc_self"])
def test_unusable_out_folder_is_one_line_exit_2_before_the_model_loads(gen, tmp_path, kind):
    latent(tmp_path / "a.npy")
    (tmp_path / "f").write_text("x")
    out = {"file": tmp_path / "f", "under_file": tmp_path / "f" / "sub", "dev_null": Path("/dev/null"), "proc_self": Path("/proc/self")}[kind]
    for cmd in (["render", tmp_path / "a.npy"], ["invert", tmp_path / "a.npy"], ["edit", tmp_path / "a.npy", "-d", "age", "-s", "1"]):
        res = run(*cmd, "-o", out, "-c", tmp_path / "missing_checkpoint.pt", "--device", "cpu")
        no_traceback(res)
        assert res.exit_code == 2, res.output
        assert "-o" in res.output and "missing_checkpoint" not in res.output, res.output
    assert (tmp_path / "f").read_text() == "x"


def test_read_only_out_folder_is_refused(gen, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a read-only file system here")
    try:
        latent(tmp_path / "a.npy")
        res = run("render", tmp_path / "a.npy", "-o", ro / "out", "-c", gen, "--device", "cpu")
        no_traceback(res)
        assert res.exit_code == 2 and "read-only" in res.output, res.output
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True)


# -- terminal safety ----------------------------------------------------------------------------------------
def test_hostile_file_names_are_printed_escaped(gen, tmp_path):
    src = tmp_path / "lat"
    src.mkdir()
    names = ["a:smile:b.npy", "ganspace:-1:0:1.npy", "esc\x1b[31mred.npy", "two\n✗ fake line.npy"]
    for n in names:
        (src / n).write_bytes(b"not a latent")
    res = run("render", src, "-o", tmp_path / "out", "-c", gen, "--device", "cpu")
    no_traceback(res)
    assert res.exit_code == 1
    out = res.output
    assert "\x1b" not in out and "😄" not in out and "👎" not in out
    assert "a:smile:b.npy" in out and "ganspace:-1:0:1.npy" in out
    assert "esc\\x1b[31mred.npy" in out and "two\\n✗ fake line.npy" in out
    assert not [ln for ln in out.splitlines() if ln.startswith("✗ fake line")]


def test_help_and_errors_show_colon_syntax_as_written():
    res = run("edit", "--help")
    assert res.exit_code == 0 and "A:B:N" in res.output and "🅱" not in res.output
    res = run("edit", "x.npy", "-o", "/dev/null/x", "-d", "ganspace:-1:0:1")
    assert "👎" not in res.output


def test_version_prints_the_version():
    from e4ecli import __version__

    res = run("--version")
    assert res.exit_code == 0 and __version__ in res.output


def test_detector_has_its_own_short_flag():
    for cmd in ("align", "invert"):
        text = run(cmd, "--help").output
        assert "-L" in text
        res = run(cmd, "x.png", "-o", "o", "-d", "dlib")
        assert res.exit_code == 2 and "No such option" in res.output


def test_lock_is_released_when_the_process_is_killed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[2]);"
                               "from e4ecli.files.guard import lock_output; lock_output(sys.argv[1]); print('held', flush=True); time.sleep(60)",
                               str(out), str(ROOT)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    from e4ecli.files.guard import OutputLocked, lock_output, release_all

    with pytest.raises(OutputLocked):
        lock_output(out)
    holder.kill()
    holder.wait()
    time.sleep(0.1)
    assert lock_output(out)
    release_all()


# -- writers: ffmpeg's exit status and stderr count ------------------------------------------------------
def _video_cmd(gen, tmp_path, out):
    a, b = latent(tmp_path / "a.npy", 0), latent(tmp_path / "b.npy", 1)
    return ["video", a, b, "-o", out, "-c", gen, "--device", "cpu", "--frames", 24, "--overwrite"]


def test_video_on_a_full_disk_fails_and_keeps_the_previous_video(gen, tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    disk = tmp_path / "disk"
    if _mount_tmpfs(disk, "1m"):
        try:
            out = disk / "v.mp4"
            first = run(*_video_cmd(gen, tmp_path, out))
            assert first.exit_code == 0, first.output
            good = out.read_bytes()
            st = os.statvfs(disk)
            with open(disk / ".filler", "wb") as f:  # leave 2 blocks: room for ffmpeg to start, not for the video
                f.write(b"\0" * ((st.f_bavail - 2) * st.f_frsize))
            res = run(*_video_cmd(gen, tmp_path, out))
            no_traceback(res)
            text, code = res.output, res.exit_code
            assert out.read_bytes() == good
            leftovers = [p.name for p in disk.iterdir() if ".tmp" in p.name]
        finally:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)
        assert not leftovers
    else:  # no mount here: ffmpeg runs under a file-size limit instead (a writer that fails the same way)
        import resource

        out = tmp_path / "v.mp4"
        first = cli(*_video_cmd(gen, tmp_path, out))
        assert first.returncode == 0, first.stderr
        good = out.read_bytes()
        res = cli(*_video_cmd(gen, tmp_path, out), preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048)))
        text, code = res.stdout + res.stderr, res.returncode
        assert "Traceback" not in text
        assert out.read_bytes() == good
        assert not [p for p in out.parent.iterdir() if ".tmp" in p.name]
    assert code == 1, text
    assert "ffmpeg failed" in text and "wrote" not in text


def test_video_output_that_is_an_input_or_unwritable_is_refused_first(gen, tmp_path):
    latent(tmp_path / "a.npy")
    (tmp_path / "f").write_text("x")
    for out in (tmp_path / "f" / "v.mp4", Path("/proc/self/v.mp4"), tmp_path):
        res = run("video", tmp_path / "a.npy", "-o", out, "-c", tmp_path / "missing.pt", "--device", "cpu")
        no_traceback(res)
        assert res.exit_code == 2 and "missing.pt" not in res.output, res.output


# -- upper bounds, stated in --help ------------------------------------------------------------------------
@pytest.mark.parametrize("args", [["render", "--size", "100000"], ["video", "--fps", "inf"], ["video", "--fps", "nan"],
                                  ["video", "--frames", "100000000"], ["edit", "--size", "100000", "-d", "age"]])
def test_huge_sizes_rates_and_frame_counts_are_refused(tmp_path, args):
    latent(tmp_path / "a.npy")
    out = tmp_path / ("v.mp4" if args[0] == "video" else "o")
    res = run(args[0], tmp_path / "a.npy", "-o", out, *args[1:], "-c", tmp_path / "missing.pt", "--device", "cpu")
    no_traceback(res)
    assert res.exit_code == 2 and "missing.pt" not in res.output, res.output
    assert not out.exists()


def test_help_states_the_bounds():
    assert "at most 4096" in run("render", "--help").output
    text = run("video", "--help").output
    assert "at most 10000" in text and "240" in text


def test_workers_are_capped_to_the_machine(tmp_path):
    from e4ecli.cli.common import machine_cpus

    latent(tmp_path / "a.npy")
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    for cmd in ("invert", "align"):
        res = run(cmd, tmp_path / "a.png", "-o", tmp_path / "o", "--workers", 1000, "-c" if cmd == "invert" else "--size",
                  tmp_path / "missing.pt" if cmd == "invert" else 8, "--device", "cpu", "-L", "dlib")
        assert f"--workers 1000: this machine has {machine_cpus()} CPU(s); using {machine_cpus()}" in res.output, res.output


def test_a_named_arcface_file_that_cannot_be_used_is_exit_2(e4e_64, tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64), (90, 60, 30)).save(tmp_path / "a.png")
    (tmp_path / "arc.pt").write_bytes(b"not a checkpoint")
    res = run("eval", tmp_path / "a.png", "-o", tmp_path / "e.json", "-c", e4e_64, "--metrics", "id", "--arcface", tmp_path / "arc.pt", "--device", "cpu")
    no_traceback(res)
    assert res.exit_code == 2 and "--arcface" in res.output and "arc.pt" in res.output, res.output
    assert not (tmp_path / "e.json").exists()


# -- bombs: memory and nesting, refused before anything is allocated ------------------------------------------
import struct  # noqa: E402

MEMO_BOMB = b"\x80\x02N" + b"r" + struct.pack("<I", 2**31 - 1) + b"."  # LONG_BINPUT 2**31-1: 9 bytes
DEPTH_BOMB = b"\x80\x02}" + b")" + b"\x85" * 200_000 + b"K\x01s."  # {((((...)))): 1}, 200,000 deep


def _torch_zip_with(pickle_bytes: bytes, path: Path) -> Path:
    """A torch zip checkpoint whose data.pkl is `pickle_bytes` (the layout torch.save writes)."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    return path


@pytest.mark.parametrize("case", ["memo.pkl", "depth.pkl", "depth.pt", "depth_zip.pt", "memo_zip.pt"])
def test_pickle_bombs_are_one_line_refusals_through_every_checkpoint_reader(tmp_path, case):
    latent(tmp_path / "a.npy")
    path = tmp_path / case
    data = MEMO_BOMB if case.startswith("memo") else DEPTH_BOMB
    if "zip" in case:
        _torch_zip_with(data, path)
    else:
        path.write_bytes(data)
    proc = cli("render", tmp_path / "a.npy", "-o", tmp_path / "o", "-c", path, "--device", "cpu", timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and case in proc.stderr
    assert ("memo index" if case.startswith("memo") else "nested more than") in proc.stderr


def test_depth_bomb_as_a_direction_file_is_refused(gen, tmp_path):
    latent(tmp_path / "a.npy")
    (tmp_path / "d.pt").write_bytes(DEPTH_BOMB)
    proc = cli("edit", tmp_path / "a.npy", "-o", tmp_path / "o", "-c", gen, "-d", tmp_path / "d.pt", "-s", 1, "--device", "cpu", timeout=120)
    assert proc.returncode == 2 and "nested more than" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_stride0_direction_is_refused_before_it_expands(gen, tmp_path):
    import resource

    import torch

    latent(tmp_path / "a.npy")
    torch.save(torch.zeros(1).expand(2**30), tmp_path / "d.pt")  # 8 GB when copied, a few hundred bytes on disk
    assert (tmp_path / "d.pt").stat().st_size < 4096
    limit = 2 * 1024**3  # the process may not even try to allocate 4 GB
    proc = cli("edit", tmp_path / "a.npy", "-o", tmp_path / "o", "-c", gen, "-d", tmp_path / "d.pt", "-s", 1, "--device", "cpu",
               timeout=120, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit * 4, limit * 4)))
    assert proc.returncode == 2 and "stride-0" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_stride0_tensor_in_an_ada_pickle_is_refused():
    import pickle

    import torch

    from e4ecli.hub.ada import _rebuild_tensor

    storage = torch.zeros(1).storage()
    with pytest.raises(pickle.UnpicklingError, match="stride-0"):
        _rebuild_tensor(storage, 0, (2**30,), (0,))


def test_npz_whose_headers_claim_gigabytes_is_refused_from_the_headers(tmp_path):
    import zipfile

    from e4ecli.hub.directions import DirectionError, read_array

    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float64))
    header["shape"] = (3 * 2**27,)  # 3.2 GB of float64
    buf = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("directions.npy", buf.getvalue() + b"\0" * (1 << 20))
    assert (tmp_path / "bomb.npz").stat().st_size < (1 << 20)
    with pytest.raises(DirectionError, match="far too large"):
        read_array(tmp_path / "bomb.npz")


def test_pickle_scanner_passes_real_checkpoints(gen, e4e_64):
    from e4ecli.hub.picklescan import check_file

    check_file(gen)
    check_file(e4e_64)


# -- wrong structure: one line naming the file and the field ----------------------------------------------------
@pytest.mark.parametrize("field,content", [
    ("g_ema", {"g_ema": "hello"}),
    ("state_dict", {"state_dict": 5}),
    ("latent_avg", "latent_avg"),
    ("stylegan_size", "stylegan_size"),
    ("encoder_type", "encoder_type"),
])
def test_checkpoints_with_wrong_structure_are_one_line_exit_2(gen, e4e_64, tmp_path, field, content):
    import torch

    latent(tmp_path / "a.npy")
    if content == "latent_avg":
        content = {**torch.load(gen, weights_only=True), "latent_avg": "x"}
    elif content in ("stylegan_size", "encoder_type"):
        ck = torch.load(e4e_64, weights_only=True)
        content = {**ck, "opts": {**ck["opts"], content: "abc" if content == "stylegan_size" else ["x"]}}
    torch.save(content, tmp_path / "bad.pt")
    res = run("render", tmp_path / "a.npy", "-o", tmp_path / "o", "-c", tmp_path / "bad.pt", "--device", "cpu")
    no_traceback(res)
    assert res.exit_code == 2 and "bad.pt" in res.output and field in res.output, res.output


@pytest.mark.parametrize("field", ["num_layers", "z_dim", "weight_gain", "_modules"])
def test_ada_records_with_wrong_types_name_the_field(field):
    from e4ecli.hub.ada import AdaPickleError, PersistentRecord, convert_g_ema

    mapping = PersistentRecord("MappingNetwork", {"num_layers": "eight" if field == "num_layers" else 2, "_modules": {}})
    blocks = "broken" if field == "_modules" else {"b4": PersistentRecord("SynthesisBlock", {})}
    syn = PersistentRecord("SynthesisNetwork", {"img_resolution": 4, "_modules": blocks})
    g = PersistentRecord("Generator", {"z_dim": "512" if field == "z_dim" else 8, "w_dim": 8, "c_dim": 0,
                                       "_modules": {"mapping": mapping, "synthesis": syn}})
    if field == "weight_gain":
        import torch

        fc = PersistentRecord("FullyConnectedLayer", {"weight_gain": "big", "_parameters": {"weight": torch.zeros(8, 8), "bias": torch.zeros(8)}})
        mapping.state["_modules"] = {"fc0": fc}
        mapping.state["num_layers"] = 1
    with pytest.raises(AdaPickleError) as e:
        convert_g_ema({"G_ema": g}, "snap.pkl")
    assert "snap.pkl" in str(e.value)
    if field != "_modules":
        assert field in str(e.value)


# -- paste-back sidecars: a bad one is that input's failure only ------------------------------------------------
BAD_SIDECARS = {
    "strsize": lambda good: {**good, "source_size": ["a", "b"]},
    "infsize": lambda good: '{"source": "photo.png", "output_size": 1e999, "quad": [[0, 0], [0, 8], [8, 8], [8, 0]]}',
    "huge": lambda good: {**good, "source_from_output": [[1e307, 0, 0], [0, 1e307, 0]]},
    "nested": lambda good: "[" * 100_000 + "]" * 100_000,
    "nul": lambda good: {**good, "source": "a\u0000b.png"},
}


def test_bad_paste_back_sidecars_fail_only_their_input(gen, tmp_path):
    from PIL import Image

    Image.new("RGB", (48, 48), (120, 90, 60)).save(tmp_path / "photo.png")
    good = {"source": str(tmp_path / "photo.png"), "output_size": 16, "quad": [[8, 8], [8, 40], [40, 40], [40, 8]], "source_size": [48, 48]}
    lat = tmp_path / "lat"
    names = ["good", *BAD_SIDECARS]
    for i, name in enumerate(names):
        latent(lat / f"{name}.npy", i)
        content = good if name == "good" else BAD_SIDECARS[name](good)
        (lat / f"{name}.json").write_text(content if isinstance(content, str) else json.dumps(content))
    np.save(tmp_path / "dir.npy", np.eye(512, dtype=np.float32)[0])
    out = tmp_path / "out"
    res = run("edit", lat, "-o", out, "-c", gen, "-d", tmp_path / "dir.npy", "-s", 1, "--paste-back", "--device", "cpu")
    no_traceback(res)
    assert res.exit_code == 1, res.output
    assert (out / "good.pasted.png").is_file()
    records = {Path(r["source"]).stem: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert records["good"]["status"] == "ok"
    for name in BAD_SIDECARS:
        assert records[name]["status"] == "failed" and "sidecar" in records[name]["error"], (name, records[name])


@pytest.mark.parametrize("suffix,text", [(".toml", "batch_size = " + "[" * 100_000 + "]" * 100_000 + "\n"),
                                         (".yaml", "batch_size: " + "[" * 100_000 + "]" * 100_000 + "\n"),
                                         (".yaml", "".join(" " * i + f"k{i}:\n" for i in range(1200)))])
def test_config_nested_deep_is_refused_with_a_message(tmp_path, suffix, text):
    from e4ecli.training.options import OptionsError, load_config

    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    with pytest.raises(OptionsError, match="nested|not valid"):
        load_config(path)
    res = run("train", "--config", path, "--exp-dir", tmp_path / "exp", "--data", tmp_path)
    no_traceback(res)
    assert res.exit_code == 2, res.output
    assert "at most 100 deep" in run("train", "--help").output.replace("\n", " ").replace("│", "").replace("  ", " ")


# -- training: a killed first run, a full disk -----------------------------------------------------------------------
def _train_opts(tmp_path, **extra):
    from train_support import tiny_generator, write_photos

    from e4ecli.training import options as optmod

    write_photos(tmp_path / "train", ["face", "car"], size=40)
    gen = tiny_generator(tmp_path / "g8.pt")
    given = {"exp_dir": str(tmp_path / "exp"), "data": str(tmp_path / "train"), "stylegan_weights": str(gen),
             "encoder_init": "none", "id_lambda": 0, "lpips_lambda": 0, "input_size": 32, "batch_size": 2,
             "workers": 0, "device": "cpu", **extra}
    return optmod.merge(given), set(given)


@pytest.mark.parametrize("resume", [False, True])
def test_a_run_killed_before_its_first_checkpoint_can_start_again_in_its_folder(tmp_path, resume):
    from e4ecli.training import loop

    exp = tmp_path / "exp"
    (exp / "checkpoints").mkdir(parents=True)
    (exp / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    (exp / "checkpoints" / ".iteration_10.pt.4242-abcdef.tmp.pt").write_bytes(b"PK\x03\x04 torn")  # the save kill -9 cut short
    opts, given = _train_opts(tmp_path, **({"resume": True} if resume else {}))
    plan = loop.prepare(opts, given)
    assert plan.resume_ckpt is None and plan.purge_logs and plan.notes


def test_training_checkpoint_on_a_full_disk_says_so(tmp_path, monkeypatch):
    import torch

    from e4ecli.hub.checkpoints import CheckpointError
    from e4ecli.training.checkpoint import save

    disk = tmp_path / "disk"
    mounted = _mount_tmpfs(disk, "256k")
    try:
        if not mounted:  # a writer that raises ENOSPC like a full disk
            import builtins

            disk.mkdir()
            real_open = builtins.open

            class FullFile:
                def __init__(self, f):
                    self._f = f

                def write(self, data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

                def __getattr__(self, name):
                    return getattr(self._f, name)

                def __enter__(self):
                    return self

                def __exit__(self, *exc):
                    self._f.close()

            def fake_open(file, mode="r", *a, **k):
                f = real_open(file, mode, *a, **k)
                return FullFile(f) if "w" in mode and str(disk) in str(file) else f

            monkeypatch.setattr(builtins, "open", fake_open)
        (disk / "checkpoints").mkdir()
        previous = disk / "checkpoints" / "iteration_1.pt"
        previous.write_bytes(b"old")
        with pytest.raises(CheckpointError, match="no space left on device writing .*iteration_1.pt"):
            save(previous, {"w": torch.zeros(1_000_000)})
        assert previous.read_bytes() == b"old"
        assert [p.name for p in previous.parent.iterdir()] == ["iteration_1.pt"]
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_directions_outputs_unusable_or_full_are_one_line(gen, tmp_path):
    (tmp_path / "f").write_text("x")
    res = run("directions", "sefa", "-c", tmp_path / "missing.pt", "-o", tmp_path / "f" / "s.npz")
    no_traceback(res)
    assert res.exit_code == 2 and "missing.pt" not in res.output and "-o" in res.output, res.output
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "64k"):
        pytest.skip("cannot mount a small tmpfs here")
    try:
        res = run("directions", "sefa", "-c", gen, "-o", disk / "s.npz")
        no_traceback(res)
        assert res.exit_code == 1 and "no space left on device writing" in res.output, res.output
        assert not list(disk.iterdir())
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# -- python -m e4ecli / torchrun -m e4ecli from the clone's parent folder -------------------------------------------
@pytest.mark.parametrize("where", ["parent", "inside"])
def test_python_and_torchrun_m_e4ecli_work_beside_a_folder_named_e4ecli(tmp_path, where):
    """The clone is a folder named e4ecli; from its parent Python finds it first, as a namespace package."""
    from e4ecli import __version__

    (tmp_path / "e4ecli").symlink_to(ROOT, target_is_directory=True)
    cwd = tmp_path if where == "parent" else tmp_path / "e4ecli"
    env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}  # as after `pip install -e .`: nothing on PYTHONPATH
    proc = subprocess.run([sys.executable, "-m", "e4ecli", "--version"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and __version__ in proc.stdout, proc.stderr
    torchrun = Path(sys.executable).with_name("torchrun")
    if torchrun.exists():
        proc = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "1", "-m", "e4ecli", "--version"], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and __version__ in proc.stdout + proc.stderr, proc.stderr[-2000:]


def test_video_progress_shows_the_sweep_spec_as_written(gen, tmp_path):
    """The progress line names the edit: no emoji (ganspace:-1:0:1 once became ganspace👎0:1), no markup."""
    pytest.importorskip("imageio_ffmpeg")
    latent(tmp_path / "a.npy")
    d = tmp_path / "x:thumbsdown:[red]y.npy"
    np.save(d, np.eye(512, dtype=np.float32)[0])
    res = run("video", tmp_path / "a.npy", "-d", d, "-s", "-1:1", "-o", tmp_path / "v.gif", "-c", gen, "--device", "cpu", "--frames", 4)
    no_traceback(res)
    assert res.exit_code == 0, res.output
    assert "👎" not in res.output and "x:thumbsdown:[red]y" in res.output, res.output


def test_train_workers_are_capped_to_the_machine(tmp_path):
    from e4ecli.cli.common import machine_cpus
    from e4ecli.training import data as datamod

    (tmp_path / "data").mkdir()  # --data is checked (it exists) before the workers are capped
    res = run("train", "--exp-dir", tmp_path / "exp", "--data", tmp_path / "data", "--workers", 1000, "--device", "cpu")
    assert f"--workers 1000: this machine has {machine_cpus()} CPU(s); using {machine_cpus()}" in res.output, res.output
    assert datamod.loader([], [], 1000).num_workers == machine_cpus()  # a resumed run's stored value too


# -- round three's surfaces, through the CLI: one line, exit 2, nothing created, names escaped ------------------
def _one_error(res) -> str:
    no_traceback(res)
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "\x1b" not in res.output, res.output
    return errors[0]


@pytest.mark.parametrize("prompt, why", [
    ("text:smile\x1b[2J", "U+001B"), ("text:a face\nwith a smile", "U+000A"), ("text:   ", "empty"), ("text:" + "x" * 100_000, "characters"),
])
def test_hostile_prompts_are_one_short_line_before_anything_loads(tmp_path, prompt, why):
    a = latent(tmp_path / "a.npy")
    res = run("edit", a, "-o", tmp_path / "out", "-d", prompt, "-s", "2", "-c", tmp_path / "never_loaded.pt")
    assert res.exit_code == 2 and why in _one_error(res) and len(res.output) < 1000, res.output[:2000]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b"", b"not a video at all, just text", b"\x00\x00\x00\x18ftypisom" + b"\x00" * 64])
def test_edit_video_refuses_files_that_are_not_videos_in_one_line(tmp_path, content):
    clip = tmp_path / "two\nlines.mp4"  # a hostile name too
    clip.write_bytes(content)
    (tmp_path / "never_loaded.pt").write_bytes(b"options are checked first, then the clip; the model never loads")
    res = run("edit-video", clip, "-o", tmp_path / "o.mp4", "-d", "age", "-s", "2", "-c", tmp_path / "never_loaded.pt")
    line = _one_error(res)
    assert res.exit_code == 2 and "two\\nlines.mp4" in line, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["never_loaded.pt", "two\nlines.mp4"]  # nothing created


def test_a_relevance_file_of_another_layout_is_one_line_naming_it(gen, tmp_path):
    a = latent(tmp_path / "a.npy")
    bad = tmp_path / "rel\x1b[31m.npz"
    np.savez(bad, something=np.zeros((3, 3), np.float32))
    res = run("edit", a, "-o", tmp_path / "out", "-d", "text:a face with a smile", "-s", "2", "--relevance", bad, "-c", gen,
              "--device", "cpu")
    assert res.exit_code == 2 and "rel\\x1b[31m.npz" in _one_error(res), res.output
    assert not (tmp_path / "out").exists()
