"""Messages the tool lays out on several lines (download failures, several missing weights files) keep their
line breaks, while a line break inside a name (a path, a URL) is still shown as \\n and cannot forge a line.
Real downloads against the local HTTP server, real zoo code; only the registry is pointed at test entries."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import run
from e4ecli.hub import zoo
from http_server import PAYLOAD, server  # noqa: F401 -- a fixture

UNREACHABLE = "http://127.0.0.1:9/x"
HOSTILE = "evil\nerror: forged line"  # a folder name holding a line break
SHOWN = "evil\\nerror: forged line"  # how it must be printed


def toy(*sources: str) -> zoo.Entry:
    return zoo.Entry(name="toy", filename="toy.pt", kind="encoder", domain="ffhq", description="test weights",
                     sources=tuple(sources), sha256=hashlib.sha256(PAYLOAD).hexdigest(), size=len(PAYLOAD))


@pytest.fixture
def hostile_home(tmp_path, monkeypatch, server):  # noqa: F811
    """E4E_HOME under a folder whose name holds a line break; the registry holds one entry whose sources all fail
    (a 404 on the local server, then a closed port)."""
    home = tmp_path / HOSTILE / "home"
    monkeypatch.setenv("E4E_HOME", str(home))
    for var in [v for v in os.environ if v.startswith("E4E_URL_") or v in ("E4E_MIRROR", "HF_ENDPOINT")]:
        monkeypatch.delenv(var)
    monkeypatch.setattr(zoo, "load_registry", lambda: {"toy": toy(server.url("/missing.pt"), UNREACHABLE)})
    return home


def laid_out(output: str) -> list[str]:
    """The output's lines, after checking the tool wrote no literal \\n of its own (the hostile name's is removed
    first: it must be there, escaped) and no line the hostile name forged."""
    assert SHOWN in output, output
    assert "\\n" not in output.replace(SHOWN, ""), output
    lines = output.splitlines()
    assert not [ln for ln in lines if ln.startswith("error: forged line")], output
    return lines


def test_download_failure_is_laid_out_on_lines_with_the_name_escaped(hostile_home):
    res = run("weights", "download", "toy", "--quiet")
    assert res.exit_code == 1, res.output
    lines = laid_out(res.output)
    assert lines[0] == "error: could not download 'toy':"
    assert any(ln.startswith("  http://127.0.0.1:") and "404" in ln for ln in lines), res.output
    assert any(ln.startswith(f"  {UNREACHABLE}: cannot connect") for ln in lines), res.output
    assert "and place it at:" in lines
    assert f"  {str(hostile_home).replace(chr(10), chr(92) + 'n')}/toy.pt" in lines


def test_offline_path_message_is_laid_out_on_lines(hostile_home):
    res = run("weights", "path", "toy")
    assert res.exit_code == 1, res.output
    lines = laid_out(res.output)
    assert lines[0].startswith("error: weights 'toy' (toy.pt) are not in the cache") and "To work offline, download toy.pt from one of:" in lines


def test_a_command_that_cannot_fetch_its_checkpoint_lays_the_message_out(hostile_home, tmp_path):
    latent = tmp_path / "a.npy"
    np.save(latent, np.zeros((10, 512), np.float32))
    res = run("render", latent, "-o", tmp_path / "out", "--checkpoint", "toy", "--device", "cpu")
    assert res.exit_code == 2, res.output
    lines = laid_out(res.output)
    assert "error: could not download 'toy':" in lines and "and place it at:" in lines
    assert not (tmp_path / "out").exists()


def test_a_one_line_message_with_a_line_break_in_a_name_stays_one_line(tmp_path):
    bad = tmp_path / HOSTILE
    bad.mkdir()
    ck = bad / "ck.pt"
    ck.write_bytes(b"not a checkpoint at all")
    latent = tmp_path / "a.npy"
    np.save(latent, np.zeros((10, 512), np.float32))
    res = run("render", latent, "-o", tmp_path / "out", "--checkpoint", ck, "--device", "cpu")
    assert res.exit_code == 2, res.output
    errors = [ln for ln in laid_out(res.output) if ln.startswith("error:")]
    assert len(errors) == 1 and SHOWN in errors[0], res.output


def test_an_error_re_raised_with_the_same_text_keeps_its_lines():
    from e4ecli.cli.common import error_text, message_lines
    from e4ecli.hub.fetch import FetchError
    from e4ecli.training.plan import TrainError

    try:
        try:
            raise FetchError(["could not download 'x':", f"  {UNREACHABLE}: cannot connect", f"  {HOSTILE}"])
        except FetchError as e:
            raise TrainError(str(e)) from None
    except TrainError as e:
        assert message_lines(e) == ["could not download 'x':", f"  {UNREACHABLE}: cannot connect", f"  {HOSTILE}"]
        assert error_text(e, "") == f"could not download 'x':\n  {UNREACHABLE}: cannot connect\n  {SHOWN}"
    several = TrainError(["2 weights file(s) missing:", "  a.pt: not found", "  b.pt: not found"])
    assert error_text(several, "").splitlines() == ["2 weights file(s) missing:", "  a.pt: not found", "  b.pt: not found"]
    assert message_lines(f"{HOSTILE}: no such file") == [f"{HOSTILE}: no such file"]  # a string is one line
    assert message_lines(TrainError(f"{HOSTILE}: wrapped with other words")) == [f"{HOSTILE}: wrapped with other words"]


def test_a_summary_of_failures_escapes_names_and_writes_no_literal_newline(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "two\nlines.npy").write_bytes(b"garbage")
    res = run("render", folder, "-o", tmp_path / "out", "--checkpoint", tmp_path / "missing.pt")
    assert res.exit_code == 2 and "\\n" not in res.output.replace("two\\nlines", ""), res.output
    assert Path(tmp_path / "missing.pt").name in res.output
