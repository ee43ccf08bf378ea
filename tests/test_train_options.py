"""`e4e train` options: the original train_options.py names and defaults, one table for the command
line, config files (TOML/YAML) and stored opts, and how a resumed run merges them."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from e4ecli.cli import app
from e4ecli.training import options as O

# The original e4e options/train_options.py: name -> default (copied by hand from its argparse calls;
# stylegan_weights/stylegan_size/workers are the documented exceptions: zoo name / read from the file /
# the original's 4 capped at the machine's CPUs).
ORIGINAL = {
    "exp_dir": None, "dataset_type": "ffhq_encode", "encoder_type": "Encoder4Editing", "batch_size": 4,
    "test_batch_size": 2, "workers": None, "test_workers": 2, "learning_rate": 0.0001, "optim_name": "ranger",
    "train_decoder": False, "start_from_latent_avg": False, "lpips_type": "alex", "lpips_lambda": 0.8,
    "id_lambda": 0.1, "l2_lambda": 1.0, "checkpoint_path": None, "max_steps": 500000, "image_interval": 100,
    "board_interval": 50, "val_interval": 1000, "save_interval": None, "w_discriminator_lambda": 0,
    "w_discriminator_lr": 2e-5, "r1": 10, "d_reg_every": 16, "use_w_pool": False, "w_pool_size": 50,
    "delta_norm": 2, "delta_norm_lambda": 2e-4, "progressive_steps": None, "progressive_start": None,
    "progressive_step_every": 2000, "save_training_data": False, "sub_exp_dir": None, "keep_optimizer": False,
    "resume_training_from_ckpt": None, "update_param_list": None, "stylegan_weights": "stylegan2_ffhq_1024",
    "stylegan_size": None,
}


def test_every_original_option_exists_with_its_original_default():
    defaults = O.defaults()
    for name, default in ORIGINAL.items():
        assert name in defaults, name
        assert defaults[name] == default, (name, defaults[name], default)
        assert O.BY_NAME[name].original


def test_help_lists_every_option_as_a_kebab_case_flag_with_examples():
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for opt in O.OPTIONS:
        assert opt.flag in result.output, opt.flag
    for extra in ("--data", "--val-data", "--device", "--config", "--resume", "--checkpoint"):
        assert extra in result.output
    assert "torchrun --nproc-per-node" in result.output


def test_config_toml_and_yaml_take_snake_or_kebab_keys(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('exp_dir = "runs/a"\nbatch-size = 8\nprogressive_steps = [0, 10, 20]\nuse_w_pool = true\nlearning_rate = 1\n')
    yaml = tmp_path / "run.yaml"
    yaml.write_text("exp-dir: runs/a\nbatch_size: 8\nprogressive-steps: 0,10,20\nuse-w-pool: true\nlearning_rate: 1\n")
    for path in (toml, yaml):
        cfg = O.load_config(path)
        assert cfg == {"exp_dir": "runs/a", "batch_size": 8, "progressive_steps": [0, 10, 20], "use_w_pool": True,
                       "learning_rate": 1.0}, path


@pytest.mark.parametrize("text, message", [
    ("batch_size = 0\n", "--batch-size must be >= 1"),
    ("bacth_size = 4\n", "unknown option(s) bacth_size"),
    ("optim_name = 'sgd'\n", "--optim-name must be one of ranger, adam"),
    ("use_w_pool = 'maybe'\n", "--use-w-pool expects true or false"),
    ("batch_size = \n", "not valid TOML"),
])
def test_bad_config_values_name_the_option(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(O.OptionsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        O.load_config(path)


def test_command_line_beats_config_beats_defaults():
    opts = O.merge({"batch_size": "16"}, {"batch_size": 8, "learning_rate": 0.5})
    assert opts["batch_size"] == 16 and opts["learning_rate"] == 0.5 and opts["max_steps"] == 500000


def test_resumed_options_come_from_the_checkpoint_except_overrides_and_run_options():
    stored = O.merge({"exp_dir": "old", "data": "d", "batch_size": 8, "max_steps": 10, "learning_rate": 0.1})
    current = O.merge({"exp_dir": "new", "data": "d", "max_steps": 20, "learning_rate": 0.2, "update_param_list": "learning_rate"})
    opts, changed = O.for_resume(stored, current, overrides={"max_steps"})
    assert opts["exp_dir"] == "new"  # run-only
    assert opts["batch_size"] == 8  # from the checkpoint (not given now)
    assert opts["max_steps"] == 20  # given explicitly now
    assert opts["learning_rate"] == 0.2  # named in --update-param-list
    assert set(changed) == {"max_steps", "learning_rate"}


def test_unusable_option_sets_are_refused_with_the_flag_to_fix():
    problems = O.check(O.merge({}))
    assert any("--exp-dir is required" in p for p in problems)
    assert any("--data is required" in p for p in problems)
    zero = O.merge({"exp_dir": "x", "data": "d", "l2_lambda": 0, "lpips_lambda": 0, "id_lambda": 0})
    assert any("nothing to train" in p for p in O.check(zero))
    prog = O.merge({"exp_dir": "x", "data": "d", "progressive_start": 5, "encoder_type": "GradualStyleEncoder"})
    assert any("needs --encoder-type Encoder4Editing" in p for p in O.check(prog))


def test_cli_reports_config_errors_with_exit_code_2(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("no_such_option = 1\n")
    result = CliRunner().invoke(app, ["train", "--config", str(path)])
    assert result.exit_code == 2
    assert "no_such_option" in result.output


def test_toml_config_reads_on_python_3_10_through_tomli(tmp_path, monkeypatch):
    """Python 3.10 has no tomllib (pyproject allows 3.10 and installs tomli there): the same file reads."""
    pytest.importorskip("tomli")
    import sys

    monkeypatch.setitem(sys.modules, "tomllib", None)  # `import tomllib` raises ImportError, as on 3.10
    good, bad = tmp_path / "run.toml", tmp_path / "bad.toml"
    good.write_text('exp_dir = "runs/a"\nbatch-size = 8\n')
    bad.write_text("batch_size = \n")
    assert O.load_config(good) == {"exp_dir": "runs/a", "batch_size": 8}
    with pytest.raises(O.OptionsError, match="not valid TOML"):
        O.load_config(bad)


def test_workers_default_to_the_originals_4_at_most_the_cpus(monkeypatch):
    import os

    from e4ecli.training.build import default_workers

    assert O.defaults()["workers"] is None  # resolved when the run is built
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert default_workers() == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert default_workers() == 4


def test_train_config_is_the_table_typed_frozen_and_round_trips_the_opts_layout():
    import dataclasses

    assert [f.name for f in dataclasses.fields(O.TrainConfig)] == [o.name for o in O.OPTIONS]
    assert O.TrainConfig().to_opts() == O.defaults()
    opts = O.merge({"exp_dir": "x", "data": "d", "progressive_steps": "0,3,5", "update_param_list": "max_steps", "batch_size": "8"})
    config = O.TrainConfig.from_opts(opts)
    assert config.batch_size == 8 and config.progressive_steps == (0, 3, 5) and config.update_param_list == ("max_steps",)
    assert config.to_opts() == opts and config.to_opts()["progressive_steps"] == [0, 3, 5]  # lists, as checkpoints store them
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.batch_size = 2
    with pytest.raises(O.OptionsError, match="unknown option"):
        O.TrainConfig.from_opts({"bacth_size": 4})


def test_the_cli_words_the_options_a_training_message_names():
    """Below the CLI messages name options by field (tests/test_layer_words.py keeps flags out); e4e train words them."""
    from e4ecli.cli.train import worded
    from e4ecli.training.plan import TrainError

    e = TrainError([f"{O.named('data')} d: 1 image(s), fewer than one batch ({O.named('batch_size')} 4)", "see `e4e train --help`"])
    assert e.fields == ("data", "batch_size") and "`batch_size` 4" in str(e)
    assert worded(e).lines == ("--data d: 1 image(s), fewer than one batch (--batch-size 4)", "see `e4e train --help`")
    assert worded("no `val_data`: `not_an_option` stays") == "no --val-data: `not_an_option` stays"
    with pytest.raises(KeyError):
        O.named("bacth_size")
