"""--keep-optimizer across layouts: a checkpoint in the original's layout (ONE Ranger group over
encoder.parameters(), a step count per parameter) resumes here with its state mapped onto the
per-style groups, and the checkpoints written here hold the original's layout again."""
from __future__ import annotations

import pytest
import torch

from e4ecli.runtime import Dist
from e4ecli.training import loop
from e4ecli.training import options as optmod
from e4ecli.training import progressive as prog
from train_support import kit, write_photos

STEP, SCHEDULE = 5, [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]  # step 5 is stage 2: base, style_1 and style_2 trained
STEPS_BY_GROUP = {"base": 6, "style_1": 4, "style_2": 2}  # steps 0-5, 2-5, 4-5


def _original_checkpoint(path):
    """The kit's 64 px e4e with optimiser state as the original's Ranger writes it (seeded numbers)."""
    w = kit()
    manifest = w.load_manifest("Encoder4Editing_64")
    parts = {part: w.make_state_dict(manifest, part, 7 + i) for i, part in enumerate(("encoder", "decoder"))}
    from e4ecli.models.encoders import ENCODERS

    encoder = ENCODERS["Encoder4Editing"](64, 50)
    trained = {n: g for g, params in prog.encoder_param_groups(encoder)[:3] for p in params
               for n, q in encoder.named_parameters() if q is p}
    param_names = {n for n, _ in encoder.named_parameters()}
    order = [k for k, *_ in manifest["parts"]["encoder"] if k in param_names]  # the original's parameter order
    assert len(order) == len(param_names)
    g = torch.Generator().manual_seed(3)
    state = {}
    for i, name in enumerate(order):
        if name in trained:
            shape = parts["encoder"][name].shape
            state[i] = {"step": STEPS_BY_GROUP[trained[name]], "exp_avg": torch.randn(shape, generator=g),
                        "exp_avg_sq": torch.rand(shape, generator=g), "slow_buffer": torch.randn(shape, generator=g)}
    group = {"lr": 1e-4, "alpha": 0.5, "k": 6, "step_counter": 0, "betas": (0.95, 0.999), "N_sma_threshhold": 5,
             "eps": 1e-5, "weight_decay": 0, "params": list(range(len(order)))}
    opts = {"exp_dir": "experiment", "dataset_type": "ffhq_encode", "encoder_type": "Encoder4Editing", "batch_size": 1,
            "learning_rate": 1e-4, "optim_name": "ranger", "start_from_latent_avg": True, "progressive_steps": SCHEDULE,
            "stylegan_size": 64, "w_discriminator_lambda": 0.0}
    sd = {f"{part}.{k}": v for part, d in parts.items() for k, v in d.items()}
    torch.save({"state_dict": sd, "opts": opts, "latent_avg": torch.randn(10, 512, generator=g), "global_step": STEP,
                "best_val_loss": None, "optimizer": {"state": state, "param_groups": [group]}}, path)
    return path, order


def _trainer(tmp_path, source, **extra):
    write_photos(tmp_path / "train", ["face"], size=64)
    given = {"exp_dir": str(tmp_path / "exp"), "data": str(tmp_path / "train"), "resume_training_from_ckpt": str(source),
             "keep_optimizer": True, "lpips_lambda": 0, "id_lambda": 0, "input_size": 64, "batch_size": 1, "workers": 0,
             "device": "cpu", **extra}
    return loop.Trainer(loop.prepare(optmod.merge(given), set(given)), Dist(), torch.device("cpu"))


def test_an_original_layout_optimizer_maps_onto_the_style_groups_and_is_written_back_in_that_layout(tmp_path):
    source, order = _original_checkpoint(tmp_path / "original.pt")
    saved = torch.load(source, weights_only=True)["optimizer"]
    trainer = _trainer(tmp_path, source)
    trainer.setup()
    assert [g["name"] for g in trainer.c.optimizer.param_groups] == ["base", "style_1", "style_2"]
    assert [g["step"] for g in trainer.c.optimizer.param_groups] == [6, 4, 2]
    params = dict(trainer.c.encoder.named_parameters())
    for i, name in enumerate(order):
        mine = trainer.c.optimizer.state.get(params[name], {})
        assert set(mine) == ({"exp_avg", "exp_avg_sq", "slow_buffer"} if i in saved["state"] else set()), name
        for k in mine:
            assert torch.equal(mine[k], saved["state"][i][k]), (name, k)

    path = trainer.checkpoint(STEP, {}, best=False)  # the other direction: what this trainer writes
    written = torch.load(path, weights_only=True)["optimizer"]
    assert written["param_groups"] == saved["param_groups"]
    assert sorted(written["state"]) == sorted(saved["state"])
    for i, st in saved["state"].items():
        assert set(written["state"][i]) == set(st)
        assert written["state"][i]["step"] == st["step"]
        assert all(torch.equal(written["state"][i][k], st[k]) for k in ("exp_avg", "exp_avg_sq", "slow_buffer"))


@pytest.mark.parametrize("extra, cause", [({"train_decoder": True}, "--train-decoder"), ({"optim_name": "adam"}, "Ranger state")])
def test_an_optimizer_that_cannot_fit_is_refused_naming_the_cause(tmp_path, extra, cause):
    source, _ = _original_checkpoint(tmp_path / "original.pt")
    with pytest.raises(loop.TrainError) as e:
        _trainer(tmp_path, source, **extra).setup()
    assert cause in str(e.value) and "original.pt" in str(e.value)
