"""Multi-process training as torchrun runs it (RANK/WORLD_SIZE/MASTER_* in the environment, DDP), with
2 gloo processes on CPU: every rank ends every step with the same weights, rank 0 alone writes."""
from __future__ import annotations

import json

import pytest
import torch
import torch.multiprocessing as mp

from e4ecli.hub.checkpoints import safe_load
from e4ecli.training import options as O
from train_support import alexnet_cache, ddp_worker, digests, free_port, tiny_generator, write_photos


@pytest.mark.slow
def test_two_gloo_processes_stay_in_sync_and_only_rank_0_writes(tmp_path, monkeypatch):
    alexnet_cache(monkeypatch, tmp_path / "torch_home")  # inherited by the spawned processes
    write_photos(tmp_path / "train", ["face", "rotated", "crop", "car"], size=40)
    write_photos(tmp_path / "val", ["aligned", "car"], size=40)
    exp = tmp_path / "exp"
    opts = O.merge({
        "exp_dir": str(exp), "data": str(tmp_path / "train"), "val_data": str(tmp_path / "val"),
        "stylegan_weights": str(tiny_generator(tmp_path / "g8.pt")), "encoder_init": "none", "id_lambda": 0,
        "input_size": 32, "batch_size": 1, "test_batch_size": 1, "workers": 0, "test_workers": 0, "max_steps": 1,
        "progressive_start": 1, "progressive_step_every": 1, "w_discriminator_lambda": 0.1, "use_w_pool": True,
        "w_pool_size": 2, "d_reg_every": 1, "start_from_latent_avg": True, "board_interval": 1, "device": "cpu",
    })
    out = tmp_path / "ranks"
    out.mkdir()
    mp.spawn(ddp_worker, args=(2, free_port(), opts, str(out)), nprocs=2, join=True)

    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["steps"] == r1["steps"] == [0, 1]
    assert r0["encoder"] == r1["encoder"]  # each rank saw other images; gradients were averaged
    assert r0["discriminator"] == r1["discriminator"]
    assert r0["wrote_log"] and not r1["wrote_log"]

    lines = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    # once each; with fewer than 5 validation batches step 0 validates in full, as the original
    assert [(r["split"], r["step"]) for r in lines] == [("train", 0), ("val", 0), ("train", 1), ("val", 1)]
    ckdir = exp / "checkpoints"
    assert sorted(p.name for p in ckdir.iterdir()) == ["best_model.pt", "iteration_1.pt", "timestamp.txt"]  # no --save-interval
    assert sorted(p.name for p in exp.iterdir()) == ["checkpoints", "logs", "metrics.jsonl", "opt.json"]
    final = safe_load(ckdir / "iteration_1.pt")
    enc = {k[len("encoder."):]: v for k, v in final["state_dict"].items() if k.startswith("encoder.")}
    assert digests(enc) == r0["encoder"]
    state = final["e4ecli_training"]
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    assert not torch.equal(state["ranks"][0]["rng"]["torch"], state["ranks"][1]["rng"]["torch"])  # own streams per rank
