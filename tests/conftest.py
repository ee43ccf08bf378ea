"""Shared fixtures: the conformance kit (../shared/conformance) and checkpoints written from it."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT.parent / "shared" / "conformance"


def pytest_configure(config):
    """Under pytest-xdist, each worker gets its share of the cores (`-n 2` on 2 cores: one thread each) for
    torch here and, through OMP_NUM_THREADS/MKL_NUM_THREADS, for the subprocesses the tests start:
    otherwise every worker runs as many threads as there are cores and they fight over them."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers:
        return
    threads = str(max(1, (os.cpu_count() or 1) // int(workers)))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, threads)
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


# The files that took longest in CI (--durations, 2 workers; then this round's cuts), longest first. Under xdist (`--dist loadfile`, see
# pyproject's addopts: a worker takes a whole file, so module fixtures are built once) they are handed out first,
# so that no long file starts last while the other worker idles; then the files holding @pytest.mark.slow tests,
# then the rest in their usual order. Order only: every test runs either way.
LONGEST_FILES = ("test_invert_refine.py", "test_train_replay.py", "test_edit_video.py", "test_train_checkpoints.py",
                 "test_train_resume.py", "test_bench.py", "test_export.py", "test_memory.py", "test_eval_sweep.py",
                 "test_distributed.py", "test_train_ddp.py", "test_reliability_hostile.py", "test_reliability.py",
                 "test_cli_invert_render.py", "test_invert_stage.py", "test_conformance_models.py", "test_train_smoke.py",
                 "test_reruns.py")


def pytest_collection_modifyitems(config, items):
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return  # a plain run keeps pytest's order
    slow_files = {item.path.name for item in items if item.get_closest_marker("slow")}

    def rank(item) -> int:
        name = item.path.name
        if name in LONGEST_FILES:
            return LONGEST_FILES.index(name)
        return len(LONGEST_FILES) + (name not in slow_files)

    items.sort(key=rank)  # stable: a file's tests stay together and in their order


def kit_or_skip(needed: str = "weights.py") -> Path:
    """The kit's folder (its `weights` module importable), or skip the test saying where the kit was looked for."""
    if not (KIT / needed).is_file():
        pytest.skip(f"conformance kit not found at {KIT} (it lives in ../shared beside the repository; no {needed})")
    if str(KIT) not in sys.path:
        sys.path.insert(0, str(KIT))
    return KIT


def run(*args, catch_exceptions: bool = True):
    """`e4e ARGS` in-process on a wide terminal (messages stay whole); the click Result (exit_code, output)."""
    from typer.testing import CliRunner

    from e4ecli.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "250"}, catch_exceptions=catch_exceptions)


@pytest.fixture(scope="session")
def kit() -> Path:
    return kit_or_skip()


@pytest.fixture(scope="session")
def kit_weights(kit):
    import weights  # noqa: F401  (the kit's module, on sys.path via kit_or_skip)

    return weights


@pytest.fixture(scope="session")
def case_checkpoint(kit_weights, tmp_path_factory):
    """case name -> path of the checkpoint file that case was computed from (written once per session)."""
    made: dict[str, Path] = {}
    folder = tmp_path_factory.mktemp("kit_checkpoints")

    def get(case: str) -> Path:
        if case not in made:
            made[case] = kit_weights.write_checkpoint(case, folder / f"{case}.pt")
        return made[case]

    return get


@pytest.fixture(scope="session")
def styleflow_case(kit, case_arrays):
    """The kit's styleflow_flow case: (its json, which spells the calls and the edits; its arrays)."""
    import json

    return json.loads((kit / "cases" / "styleflow_flow.json").read_text()), case_arrays("styleflow_flow")


@pytest.fixture(scope="session")
def case_arrays(kit):
    cache: dict[str, dict] = {}

    def get(case: str) -> dict:
        if case not in cache:
            with np.load(kit / "cases" / f"{case}.npz") as z:
                cache[case] = {k: z[k] for k in z.files}
        return cache[case]

    return get


def write_e4e_64(weights, path: Path, **opts) -> Path:
    """A 64 px e4e checkpoint in the published layout, seeded from the kit's manifest Encoder4Editing_64;
    `opts` override the stored options (e.g. input_size)."""
    import torch

    manifest = weights.load_manifest("Encoder4Editing_64")
    sd = {f"{part}.{k}": v for i, part in enumerate(("encoder", "decoder"))
          for k, v in weights.make_state_dict(manifest, part, 7 + i).items()}
    opts = {"encoder_type": "Encoder4Editing", "stylegan_size": 64, "dataset_type": "ffhq_encode", "start_from_latent_avg": True, **opts}
    torch.save({"state_dict": sd, "opts": opts, "latent_avg": torch.randn(512, generator=torch.Generator().manual_seed(0))}, path)
    return path


def e4e_64_with_photos(weights, root: Path, seed: int) -> tuple[Path, Path]:
    """A 64 px e4e reading 64 px inputs (root/e4e_64.pt) and root/photos/{a,b}.png that its own generator
    renders from two random codes around the latent average."""
    import torch
    from PIL import Image

    from e4ecli.files.images import to_uint8
    from e4ecli.hub.checkpoints import load_checkpoint

    ckpt_path = write_e4e_64(weights, root / "e4e_64.pt", input_size=64)
    ckpt = load_checkpoint(ckpt_path)
    codes = ckpt.latent_avg + 0.7 * torch.randn(2, *ckpt.latent_avg.shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        images = to_uint8(ckpt.generator.synthesis(codes))
    photos = root / "photos"
    photos.mkdir()
    for name, img in zip("ab", images):
        Image.fromarray(img).save(photos / f"{name}.png")
    return ckpt_path, photos


@pytest.fixture(scope="session")
def e4e_64(kit_weights, tmp_path_factory) -> Path:
    return write_e4e_64(kit_weights, tmp_path_factory.mktemp("e4e64") / "e4e_64.pt")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never touch the user's real cache from tests."""
    monkeypatch.setenv("E4E_HOME", str(tmp_path / "e4e_home"))
