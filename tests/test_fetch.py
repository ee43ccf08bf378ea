"""The one fetcher (hub.fetch) through the zoo: mirrors, web pages instead of files, trust on first use,
published sizes. Downloads go to a real HTTP server on 127.0.0.1 only."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from e4ecli.hub import fetch, zoo
from http_server import PAYLOAD, server  # noqa: F401 -- a fixture
from test_zoo import PAYLOAD_SHA, UNREACHABLE, cache, entry, use_registry  # noqa: F401 -- fixtures

QUOTA_PAGE = (b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head>"
              b"<body>Too many users have viewed or downloaded this file recently.</body></html>")


def fake_gdown(monkeypatch, body: bytes) -> list[str]:
    """gdown.download replaced by one that saves `body` (what Drive served) -> the ids it was asked for."""
    import gdown

    calls: list[str] = []

    def download(*, id, output, quiet, resume, **_):
        calls.append(id)
        Path(output).write_bytes(body)
        return output

    monkeypatch.setattr(gdown, "download", download)
    return calls


def test_drive_quota_page_is_recognised_and_the_mirror_is_used(server, cache, monkeypatch):
    fake_gdown(monkeypatch, QUOTA_PAGE)
    use_registry(monkeypatch, entry("gdrive:QUOTA", server.url("/w.pt"), sha256=None))
    path = zoo.download("toy", progress=False)
    assert path.read_bytes() == PAYLOAD and not list(cache.glob("toy.pt.gdown*"))


def test_drive_quota_page_alone_fails_with_the_web_page_message_and_leaves_nothing(cache, monkeypatch):
    fake_gdown(monkeypatch, QUOTA_PAGE)
    use_registry(monkeypatch, entry("gdrive:QUOTA", "gdrive:OTHER", sha256=None))
    with pytest.raises(zoo.ZooError) as info:
        zoo.download("toy", progress=False)
    message = str(info.value)
    assert "Google Drive returned a web page, not the file: quota exceeded? try the mirror https://drive.google.com/file/d/OTHER/view" in message
    assert "arbitrary Python code" not in message
    assert not (cache / "toy.pt").exists() and not list(cache.glob("toy.pt.gdown*"))


def test_a_web_page_from_a_plain_server_is_refused_too(server, cache, monkeypatch):
    server.files["/page"] = b"\n  <html><body>log in first</body></html>"
    use_registry(monkeypatch, entry(server.url("/page"), sha256=None))
    with pytest.raises(zoo.ZooError, match="127.0.0.1:[0-9]+ returned a web page, not the file"):
        zoo.download("toy", progress=False)
    assert not (cache / "toy.pt").exists() and not (cache / "toy.pt.part").exists()


def test_e4e_mirror_is_tried_first(server, cache, monkeypatch):
    server.files["/mirror/toy.pt"] = PAYLOAD
    use_registry(monkeypatch, entry(UNREACHABLE))
    monkeypatch.setenv("E4E_MIRROR", server.url("/mirror/"))
    assert zoo.download("toy", progress=False).read_bytes() == PAYLOAD
    assert [r[1] for r in server.gets()] == ["/mirror/toy.pt"]
    monkeypatch.setenv("E4E_MIRROR", "ftp://x")
    with pytest.raises(zoo.ZooError, match="E4E_MIRROR.*unsupported"):
        zoo.download("toy", force=True, progress=False)


def test_hugging_face_sources_follow_hf_endpoint(server, cache, monkeypatch):
    server.files["/org/repo/resolve/main/weights/toy.pt"] = PAYLOAD
    monkeypatch.setenv("HF_ENDPOINT", server.url(""))
    use_registry(monkeypatch, entry("hf:org/repo/weights/toy.pt"))
    assert zoo.download("toy", progress=False).read_bytes() == PAYLOAD
    assert fetch.hf_url("hf:org/repo/weights/toy.pt") == server.url("/org/repo/resolve/main/weights/toy.pt")


def test_packaged_ffhq_encoder_has_the_hugging_face_mirror():
    e = zoo.entries()["e4e_ffhq_encode"]
    assert len(e.sources) == 2 and e.sources[1].startswith("hf:AIRI-Institute/HairFastGAN/")
    assert fetch.source_url(e.sources[1]).endswith("/resolve/main/pretrained_models/encoder4editing/e4e_ffhq_encode.pt")
    assert e.size is None and e.approx_size == 1_200_000_000 and zoo.published_size(e) == "~1.1 GiB"


def test_first_download_sha256_is_kept_and_checked_afterwards(server, cache, monkeypatch):
    use_registry(monkeypatch, entry(server.url("/w.pt"), sha256=None))
    path = zoo.download("toy", progress=False)
    record = (cache / "toy.pt.sha256").read_text().splitlines()
    assert record[0] == f"{PAYLOAD_SHA}  toy.pt"
    monkeypatch.setattr(fetch, "sha256_of", lambda p: pytest.fail("an unchanged file is not hashed again"))
    assert zoo.resolve("toy") == path
    monkeypatch.undo()
    monkeypatch.setenv("E4E_HOME", str(cache))
    use_registry(monkeypatch, entry(server.url("/w.pt"), sha256=None))
    path.write_bytes(bytes(reversed(PAYLOAD)))  # same size, other content (e.g. replaced by hand)
    with pytest.raises(zoo.ZooError, match="kept at its first download") as info:
        zoo.resolve("toy")
    assert "Delete it to download it again" in str(info.value)
    with pytest.raises(zoo.ZooError, match="kept at its first download"):
        zoo.resolve(str(path))  # by its path, too
    os.utime(path)
    path.write_bytes(PAYLOAD)  # the right content again, new mtime: hashed and accepted
    assert zoo.resolve("toy") == path


def test_published_sha256_is_checked_on_the_cached_file(cache, monkeypatch):
    use_registry(monkeypatch, entry(UNREACHABLE))
    cache.mkdir()
    (cache / "toy.pt").write_bytes(b"not the file")
    with pytest.raises(zoo.ZooError, match="the published sha256"):
        zoo.resolve("toy")


def test_weights_list_shows_published_and_cached_sizes(cache, monkeypatch):
    import dataclasses

    approx = dataclasses.replace(entry(UNREACHABLE, name="big"), approx_size=1_200_000_000)
    use_registry(monkeypatch, entry(UNREACHABLE, size=len(PAYLOAD)), approx, entry(UNREACHABLE, name="unknown", sha256=None))
    from e4ecli.cli import app

    result = CliRunner().invoke(app, ["weights", "list"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.output.splitlines() if line.split()[1:2] in (["toy"], ["big"], ["unknown"])}
    assert "300.0 KiB" in rows["toy"] and "~1.1 GiB" in rows["big"] and " ? " in rows["unknown"]


def test_a_saved_web_page_is_not_reported_as_needing_python_code(tmp_path):
    from e4ecli.hub.checkpoints import CheckpointError, load_checkpoint

    page = tmp_path / "e4e_ffhq_encode.pt"
    page.write_bytes(QUOTA_PAGE)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(page)
    message = str(info.value)
    assert "a web page (HTML), not a checkpoint" in message and "arbitrary Python code" not in message


def test_metric_and_landmark_weights_go_through_the_fetcher_and_its_mirror(server, cache, tmp_path, monkeypatch):
    """FID's InceptionV3 and face-alignment's weights come through hub.fetch: $E4E_MIRROR first, verified, locked."""
    import torch

    from e4ecli import landmarks
    from e4ecli.metrics import MetricUnavailable
    from e4ecli.metrics.fid import inception_extractor, inception_weights_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    path, _ = inception_weights_file()
    server.files[f"/mirror/{path.name}"] = b"served by the mirror, not a state dict"
    monkeypatch.setenv("E4E_MIRROR", server.url("/mirror"))
    with pytest.raises(MetricUnavailable, match="not a readable InceptionV3"):
        inception_extractor(torch.device("cpu"), allow_download=True)
    assert path.read_bytes() == server.files[f"/mirror/{path.name}"]

    (url, fan_path), = landmarks.fan_weight_files(("http://127.0.0.1:9/fan.pth",))
    server.files["/mirror/fan.pth"] = PAYLOAD
    assert landmarks.ensure_fan_weights(urls=(url,)) == [fan_path] and fan_path.read_bytes() == PAYLOAD
    assert fan_path.with_name("fan.pth.sha256").is_file()


def test_a_cached_file_that_does_not_fit_its_zoo_name_is_reported(e4e_64, cache):
    """A 64 px encoder cached as the FFHQ 1024 encoder: loading it says so, by name or by path."""
    import shutil

    from e4ecli.hub.checkpoints import CheckpointError, load_checkpoint

    cache.mkdir()
    shutil.copy(e4e_64, cache / "e4e_ffhq_encode.pt")
    with pytest.raises(CheckpointError, match="cached as the zoo's 'e4e_ffhq_encode'.*1024 px generator.*64 px generator") as info:
        load_checkpoint(zoo.resolve("e4e_ffhq_encode", download=False))
    assert "e4e weights download e4e_ffhq_encode" in str(info.value)
    shutil.copy(e4e_64, cache / "stylegan2-ffhq-config-f.pt")
    with pytest.raises(CheckpointError, match="has a generator, .* but this file has an encoder"):
        load_checkpoint(cache / "stylegan2-ffhq-config-f.pt")
    assert load_checkpoint(e4e_64).generator.size == 64  # the same file under its own name is fine


def test_file_id_of_a_fetched_file_reuses_the_kept_sha256(server, cache, monkeypatch):
    from e4ecli.hub import checkpoints, file_ids

    use_registry(monkeypatch, entry(server.url("/w.pt"), sha256=None))
    path = zoo.download("toy", progress=False)
    monkeypatch.setattr(file_ids, "sha256_of", lambda p: pytest.fail("the fetched file is not hashed again"))
    assert checkpoints.file_id(path) == PAYLOAD_SHA[:16]


def test_gdown_quota_error_is_reported_as_the_web_page_it_was(cache, monkeypatch):
    """Newer gdown raises FileURLRetrievalError on Drive's quota page instead of saving it."""
    import gdown
    from gdown.exceptions import FileURLRetrievalError

    def refuse(**_):
        raise FileURLRetrievalError("Failed to retrieve file url:\n\n\tToo many users have viewed or downloaded this file "
                                    "recently. Please try accessing the file again later.\n\nYou may still be able to ...")

    monkeypatch.setattr(gdown, "download", refuse)
    use_registry(monkeypatch, entry("gdrive:QUOTA", "hf:org/repo/toy.pt", sha256=None))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(zoo.ZooError) as info:
        zoo.download("toy", progress=False)
    line = next(x for x in str(info.value).splitlines() if "drive.google.com" in x)
    assert "Google Drive returned a web page, not the file: quota exceeded? try the mirror http://127.0.0.1:9/org/repo/resolve/main/toy.pt" in line
    assert "Too many users" in line


def test_a_cache_that_cannot_keep_the_sha256_still_serves_the_file(cache, monkeypatch):
    use_registry(monkeypatch, entry(UNREACHABLE, sha256=None))
    cache.mkdir()
    (cache / "toy.pt").write_bytes(PAYLOAD)
    (cache / "toy.pt.sha256").mkdir()  # the record cannot be written (as on a read-only shared cache)
    assert zoo.resolve("toy") == cache / "toy.pt"
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]
