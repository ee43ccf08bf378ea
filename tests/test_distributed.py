"""Scale-out: the same commands under torchrun (2 gloo processes on CPU) shard the inputs
deterministically, merge the manifest on rank 0, and reruns at another world size skip finished files."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


def torchrun(nproc: int, *args, cwd=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--standalone",
           "-m", "e4ecli", *map(str, args)]
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=cwd)


@pytest.mark.slow
def test_render_under_torchrun_shards_merges_and_reruns(tmp_path, case_checkpoint, case_arrays):
    z = case_arrays("stylegan2_64_cm1")
    lat = tmp_path / "lat"
    lat.mkdir()
    for i in range(5):
        np.save(lat / f"w{i}.npy", z["wplus"][i % 3] + 0.01 * i)
    np.save(lat / "bad.npy", np.zeros((3, 3), np.float32))
    out = tmp_path / "out"
    res = torchrun(2, "render", lat, "-o", out, "--checkpoint", case_checkpoint("stylegan2_64_cm1"), "--device", "cpu")
    assert res.returncode != 0, "a failed input on any rank must fail the run"
    assert "bad.npy" in res.stdout + res.stderr
    assert sorted(p.name for p in out.glob("*.png")) == [f"w{i}.png" for i in range(5)]
    assert not list(out.glob("manifest.rank*.jsonl")), "rank 0 merges the parts"
    records = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 6 and sum(r["status"] == "ok" for r in records) == 5
    # the 2-rank outputs equal a 1-process render
    ref = tmp_path / "ref"
    res1 = torchrun(1, "render", lat / "w3.npy", "-o", ref, "--checkpoint", case_checkpoint("stylegan2_64_cm1"))
    assert res1.returncode == 0, res1.stderr
    assert np.array_equal(np.asarray(Image.open(ref / "w3.png")), np.asarray(Image.open(out / "w3.png")))
    # a rerun with another world size skips everything already done
    (lat / "bad.npy").unlink()
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    res3 = torchrun(3, "render", lat, "-o", out, "--checkpoint", case_checkpoint("stylegan2_64_cm1"))
    assert res3.returncode == 0, res3.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == mtimes
    records = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert sum(r["status"] == "ok" for r in records) == 5
