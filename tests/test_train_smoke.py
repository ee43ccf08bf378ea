"""End to end on CPU: `e4e train` over real photos with the conformance kit's 64 px generator, through
several progressive stages with the latent discriminator, R1, W pools, every loss (LPIPS on a
seeded AlexNet in the torch hub cache, ArcFace identity, delta regularisation), validation, image
grids, TensorBoard and official-format checkpoints that `e4e invert` loads back."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from e4ecli.cli import app
from e4ecli.hub.checkpoints import load_checkpoint, safe_load
from train_support import alexnet_cache, arcface_file, generator_64, kit, write_photos

LOSS_NAMES = {"loss", "loss_l2", "loss_lpips", "loss_id", "id_improve", "encoder_discriminator_loss", "d_real_loss",
              "d_fake_loss", "discriminator_loss", "total_delta_loss"}


@pytest.mark.slow
def test_train_smoke_run_logs_every_loss_and_writes_checkpoints_invert_can_load(tmp_path, monkeypatch):
    weights = kit()
    alexnet_cache(monkeypatch, tmp_path / "torch_home")
    write_photos(tmp_path / "train", ["face", "crop", "car"], size=72)
    (tmp_path / "train" / "zz_unreadable.jpg").write_bytes(b"not a jpeg")
    write_photos(tmp_path / "val", ["aligned"], size=72)
    gen = generator_64(tmp_path / "g64.pt")
    arcface = arcface_file(tmp_path / "model_ir_se50.pth")
    exp = tmp_path / "exp"
    args = ["train", "--exp-dir", str(exp), "--data", str(tmp_path / "train"), "--val-data", str(tmp_path / "val"),
            "--stylegan-weights", str(gen), "--encoder-init", str(arcface), "--id-weights", str(arcface),
            "--input-size", "64", "--batch-size", "1", "--test-batch-size", "1", "--workers", "0", "--test-workers", "0",
            "--max-steps", "3", "--progressive-start", "1", "--progressive-step-every", "1",
            "--w-discriminator-lambda", "0.1", "--use-w-pool", "--w-pool-size", "2", "--d-reg-every", "2",
            "--start-from-latent-avg", "--val-interval", "2", "--save-interval", "3", "--board-interval", "1",
            "--image-interval", "2", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    out = result.output
    flat = "".join(out.split())  # the console wraps long lines
    assert result.exit_code == 1, out  # one input could not be read: reported, training went on, exit 1
    assert flat.count("zz_unreadable.jpg:skipped") == 1, out
    assert "train: summary" in out

    lines = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    train = {r["step"]: r for r in lines if r["split"] == "train"}
    val = {r["step"]: r for r in lines if r["split"] == "val"}
    # with fewer than 5 validation batches the original's step-0 sanity pass is a full validation: logged, best model
    assert sorted(train) == [0, 1, 2, 3] and sorted(val) == [0, 2, 3]
    assert [train[s]["progressive_stage"] for s in range(4)] == [0, 1, 2, 3]
    for r in train.values():
        assert LOSS_NAMES <= set(r), set(r)
        assert all(v is not None and np.isfinite(v) for v in r.values() if not isinstance(v, str)), r  # NaN is logged as None
    assert "discriminator_r1_loss" in train[0] and "discriminator_r1_loss" in train[2] and "discriminator_r1_loss" not in train[1]
    assert {"delta1_loss", "delta2_loss", "delta3_loss"} <= set(train[3]) and "delta1_loss" not in train[0]
    assert train[3]["total_delta_loss"] == pytest.approx(sum(train[3][f"delta{i}_loss"] for i in (1, 2, 3)), rel=1e-5)
    assert {"loss", "loss_l2", "loss_lpips", "loss_id", "d_real_loss"} <= set(val[2])

    assert list((exp / "logs").glob("events.out.tfevents.*"))
    assert (exp / "logs/images/train/faces/0000.jpg").is_file() and (exp / "logs/images/train/faces/0002.jpg").is_file()
    assert (exp / "logs/images/test/faces/0000_0002.jpg").is_file()
    opt = json.loads((exp / "opt.json").read_text())
    assert opt["progressive_steps"] == list(range(10)) and opt["stylegan_size"] == 64

    ckdir = exp / "checkpoints"
    assert "**Best**: Step - 0," in (ckdir / "timestamp.txt").read_text()
    assert sorted(p.name for p in ckdir.iterdir()) == ["best_model.pt", "iteration_0.pt", "iteration_3.pt", "timestamp.txt"]
    manifest = weights.load_manifest("Encoder4Editing_64")["parts"]
    final = safe_load(ckdir / "iteration_3.pt")  # weights_only: plain tensors and dicts only
    for part in ("encoder", "decoder"):
        keys = [(f"{part}.{k}", tuple(shape)) for k, shape, *_ in manifest[part]]
        assert [(k, tuple(v.shape)) for k, v in final["state_dict"].items() if k.startswith(part + ".")] == keys
    assert final["opts"]["encoder_type"] == "Encoder4Editing" and final["latent_avg"].shape == (10, 512)
    assert final["global_step"] == 3 and "optimizer" in final and "discriminator_state_dict" in final
    best = safe_load(ckdir / "best_model.pt")
    assert "optimizer" not in best and set(best) == {"state_dict", "opts", "latent_avg"}

    loaded = load_checkpoint(ckdir / "best_model.pt")
    assert loaded.kind == "Encoder4Editing" and loaded.n_styles == 10
    assert torch.equal(loaded.latent_avg, best["latent_avg"])
    photos = tmp_path / "to_invert"
    write_photos(photos, ["face"], size=64)
    inv = CliRunner().invoke(app, ["invert", str(photos), "-o", str(tmp_path / "latents"), "--checkpoint",
                                   str(ckdir / "iteration_3.pt"), "--device", "cpu"])
    assert inv.exit_code == 0, inv.output
    assert np.load(tmp_path / "latents" / "face.npy").shape == (10, 512)


@pytest.mark.slow
def test_train_smoke_run_over_a_stylegan2_ada_pickle(tmp_path):
    """`--stylegan-weights` takes NVIDIA's .pkl directly (read without running its code); the frozen
    decoder in the saved checkpoint is exactly the converted G_ema, and the result inverts."""
    from conftest import KIT

    kit()
    pkl = KIT / "ada" / "ada_64_map2.pkl"
    write_photos(tmp_path / "train", ["face", "crop"], size=72)
    exp = tmp_path / "exp"
    args = ["train", "--exp-dir", str(exp), "--data", str(tmp_path / "train"), "--stylegan-weights", str(pkl),
            "--encoder-init", "none", "--lpips-lambda", "0", "--id-lambda", "0", "--input-size", "64",
            "--batch-size", "1", "--workers", "0", "--max-steps", "2", "--progressive-start", "1",
            "--progressive-step-every", "1", "--w-discriminator-lambda", "0.1", "--start-from-latent-avg",
            "--save-interval", "2", "--board-interval", "1", "--image-interval", "100", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    assert sorted(r["step"] for r in lines if r["split"] == "train") == [0, 1, 2]
    ck = load_checkpoint(exp / "checkpoints" / "iteration_2.pt")
    ada = load_checkpoint(pkl)
    assert ck.generator.channels == ada.generator.channels and ck.n_styles == 10
    theirs = ada.generator.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in ck.generator.state_dict().items())
    photos = tmp_path / "to_invert"
    write_photos(photos, ["face"], size=64)
    inv = CliRunner().invoke(app, ["invert", str(photos), "-o", str(tmp_path / "lat"), "--checkpoint",
                                   str(exp / "checkpoints" / "iteration_2.pt"), "--save-reconstructions"])
    assert inv.exit_code == 0, inv.output
    assert np.load(tmp_path / "lat" / "face.npy").shape == (10, 512)
