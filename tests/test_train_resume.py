"""--resume: N steps, a kill, resume, M steps gives exactly what N + M steps in one go give (weights,
optimiser and discriminator state, W pools, RNG streams, logged metrics), across an epoch boundary
and a progressive stage change; and a run never silently overwrites another."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from e4ecli.cli import app
from e4ecli.hub.checkpoints import safe_load
from train_support import alexnet_cache, tiny_generator, write_photos


def _same(a, b, where="") -> None:
    """Recursive exact equality of checkpoint contents (tensors bit for bit)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        # torch adds the flag 'differentiable' (False) to groups made after a load_state_dict: same meaning as absent
        a, b = ({k: v for k, v in d.items() if not (k == "differentiable" and v is False)} for d in (a, b))
        assert isinstance(b, dict) and set(a) == set(b), (where, set(a) ^ set(b))
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def _metrics(exp):
    return [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    alexnet_cache(monkeypatch, tmp_path / "torch_home")
    write_photos(tmp_path / "train", size=40)  # 5 photos, 2 per step: epochs of 2 steps
    write_photos(tmp_path / "val", ["face", "car"], size=40)
    gen = tiny_generator(tmp_path / "g8.pt")  # 4 styles
    common = ["--data", str(tmp_path / "train"), "--val-data", str(tmp_path / "val"), "--stylegan-weights", str(gen),
              "--encoder-init", "none", "--id-lambda", "0", "--input-size", "32", "--batch-size", "2",
              "--test-batch-size", "2", "--workers", "0", "--test-workers", "0", "--progressive-start", "2",
              "--progressive-step-every", "1", "--w-discriminator-lambda", "0.1", "--use-w-pool", "--w-pool-size", "3",
              "--d-reg-every", "2", "--start-from-latent-avg", "--save-interval", "2", "--val-interval", "2",
              "--board-interval", "1", "--image-interval", "100", "--device", "cpu"]
    runner = CliRunner()
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    r = runner.invoke(app, ["train", "--exp-dir", str(whole), "--max-steps", "3", *common])
    assert r.exit_code == 0, r.output
    # The same run killed during step 3: what it had written by then (a run ending at step 2, on --val-interval and
    # --save-interval, does nothing else up to there), its step-3 metrics lines, the hidden temp file of an
    # interrupted write and a damaged newer checkpoint.
    r = runner.invoke(app, ["train", "--exp-dir", str(parts), "--max-steps", "2", *common])
    assert r.exit_code == 0, r.output
    ckdir = parts / "checkpoints"
    with open(parts / "metrics.jsonl", "a") as f:
        f.writelines(json.dumps(m) + "\n" for m in _metrics(whole) if m["step"] == 3)
    (ckdir / ".iteration_3.pt.4242-abcdef.tmp.pt").write_bytes(b"what a killed write leaves")  # never picked up
    (ckdir / "iteration_5.pt").write_bytes((ckdir / "iteration_2.pt").read_bytes()[:4096])  # a damaged file
    r = runner.invoke(app, ["train", "--exp-dir", str(parts), "--resume", "--max-steps", "3"])
    assert r.exit_code == 0, r.output
    flat = "".join(r.output.split())
    assert "skippediteration_5.pt" in flat and "iteration_2.ptatstep3" in flat, r.output

    a, b = safe_load(whole / "checkpoints/iteration_3.pt"), safe_load(ckdir / "iteration_3.pt")
    for key in ("state_dict", "latent_avg", "optimizer", "discriminator_state_dict", "discriminator_optimizer_state_dict",
                "global_step", "best_val_loss", "e4ecli_training"):
        _same(a[key], b[key], key)
    assert a["e4ecli_training"]["param_groups"] == ["base", "style_1", "style_2"]
    for older in ("iteration_0.pt", "iteration_2.pt"):  # only the newest checkpoint keeps the training state
        assert set(safe_load(whole / "checkpoints" / older)) == {"state_dict", "opts", "latent_avg", "e4ecli_generator_config"}, older
    assert a["e4ecli_training"]["ranks"][0]["pools"]["real"]["ws"].shape == (3, 512)
    assert _metrics(whole) == _metrics(parts)  # same losses at every step, nothing logged twice
    _same(safe_load(whole / "checkpoints/best_model.pt")["state_dict"], safe_load(ckdir / "best_model.pt")["state_dict"])

    # A run that ended at --max-steps 1 (validating there, off --val-interval) and is resumed to step 3 trains
    # exactly as the uninterrupted run: validation has its own random stream and leaves the W pools alone.
    stopped = tmp_path / "stopped"
    r = runner.invoke(app, ["train", "--exp-dir", str(stopped), "--max-steps", "1", *common])
    assert r.exit_code == 0, r.output
    assert [m["step"] for m in _metrics(stopped) if m["split"] == "val"] == [0, 1]
    r = runner.invoke(app, ["train", "--exp-dir", str(stopped), "--resume", "--max-steps", "3"])
    assert r.exit_code == 0, r.output
    c = safe_load(stopped / "checkpoints/iteration_3.pt")
    for key in ("state_dict", "optimizer", "discriminator_state_dict", "discriminator_optimizer_state_dict", "global_step"):
        _same(a[key], c[key], key)
    _same(a["e4ecli_training"], c["e4ecli_training"], "e4ecli_training")  # RNG streams and W pools included
    extra_val = [m for m in _metrics(stopped) if m not in _metrics(whole)]
    assert [(m["step"], m["split"]) for m in extra_val] == [(1, "val")]  # the stop's own validation, nothing else


def test_a_new_run_refuses_an_experiment_folder_that_holds_one(tmp_path):
    (tmp_path / "exp" / "checkpoints").mkdir(parents=True)
    (tmp_path / "exp" / "checkpoints" / "iteration_0.pt").write_bytes(b"x")
    (tmp_path / "data").mkdir()
    r = CliRunner().invoke(app, ["train", "--exp-dir", str(tmp_path / "exp"), "--data", str(tmp_path / "data"), "--device", "cpu"])
    assert r.exit_code == 2
    text = " ".join(r.output.split())
    assert "already holds a training run" in text and "continue it with --resume" in text


@pytest.mark.slow
def test_fine_tuning_starts_from_a_published_format_checkpoint(tmp_path, monkeypatch):
    """--checkpoint-path: encoder, decoder and latent average come from the file (here: a best_model.pt)."""
    alexnet_cache(monkeypatch, tmp_path / "torch_home")
    write_photos(tmp_path / "train", ["face", "car"], size=40)
    gen = tiny_generator(tmp_path / "g8.pt")
    common = ["--data", str(tmp_path / "train"), "--encoder-init", "none", "--id-lambda", "0", "--input-size", "32",
              "--batch-size", "2", "--workers", "0", "--start-from-latent-avg", "--max-steps", "0", "--device", "cpu"]
    runner = CliRunner()
    r = runner.invoke(app, ["train", "--exp-dir", str(tmp_path / "base"), "--stylegan-weights", str(gen), *common])
    assert r.exit_code == 0, r.output
    source = tmp_path / "base" / "checkpoints" / "iteration_0.pt"
    r = runner.invoke(app, ["train", "--exp-dir", str(tmp_path / "ft"), "--checkpoint", str(source), "--progressive-start", "5", *common])
    assert r.exit_code == 0, r.output
    src, ft = safe_load(source), safe_load(tmp_path / "ft" / "checkpoints" / "iteration_0.pt")
    assert torch.equal(src["latent_avg"], ft["latent_avg"])
    for k, v in src["state_dict"].items():
        if k.startswith("decoder.") or k.startswith(("encoder.styles.3.", "encoder.latlayer1.")):
            assert torch.equal(v, ft["state_dict"][k]), k  # frozen / not yet unlocked at stage 0: as in the file
    trained = "encoder.styles.0.linear.weight"
    assert not torch.equal(src["state_dict"][trained], ft["state_dict"][trained])
    assert ft["opts"]["checkpoint_path"] == str(source)
