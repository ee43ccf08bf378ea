"""A typo is answered before torch is imported (that is what makes it fast: importing torch alone takes
1.5-2 s). Every case of benchmarks/typo_latency.py (which times them) runs in one fresh interpreter: the
right exit code, nothing created, and torch not in sys.modules afterwards -- except the few cases the
benchmark lists in NEEDS_TORCH, with the reason (they run last, for the exit code and the empty folder)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUNNER = r"""
import json, sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from typo_latency import CASES, NEEDS_TORCH, prepare
from typer.testing import CliRunner
from e4ecli.cli import app

assert "torch" not in sys.modules, "importing the CLI imported torch"
def run(label, args, expected):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        before = prepare(folder)
        import os
        os.chdir(folder)
        res = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
        os.chdir("/")
        created = sorted(str(p.relative_to(folder)) for p in set(folder.rglob("*")) - before)
    return {"case": label, "code": res.exit_code, "expected": expected, "created": created,
            "torch": "torch" in sys.modules, "output": res.output[-300:], "needs_torch": label in NEEDS_TORCH}


report = []
for label, args, expected in CASES:
    if label in NEEDS_TORCH:
        continue
    report.append(run(label, args, expected))
    if "torch" in sys.modules:
        break
else:  # the cases answered after torch loads, last: they still exit with the right code and create nothing
    report.extend(run(label, args, expected) for label, args, expected in CASES if label in NEEDS_TORCH)
print(json.dumps(report))
"""


def test_the_benchmark_cases_are_answered_without_torch():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", RUNNER, str(ROOT / "benchmarks")], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    spec = importlib.util.spec_from_file_location("typo_latency", ROOT / "benchmarks" / "typo_latency.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    assert len(report) == len(bench.CASES), report[-1]  # every case ran (none stopped early)
    for r in report:
        assert r["needs_torch"] or not r["torch"], f"{r['case']}: torch was imported before the typo was answered\n{r['output']}"
        assert r["code"] == r["expected"], r
        assert not r["created"], r
        assert "Traceback" not in r["output"], r
