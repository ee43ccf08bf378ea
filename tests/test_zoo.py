"""The weights zoo: registry, cache, downloader (against a real HTTP server on 127.0.0.1), CLI.

Nothing here touches the real network: sources are either the local server or an address that
refuses connections at once (127.0.0.1:9, the discard port, unused on test machines).
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from e4ecli.hub import zoo
from http_server import PAYLOAD, server  # noqa: F401 -- a fixture

PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
UNREACHABLE = "http://127.0.0.1:9/x"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """E4E_HOME in a temporary folder, and no URL overrides from the environment."""
    home = tmp_path / "e4e_home"
    monkeypatch.setenv("E4E_HOME", str(home))
    for var in [v for v in os.environ if v.startswith("E4E_URL_") or v in ("E4E_MIRROR", "HF_ENDPOINT")]:
        monkeypatch.delenv(var)
    return home


def use_registry(monkeypatch, *entries: zoo.Entry) -> None:
    """Point the zoo at these entries instead of the packaged zoo.toml."""
    monkeypatch.setattr(zoo, "load_registry", lambda: {e.name: e for e in entries})


def entry(*sources: str, name: str = "toy", sha256: str | None = PAYLOAD_SHA, size: int | None = None) -> zoo.Entry:
    return zoo.Entry(name=name, filename=f"{name}.pt", kind="encoder", domain="ffhq",
                     description="test weights", sources=tuple(sources), sha256=sha256, size=size)


# -- registry -----------------------------------------------------------------------------------
PUBLISHED_IDS = {
    "e4e_ffhq_encode": ("e4e_ffhq_encode.pt", "1cUv_reLE6k3604or78EranS7XzuVMWeO"),
    "e4e_cars_encode": ("e4e_cars_encode.pt", "17faPqBce2m1AQeLCLHUVXaDfxMRU2QcV"),
    "e4e_horse_encode": ("e4e_horse_encode.pt", "1TkLLnuX86B_BMo2ocYD0kX9kWh53rUVX"),
    "e4e_church_encode": ("e4e_church_encode.pt", "1-L0ZdnQLwtdy6-A_Ccgq5uNJGTqE7qBa"),
    "stylegan2_ffhq_1024": ("stylegan2-ffhq-config-f.pt", "1EM87UquaoQmk17Q8d5kYIAHqu0dkYqdT"),
    "ir_se50": ("model_ir_se50.pth", "1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn"),
    "moco_v2_resnet50": ("moco_v2_800ep_pretrain.pt", "18rLcNGdteX5LwT7sv_F7HWr12HpVEzVe"),
}


def test_packaged_registry_lists_the_published_files():
    registry = zoo.entries()
    assert [n for n in registry if not n.startswith(("styleflow_", "clip_")) and n != "face_parsing"] == list(PUBLISHED_IDS)
    for name, (filename, drive_id) in PUBLISHED_IDS.items():
        e = registry[name]
        assert e.filename == filename
        assert f"gdrive:{drive_id}" in e.sources
        assert e.kind in zoo.KINDS and e.description
    assert registry["stylegan2_ffhq_1024"].kind == "generator"
    assert {registry[n].kind for n in ("ir_se50", "moco_v2_resnet50")} == {"identity"}
    clip = registry["clip_vit_b32_openai"]  # OpenAI's URL carries the file's sha256, which openai/CLIP checks
    assert clip.kind == "clip" and clip.sha256 and clip.sha256 in clip.sources[0]


def test_the_face_parser_is_face_parsing_pytorchs_file_with_its_published_hash():
    e = zoo.entries()["face_parsing"]
    assert e.filename == "79999_iter.pth" and e.kind == "parser" and e.licence == "MIT"
    assert "gdrive:154JgKpzCPW82qINcVieuPH3fZ2e0P812" in e.sources
    assert e.sha256 == "468e13ca13a9b43cc0881a9f99083a430e9c0a38abd935431d1c28ee94b26567"


def test_styleflow_files_come_from_its_repository_with_their_licence():
    registry = zoo.entries()
    raw = "https://raw.githubusercontent.com/RameenAbdal/StyleFlow/master/"
    for name, path in (("styleflow_flow", "flow_weight/modellarge10k.pt"), ("styleflow_attributes", "data/attributes.npy"),
                       ("styleflow_light", "data/light.npy"), ("styleflow_latents", "data/sg2latents.pickle")):
        assert registry[name].sources == (raw + path,)
        assert registry[name].licence == "CC BY-NC-SA 4.0"
    assert registry["styleflow_flow"].kind == "flow"


GOOD_FIELDS = 'filename = "a.pt"\nkind = "encoder"\ndomain = "ffhq"\ndescription = "d"\nsources = ["gdrive:x"]\n'


@pytest.mark.parametrize(
    "change, complaint",
    [
        (('sources = ["gdrive:x"]', "sources = []"), "sources"),
        (('kind = "encoder"', 'kind = "painter"'), "kind"),
        (('sources = ["gdrive:x"]', 'sources = ["ftp://h/a"]'), "unsupported"),
        (("\n", '\nsha256 = "abc"\n'), "sha256"),
        (("\n", "\nsize = -1\n"), "size"),
        (("\n", '\nmd5 = "x"\n'), "md5"),
        (('"a.pt"', '"../a.pt"'), "bare"),
        (('domain = "ffhq"\n', ""), "domain"),
    ],
)
def test_parse_registry_rejects_bad_entries(change, complaint):
    table = GOOD_FIELDS.replace(*change, 1)
    with pytest.raises(zoo.ZooError, match=complaint) as info:
        zoo.parse_registry(f"[bad]\n{table}")
    assert "[bad]" in str(info.value)


def test_parse_registry_reads_hash_and_size():
    text = (f'[ok]\nfilename = "a.pt"\nkind = "generator"\ndomain = "cars"\ndescription = "d"\n'
            f'sources = ["gdrive:abc", "https://example.org/a.pt"]\nsha256 = "{PAYLOAD_SHA.upper()}"\nsize = 12\n')
    e = zoo.parse_registry(text)["ok"]
    assert e.sources == ("gdrive:abc", "https://example.org/a.pt")
    assert e.sha256 == PAYLOAD_SHA and e.size == 12


# -- cache location -----------------------------------------------------------------------------
def test_cache_dir_follows_e4e_home_then_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("E4E_HOME", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert zoo.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("E4E_HOME")
    assert zoo.cache_dir() == tmp_path / "xdg" / "e4ecli"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert zoo.cache_dir() == tmp_path / "home" / ".cache" / "e4ecli"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert zoo.cache_dir() == tmp_path / "home" / ".cache" / "e4ecli"


# -- downloads ----------------------------------------------------------------------------------
def test_download_checks_sha256_and_lands_in_e4e_home(server, cache, monkeypatch):
    use_registry(monkeypatch, entry(server.url("/w.pt"), size=len(PAYLOAD)))
    path = zoo.download("toy", progress=False)
    assert path == cache / "toy.pt"
    assert path.read_bytes() == PAYLOAD
    assert not (cache / "toy.pt.part").exists()
    assert zoo.download("toy", progress=False) == path  # cached: no second request
    assert len(server.gets()) == 1
    zoo.download("toy", force=True, progress=False)
    assert len(server.gets()) == 2


def test_checksum_mismatch_raises_and_leaves_no_file(server, cache, monkeypatch):
    wrong = "0" * 64
    use_registry(monkeypatch, entry(server.url("/w.pt"), sha256=wrong))
    with pytest.raises(zoo.ZooError) as info:
        zoo.download("toy", progress=False)
    message = str(info.value)
    assert wrong in message and PAYLOAD_SHA in message and "mismatch" in message
    assert not (cache / "toy.pt").exists()
    assert not (cache / "toy.pt.part").exists()


def test_size_announced_by_server_must_match_the_registry(server, cache, monkeypatch):
    use_registry(monkeypatch, entry(server.url("/w.pt"), size=len(PAYLOAD) + 1))
    with pytest.raises(zoo.ZooError, match=f"expects {len(PAYLOAD) + 1}"):
        zoo.download("toy", progress=False)
    assert not (cache / "toy.pt").exists()


def test_interrupted_transfer_keeps_part_and_resumes_with_range(server, cache, monkeypatch):
    use_registry(monkeypatch, entry(server.url("/w.pt")))
    server.cut_after, server.cuts_left = 100_000, 1
    with pytest.raises(zoo.ZooError, match="interrupted") as info:
        zoo.download("toy", progress=False)
    assert "resume" in str(info.value)
    part = cache / "toy.pt.part"
    assert part.stat().st_size == 100_000
    assert not (cache / "toy.pt").exists()

    path = zoo.download("toy", progress=False)
    assert path.read_bytes() == PAYLOAD and not part.exists()
    assert server.gets()[-1][2] == "bytes=100000-"


def test_server_ignoring_range_restarts_from_zero(server, cache, monkeypatch):
    use_registry(monkeypatch, entry(server.url("/w.pt")))
    cache.mkdir()
    (cache / "toy.pt.part").write_bytes(b"stale bytes from an older attempt")
    server.honour_range = False
    path = zoo.download("toy", progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.gets()[-1][2] == "bytes=33-"  # asked to resume, got (and used) the whole file


def test_complete_part_answered_with_416_is_verified_and_kept(server, cache, monkeypatch):
    use_registry(monkeypatch, entry(server.url("/w.pt")))  # size unknown: the server must tell
    cache.mkdir()
    (cache / "toy.pt.part").write_bytes(PAYLOAD)
    assert zoo.download("toy", progress=False).read_bytes() == PAYLOAD
    assert [m for m, _, _ in server.requests] == ["GET", "HEAD"]


def test_unwritable_cache_is_a_clear_error(server, tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("E4E_HOME", str(blocker))
    use_registry(monkeypatch, entry(server.url("/w.pt")))
    with pytest.raises(zoo.ZooError, match="E4E_HOME to a writable folder"):
        zoo.download("toy", progress=False)


def test_mirrors_are_tried_in_order(server, cache, monkeypatch):
    use_registry(monkeypatch, entry(UNREACHABLE, server.url("/missing.pt"), server.url("/w.pt")))
    assert zoo.download("toy", progress=False).read_bytes() == PAYLOAD


def test_url_override_by_argument_and_environment(server, cache, monkeypatch):
    use_registry(monkeypatch, entry(UNREACHABLE))
    assert zoo.download("toy", url=server.url("/w.pt"), progress=False).read_bytes() == PAYLOAD

    monkeypatch.setenv("E4E_URL_TOY", server.url("/w.pt"))
    assert zoo.override_env_var("toy") == "E4E_URL_TOY"
    path = zoo.download("toy", force=True, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert len(server.gets()) == 2

    monkeypatch.setenv("E4E_URL_TOY", "ftp://nowhere/w.pt")
    with pytest.raises(zoo.ZooError, match="E4E_URL_TOY.*unsupported"):
        zoo.download("toy", force=True, progress=False)


def test_drive_links_become_gdrive_sources():
    assert zoo._drive_link_to_source("https://drive.google.com/file/d/1AbC_d-9/view?usp=sharing") == "gdrive:1AbC_d-9"
    assert zoo._drive_link_to_source("https://drive.google.com/uc?id=1AbC_d-9&export=download") == "gdrive:1AbC_d-9"
    assert zoo._drive_link_to_source("https://example.org/file/d/x") == "https://example.org/file/d/x"


def test_gdrive_sources_go_through_gdown_and_are_verified(cache, monkeypatch):
    import gdown

    calls = []

    def fake_download(*, id, output, quiet, resume):
        calls.append((id, resume))
        Path(output).write_bytes(PAYLOAD)
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    use_registry(monkeypatch, entry("gdrive:FILEID"), entry("gdrive:OTHER", name="bad", sha256="1" * 64))
    assert zoo.download("toy", progress=False).read_bytes() == PAYLOAD
    assert calls == [("FILEID", True)]
    with pytest.raises(zoo.ZooError, match="mismatch"):
        zoo.download("bad", progress=False)
    assert sorted(p.name for p in cache.iterdir()) == ["bad.pt.lock", "toy.pt", "toy.pt.lock", "toy.pt.sha256"]


def test_concurrent_downloads_of_one_file_fetch_it_once(server, cache, monkeypatch):
    use_registry(monkeypatch, entry(server.url("/w.pt")))
    server.delay_s = 0.3
    results: list[Path | zoo.ZooError] = []

    def worker() -> None:
        try:
            results.append(zoo.download("toy", progress=False))
        except zoo.ZooError as e:  # surfaced by the assertion below
            results.append(e)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [cache / "toy.pt"] * 2
    assert len(server.gets()) == 1


# -- resolve ------------------------------------------------------------------------------------
def test_resolve_returns_existing_paths_as_is(tmp_path, cache, monkeypatch):
    use_registry(monkeypatch, entry(UNREACHABLE))
    mine = tmp_path / "mine.pt"
    mine.write_bytes(b"x")
    assert zoo.resolve(str(mine)) == mine


def test_resolve_unknown_name_lists_known_names(cache, monkeypatch):
    use_registry(monkeypatch, entry(UNREACHABLE), entry(UNREACHABLE, name="other"))
    with pytest.raises(zoo.ZooError, match="known names: toy, other"):
        zoo.resolve("nope")


def test_resolve_offline_message_says_which_file_goes_where(cache, monkeypatch):
    use_registry(monkeypatch, entry(UNREACHABLE, "gdrive:DRIVEID", size=len(PAYLOAD)))
    with pytest.raises(zoo.ZooError) as info:
        zoo.resolve("toy", download=False)
    message = str(info.value)
    for expected in ("toy.pt", str(cache / "toy.pt"), UNREACHABLE, "https://drive.google.com/file/d/DRIVEID/view",
                     PAYLOAD_SHA, str(len(PAYLOAD)), "E4E_HOME", "e4e weights download toy"):
        assert expected in message, expected


def test_resolve_downloads_and_reports_failures_with_the_offline_message(server, cache, monkeypatch):
    use_registry(monkeypatch, entry(UNREACHABLE), entry(server.url("/w.pt"), name="good"))
    with pytest.raises(zoo.ZooError) as info:
        zoo.resolve("toy", progress=False)
    message = str(info.value)
    assert "could not download 'toy'" in message and "cannot connect" in message
    assert str(cache / "toy.pt") in message
    assert zoo.resolve("good", progress=False) == cache / "good.pt"
    assert zoo.resolve("good", download=False) == cache / "good.pt"
    assert zoo.resolve("good.pt", download=False) == cache / "good.pt"  # the file name works too


# -- CLI ----------------------------------------------------------------------------------------
@pytest.fixture
def cli():
    from e4ecli.cli import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["weights", *args], env={"COLUMNS": "250"})


def test_cli_list_shows_entries_and_cache_state(cli, cache, monkeypatch):
    use_registry(monkeypatch, entry(UNREACHABLE), entry(UNREACHABLE, name="other"))
    cache.mkdir()
    (cache / "toy.pt").write_bytes(PAYLOAD)
    result = cli("list")
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if re.match(r"^\W+(toy|other)\b", line)}
    assert "yes" in lines["toy"] and str(cache / "toy.pt") in lines["toy"] and "300.0 KiB" in lines["toy"]
    assert "no" in lines["other"]


def test_cli_path_prints_the_path_or_the_offline_message(cli, cache, monkeypatch):
    use_registry(monkeypatch, entry(UNREACHABLE))
    result = cli("path", "toy")
    assert result.exit_code == 1
    assert "error:" in result.output and str(cache / "toy.pt") in result.output and UNREACHABLE in result.output
    cache.mkdir()
    (cache / "toy.pt").write_bytes(PAYLOAD)
    result = cli("path", "toy")
    assert result.exit_code == 0 and result.stdout.strip() == str(cache / "toy.pt")


def test_cli_download_with_url_and_unknown_name(cli, server, cache, monkeypatch):
    use_registry(monkeypatch, entry(UNREACHABLE))
    result = cli("download", "toy", "--url", server.url("/w.pt"), "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(cache / "toy.pt")
    result = cli("download", "nope")
    assert result.exit_code == 1 and "unknown weights 'nope'" in result.output
    result = cli("download", "toy", "--url", "ftp://h/w.pt", "--quiet")  # the CLI names its option
    assert result.exit_code == 1 and "--url: unsupported source 'ftp://h/w.pt'" in result.output, result.output


def test_every_weights_command_help_has_an_example(cli):
    for command in ("list", "download", "path"):
        result = cli(command, "--help")
        assert result.exit_code == 0 and "e4e weights " + command in result.output


def test_no_network_ends_the_tries_after_one_mirror_other_failures_do_not(server, cache, monkeypatch):
    """Offline (the name resolver unreachable: EAI_AGAIN) every mirror fails the same way, each after its timeouts:
    the first such failure ends the tries and the rest are listed as not tried. A host that does not resolve
    (EAI_NONAME), a refused connection or an HTTP 404 is that host's problem: the next mirror is tried."""
    import socket

    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        if host == "nonet.invalid":
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host == "gone.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    use_registry(monkeypatch, entry("http://nonet.invalid/w.pt", server.url("/w.pt")))
    with pytest.raises(zoo.ZooError) as e:
        zoo.download("toy", progress=False)
    assert not server.gets()  # the mirror after it was not asked
    assert len(e.value.failures) == 2 and "Temporary failure in name resolution" in e.value.failures[0]
    assert e.value.failures[1].strip() == f"{server.url('/w.pt')}: not tried (no network)"
    use_registry(monkeypatch, entry("http://gone.invalid/w.pt", UNREACHABLE, server.url("/missing.pt"), server.url("/w.pt")))
    assert zoo.download("toy", progress=False).read_bytes() == PAYLOAD
