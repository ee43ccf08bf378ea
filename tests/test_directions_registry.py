"""The directions registry (data in directions/), its download cache, and its packaging."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from e4ecli.hub import directions as hub
from editing_kit import KIT, KIT_DIRECTIONS, empty_home, kit_directions, need_kit, run_cli  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files
        self.hits: list[str] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    need_kit()
    srv = _Server({"/age.pt": (KIT_DIRECTIONS / "age.pt").read_bytes(), "/wrong.pt": b"not the published file"})
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_registry_records_the_published_files_sha256():
    need_kit()
    registry = hub.load_registry()
    files = {e.filename: e for e in registry.values() if e.has_file}
    assert sorted(files) == sorted(["age.pt", "smile.pt", "pose.pt", "ffhq_pca.pt", "cars_pca.pt"])
    for name, entry in files.items():
        assert hashlib.sha256((KIT_DIRECTIONS / name).read_bytes()).hexdigest() == entry.sha256, name
        assert entry.url.startswith("https://github.com/omertov/encoder4editing/raw/main/editings/")


def test_named_ganspace_edits_are_the_ones_the_original_used():
    need_kit()
    meta = json.loads((KIT / "cases" / "edits_e4e_256.json").read_text())
    registry = hub.load_registry()
    for name, (comp, start, end, _) in zip(("eye_openness", "ganspace_smile", "trimmed_beard"), meta["ganspace_edits"]):
        e = registry[name]
        assert (e.component, e.styles, e.pca) == (comp, (start, end), "ffhq_pca")
    for e in registry.values():
        if e.kind != "pca":
            assert e.range[0] < e.range[1] and e.strength is not None


def test_bad_registry_tables_are_refused_with_the_entry_named():
    good = '[p]\nkind = "pca"\ndomain = "ffhq"\nurl = "https://x/p.pt"\nsha256 = "' + "a" * 64 + '"\n'
    assert hub.parse_registry(good)["p"].filename == "p.pt"
    with pytest.raises(hub.DirectionError, match=r"\[p\].*sha256"):
        hub.parse_registry(good.replace("a" * 64, "abc"))
    bad_edit = good + '[g]\nkind = "ganspace"\npca = "nope"\ncomponent = 1\nstyles = [0, 1]\nstrength = 1\nrange = [-1, 1]\n'
    with pytest.raises(hub.DirectionError, match=r"\[g\] names pca = 'nope'"):
        hub.parse_registry(bad_edit)
    with pytest.raises(hub.DirectionError, match="kind must be"):
        hub.parse_registry('[x]\nkind = "magic"\n')


def test_local_folder_copies_are_used_but_must_be_the_published_bytes(kit_directions):
    entry = hub.lookup("age")
    assert hub.fetch(entry, download=False) == kit_directions / "age.pt"
    (kit_directions / "smile.pt").write_bytes(b"tampered")
    with pytest.raises(hub.DirectionError, match=r"smile\.pt is not the published smile\.pt"):
        hub.fetch(hub.lookup("smile"), download=False)


def test_download_verifies_and_caches_atomically(server, empty_home):
    entry = replace(hub.lookup("age"), url=server.url("/age.pt"))
    path = hub.fetch(entry)
    assert path == hub.cache_dir() / "age.pt"
    assert path.read_bytes() == (KIT_DIRECTIONS / "age.pt").read_bytes()
    # no temp files left behind: the file, its lock and the sha256 record of hub.fetch
    assert sorted(p.name for p in path.parent.iterdir()) == ["age.pt", "age.pt.lock", "age.pt.sha256"]
    hub.fetch(entry)
    assert server.hits == ["/age.pt"]  # the second use reads the cache


def test_a_download_with_the_wrong_bytes_saves_nothing(server, empty_home):
    entry = replace(hub.lookup("age"), url=server.url("/wrong.pt"))
    with pytest.raises(hub.DirectionError, match="sha256"):
        hub.fetch(entry)
    assert [p.name for p in hub.cache_dir().iterdir()] == ["wrong.pt.lock"]  # the name comes from the URL


def test_offline_messages_say_which_file_goes_where(empty_home):
    entry = hub.lookup("pose")
    with pytest.raises(hub.DirectionError) as info:
        hub.fetch(entry, download=False)
    msg = str(info.value)
    assert entry.url in msg and str(hub.cache_dir() / "pose.pt") in msg and "E4E_DIRECTIONS" in msg
    unreachable = replace(entry, url="http://127.0.0.1:9/pose.pt")
    with pytest.raises(hub.DirectionError, match="could not download"):
        hub.fetch(unreachable)


def test_list_shows_registry_and_cache_state(kit_directions):
    (kit_directions / "cars_pca.pt").unlink()
    r = run_cli(["directions", "list"])
    assert r.exit_code == 0, r.output
    rows = {line.split("│")[1].strip(): line for line in r.output.splitlines() if line.count("│") > 3}
    assert "yes" in rows["age"] and "yes" in rows["eye_openness"]  # eye_openness uses ffhq_pca.pt
    assert "no" in rows["cars_pca"] and "no" in rows["cars_cube"]


@pytest.mark.slow
def test_a_built_wheel_ships_the_registry(tmp_path):
    """`pip install .` (not editable) must find directions/registry.toml inside the package."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "e4ecli", src / "e4ecli", symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "directions", src / "directions")
    dist = tmp_path / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
                       capture_output=True, text=True, env={**os.environ, "PIP_NO_INDEX": "1"})
    if r.returncode != 0 and "No module named" in r.stderr:
        pytest.skip(f"cannot build wheels here: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr
    (wheel,) = dist.glob("e4ecli-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert "e4ecli/directions/registry.toml" in names and "e4ecli/directions/README.md" in names
        packaged = z.read("e4ecli/directions/registry.toml").decode()
    assert packaged == (REPO / "directions" / "registry.toml").read_text()
    # installed from the wheel (no source tree around), the package finds its registry
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    probe = ("import e4ecli, e4ecli.hub.directions as h; print(e4ecli.__file__); print(h.registry_path()); "
             "print(sorted(h.load_registry()) == sorted(%r))" % sorted(hub.load_registry()))
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(target)})
    assert r.returncode == 0, r.stderr
    module_file, registry_file, same = r.stdout.split("\n")[:3]
    assert module_file.startswith(str(target)) and registry_file.startswith(str(target)) and same == "True"
