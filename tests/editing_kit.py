"""Shared fixtures for the editing tests: the conformance kit, small checkpoints, latents, directions.

Test modules import what they use (`from editing_kit import ...`); pytest then finds the fixtures.
The checkpoints come from conftest's `case_checkpoint` (written once per session).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import KIT, kit_or_skip, run

KIT_DIRECTIONS = KIT / "directions"
PUBLISHED = ("age.pt", "smile.pt", "pose.pt", "ffhq_pca.pt", "cars_pca.pt")


def need_kit() -> None:
    kit_or_skip()


def kit_module():
    """The kit's `weights` module (for `write_checkpoint`)."""
    need_kit()
    if str(KIT) not in sys.path:
        sys.path.insert(0, str(KIT))
    import weights

    return weights


def run_cli(args: list[str]):
    """Invoke `e4e ARGS` in-process, exceptions raised; returns the click Result (exit_code, output)."""
    return run(*args, catch_exceptions=False)


@pytest.fixture(scope="session")
def g64_path(case_checkpoint) -> Path:
    """The kit's 64 px rosinality generator (stylegan2_64_cm1) as a checkpoint file (conftest writes it once)."""
    return case_checkpoint("stylegan2_64_cm1")


@pytest.fixture(scope="session")
def g64(g64_path):
    from e4ecli.hub.checkpoints import load_checkpoint

    return load_checkpoint(g64_path)


@pytest.fixture(scope="session")
def wplus64() -> np.ndarray:
    """Three W+ latents (3, 10, 512) for the 64 px generator."""
    need_kit()
    return np.load(KIT / "cases" / "stylegan2_64_cm1.npz")["wplus"]


@pytest.fixture
def kit_directions(tmp_path, monkeypatch) -> Path:
    """A private E4E_HOME, and E4E_DIRECTIONS pointing at a copy of the kit's published files."""
    need_kit()
    folder = tmp_path / "published"
    folder.mkdir()
    for name in PUBLISHED:
        shutil.copy(KIT_DIRECTIONS / name, folder / name)
    monkeypatch.setenv("E4E_DIRECTIONS", str(folder))
    monkeypatch.setenv("E4E_HOME", str(tmp_path / "home"))
    return folder


@pytest.fixture
def empty_home(tmp_path, monkeypatch) -> Path:
    """A private, empty E4E_HOME and no E4E_DIRECTIONS."""
    monkeypatch.delenv("E4E_DIRECTIONS", raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("E4E_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def vitb32_file(tmp_path_factory) -> Path:
    """Seeded CLIP weights in open_clip's ViT-B-32 (OpenAI) layout, fp16 as OpenAI publishes them."""
    import torch

    from e4ecli.hub.clip import build_model

    torch.manual_seed(0)
    model, _ = build_model()
    path = tmp_path_factory.mktemp("clip") / "vitb32_seeded.pt"
    torch.save({k: v.half() for k, v in model.state_dict().items()}, path)
    return path


def write_relevance(generator, path: Path, seed: int = 2, domain: str = "ffhq") -> Path:
    """A seeded relevance file for `generator` in `e4e directions styleclip`'s layout (unit rows, one per conv channel)."""
    from e4ecli.edits import stylespace as ss

    layout = ss.conv_layout(generator)
    rel = np.random.RandomState(seed).randn(sum(layout), 512).astype(np.float32)
    rel /= np.linalg.norm(rel, axis=1, keepdims=True)
    np.savez(path, fs3=rel, channels=np.array(layout), domain=np.array(domain))
    return path


def kit_face_quad(scale: float = 0.5) -> np.ndarray:
    """A square around the kit's face (photos/face.jpg), oriented along the eyes, from the kit's
    landmarks: (4, 2) corners in the order TL, BL, BR, TR (pixel-index coordinates)."""
    need_kit()
    lm = np.load(KIT / "cases" / "align.npz")["landmarks_0"].astype(np.float64)
    centre = lm.mean(axis=0)
    eyes = lm[42:48].mean(axis=0) - lm[36:42].mean(axis=0)
    x = eyes / np.linalg.norm(eyes)
    y = np.array([-x[1], x[0]])
    h = scale * np.ptp(lm[:, 0])
    return np.stack([centre - h * x - h * y, centre - h * x + h * y, centre + h * x + h * y, centre + h * x - h * y])


def write_sidecar(path: Path, source: Path, quad: np.ndarray, output_size: int, **extra) -> Path:
    """An alignment sidecar with the fields paste-back reads."""
    import json

    data = {"source": str(source), "output_size": output_size, "quad": np.asarray(quad).tolist(), **extra}
    path.write_text(json.dumps(data))
    return path


def says(output: str, message: str) -> bool:
    """Whether CLI output contains message, ignoring where the terminal width wrapped lines."""
    return "".join(message.split()) in "".join(output.split())
