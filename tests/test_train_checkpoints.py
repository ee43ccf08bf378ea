"""What a run leaves on disk (issue 12): only the newest iteration checkpoint keeps the training
state, --keep-last K keeps K of them, no checkpoint before --max-steps without --save-interval, and
every missing weights file is reported in one go before anything is built."""
from __future__ import annotations

from typer.testing import CliRunner

from e4ecli.cli import app
from e4ecli.hub.checkpoints import safe_load
from train_support import tiny_generator, write_photos


def _common(tmp_path):
    write_photos(tmp_path / "train", ["face", "car"], size=40)
    gen = tiny_generator(tmp_path / "g8.pt")
    return ["--data", str(tmp_path / "train"), "--stylegan-weights", str(gen), "--encoder-init", "none", "--id-lambda", "0",
            "--lpips-lambda", "0", "--input-size", "32", "--batch-size", "2", "--workers", "0", "--device", "cpu",
            "--w-discriminator-lambda", "0.1", "--start-from-latent-avg"]


def test_keep_last_and_training_state_only_in_the_newest_checkpoint(tmp_path):
    common = _common(tmp_path)
    runner = CliRunner()
    exp = tmp_path / "kept"
    r = runner.invoke(app, ["train", "--exp-dir", str(exp), "--max-steps", "3", "--save-interval", "1", "--keep-last", "2", *common])
    assert r.exit_code == 0, r.output
    ckdir = exp / "checkpoints"
    assert sorted(p.name for p in ckdir.glob("*.pt")) == ["iteration_2.pt", "iteration_3.pt"]
    assert set(safe_load(ckdir / "iteration_2.pt")) == {"state_dict", "opts", "latent_avg", "e4ecli_generator_config"}
    newest = safe_load(ckdir / "iteration_3.pt")
    assert {"optimizer", "discriminator_state_dict", "discriminator_optimizer_state_dict", "e4ecli_training"} <= set(newest)

    exp = tmp_path / "default"
    r = runner.invoke(app, ["train", "--exp-dir", str(exp), "--max-steps", "1", *common])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (exp / "checkpoints").glob("*.pt")) == ["iteration_1.pt"]  # no iteration_0.pt


def test_every_missing_weights_file_is_reported_at_once_before_anything_starts(tmp_path):
    (tmp_path / "train").mkdir()
    args = ["train", "--exp-dir", str(tmp_path / "exp"), "--data", str(tmp_path / "train"), "--device", "cpu",
            "--stylegan-weights", str(tmp_path / "g.pt"), "--encoder-init", str(tmp_path / "ir_se50.pth"),
            "--id-weights", str(tmp_path / "arcface.pth"), "--lpips-lambda", "0"]
    r = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert r.exit_code == 2, r.output
    text = " ".join(r.output.split())
    assert "3 weights file(s) missing" in text, text
    for name, flag in (("g.pt", "--stylegan-weights"), ("ir_se50.pth", "--encoder-init"), ("arcface.pth", "--id-weights")):
        assert f"{name}: no such file" in text and flag in text, name
    assert not (tmp_path / "exp" / "checkpoints").exists()
