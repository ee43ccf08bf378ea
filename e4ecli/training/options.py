"""Every `e4e train` option, defined once: `TrainConfig` (typed, frozen, the defaults) and `OPTIONS` (how
each is spelled, checked and explained).

The same table drives the command line (`--kebab-case` flags), the `--config` file (TOML or YAML,
keys in snake_case or kebab-case) and the `opts` dict saved in checkpoints (snake_case keys, the
original `options/train_options.py` names, plain JSON-able values, so the original code and
`e4ecli.hub.checkpoints.load_checkpoint` read it). Below the command line the trainer works on a
`TrainConfig`; dicts appear only where options come in or go out (flags, config files, checkpoints, opt.json).

Options marked `original=True` exist in the original e4e `train_options.py`, under the same name and
with the same default; the others are this tool's additions. Precedence when merging:
defaults < config file < flags given on the command line. This module imports nothing heavy.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

from e4ecli.domains import DOMAINS

KINDS = ("str", "int", "float", "bool", "path", "ints", "strs")
ENCODER_TYPES = ("Encoder4Editing", "GradualStyleEncoder", "SingleStyleCodeEncoder")
KNOWN_DATASET_TYPES = tuple(DOMAINS)


class OptionsError(ValueError):
    """Options that cannot be used; the message names the option and says what is expected."""


@dataclass(frozen=True)
class Option:
    name: str  # snake_case: the key in opts and config files, the original's argparse dest; a TrainConfig field
    kind: str  # one of KINDS
    help: str
    panel: str
    original: bool = True  # present in the original train_options.py
    choices: tuple[str, ...] | None = None
    aliases: tuple[str, ...] = ()  # further command-line names
    minimum: float | None = None
    run_only: bool = False  # about this invocation, never taken from a checkpoint's stored opts

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def default(self) -> Any:
        """The TrainConfig field's default (lists as the opts layout has them)."""
        return _plain(_DEFAULTS[self.name])


EXP, MODEL, OPTIM, LOSS, DISC, PROG, LOGS = (
    "Experiment and data", "Models and weights", "Optimisation", "Losses",
    "Latent discriminator", "Progressive training", "Logging, checkpoints and resume",
)

OPTIONS: tuple[Option, ...] = (
    # -- experiment and data ------------------------------------------------------------------
    Option("exp_dir", "path", "Experiment folder (required): checkpoints/, logs/, metrics.jsonl, opt.json.", EXP, run_only=True),
    Option("data", "path", "Folder of training images, searched recursively (required).", EXP, original=False),
    Option("val_data", "path", "Folder of validation images, searched recursively (without it: no validation, no best_model.pt).", EXP, original=False),
    Option("dataset_type", "str", "Domain: input size, identity network and output crop follow it "
           f"({', '.join(KNOWN_DATASET_TYPES)}). Faces use ArcFace for the identity loss, other domains MoCo v2.", EXP),
    Option("input_size", "int", "Encoder input width in pixels (height follows the domain's aspect; default: the "
           "domain's, 256). Smaller values only for quick experiments with small generators.", EXP, original=False, minimum=8),
    Option("config", "path", "TOML or YAML file with any of these options (snake_case or kebab-case keys); "
           "flags given on the command line win. At most 1 MB, values nested at most 100 deep.", EXP, original=False, run_only=True),
    Option("device", "str", "auto (CUDA when available, else CPU), cpu, cuda or cuda:N. Under torchrun each "
           "process takes cuda:LOCAL_RANK.", EXP, original=False, run_only=True),
    Option("seed", "int", "Seed of every random draw (the original seeds 0).", EXP, original=False),
    # -- models and weights -------------------------------------------------------------------
    Option("encoder_type", "str", "Encoder architecture.", MODEL, choices=ENCODER_TYPES),
    Option("stylegan_weights", "str", "StyleGAN2 generator: rosinality file ({'g_ema', 'latent_avg'}) "
           "or zoo name.", MODEL),
    Option("stylegan_size", "int", "Generator output size (original default 1024); read from --stylegan-weights "
           "when omitted.", MODEL, minimum=4),
    Option("checkpoint_path", "str", "Fine-tune an existing e4e checkpoint (file or zoo name): encoder, decoder "
           "and latent average come from it.", MODEL, aliases=("--checkpoint",)),
    Option("encoder_init", "str", "IR-SE50 face-recognition weights that initialise the encoder backbone "
           "(file or zoo name), or 'none' for a random backbone.", MODEL, original=False),
    Option("id_weights", "str", "Identity-loss network (file or zoo name); default: ir_se50 (ArcFace) for faces, "
           "moco_v2_resnet50 otherwise.", MODEL, original=False),
    Option("start_from_latent_avg", "bool", "Offset the encoder's codes by the generator's average latent "
           "(the published models were trained with it).", MODEL),
    Option("train_decoder", "bool", "Train the generator too (default: frozen).", MODEL),
    # -- optimisation -------------------------------------------------------------------------
    Option("batch_size", "int", "Training images per step and process.", OPTIM, minimum=1),
    Option("test_batch_size", "int", "Validation images per batch.", OPTIM, minimum=1),
    Option("workers", "int", "Training DataLoader worker processes (default: the original's 4, at most the CPUs "
           "this process may use).", OPTIM, minimum=0),
    Option("test_workers", "int", "Validation DataLoader worker processes.", OPTIM, minimum=0),
    Option("learning_rate", "float", "Encoder learning rate.", OPTIM, minimum=0),
    Option("optim_name", "str", "Optimiser: ranger (RAdam + Lookahead + gradient centralisation, "
           "pytorch-optimizer) or adam.", OPTIM, choices=("ranger", "adam")),
    Option("max_steps", "int", "Last training step (steps run from 0 to this one, as in the original).", OPTIM, minimum=0),
    Option("amp", "bool", "Mixed precision (float16 autocast) for the encoder and generator passes; CUDA only.", OPTIM, original=False),
    # -- losses ---------------------------------------------------------------------------------
    Option("l2_lambda", "float", "Weight of the pixel L2 loss.", LOSS, minimum=0),
    Option("lpips_lambda", "float", "Weight of the LPIPS loss (0: no LPIPS, no backbone weights needed).", LOSS, minimum=0),
    Option("lpips_type", "str", "LPIPS backbone.", LOSS, choices=("alex", "vgg", "squeeze")),
    Option("id_lambda", "float", "Weight of the identity (faces: ArcFace) / similarity (MoCo v2) loss.", LOSS, minimum=0),
    Option("delta_norm", "int", "Norm (p) of the delta regularisation.", LOSS, minimum=1),
    Option("delta_norm_lambda", "float", "Weight of the delta regularisation (progressive training only).", LOSS, minimum=0),
    # -- latent discriminator -------------------------------------------------------------------
    Option("w_discriminator_lambda", "float", "Weight of the latent discriminator loss (0: no discriminator; the "
           "published models used 0.1).", DISC, minimum=0),
    Option("w_discriminator_lr", "float", "Discriminator (Adam) learning rate.", DISC, minimum=0),
    Option("r1", "float", "Weight of the R1 regularisation.", DISC, minimum=0),
    Option("d_reg_every", "int", "Apply R1 every this many steps.", DISC, minimum=1),
    Option("use_w_pool", "bool", "Keep pools of past real and fake codes for the discriminator.", DISC),
    Option("w_pool_size", "int", "Size of each code pool (with --use-w-pool).", DISC, minimum=0),
    # -- progressive training ---------------------------------------------------------------------
    Option("progressive_steps", "ints", "Steps at which stage i starts (one per style, the first 0), e.g. "
           "'0,20000,22000,...'. Stage 0 trains one W; stage i adds delta i.", PROG),
    Option("progressive_start", "int", "Step of stage 1; stages follow every --progressive-step-every steps "
           "(overrides --progressive-steps).", PROG, minimum=0),
    Option("progressive_step_every", "int", "Steps between stages (with --progressive-start).", PROG, minimum=1),
    # -- logging, checkpoints, resume -------------------------------------------------------------
    Option("image_interval", "int", "Write an input | reconstruction grid every this many steps.", LOGS, minimum=1),
    Option("board_interval", "int", "Log training losses (metrics.jsonl, TensorBoard) every this many steps.", LOGS, minimum=1),
    Option("val_interval", "int", "Validate every this many steps.", LOGS, minimum=1),
    Option("save_interval", "int", "Write checkpoints/iteration_N.pt every this many steps (default: only at "
           "--max-steps; set it to be able to --resume an interrupted run).", LOGS, minimum=1),
    Option("resume", "bool", "Continue the run in --exp-dir from its newest complete checkpoint (weights, "
           "optimisers, discriminator, pools, step, best loss, RNG); flags given now override its options.", LOGS,
           original=False, run_only=True),
    Option("keep_last", "int", "Keep only the K newest iteration_N.pt files (default: all). Only the newest keeps "
           "the optimiser/discriminator state either way (--resume needs no more).", LOGS, original=False, minimum=1),
    Option("save_training_data", "bool", "Also store the training state in best_model.pt (the newest "
           "iteration checkpoint always carries it).", LOGS),
    Option("resume_training_from_ckpt", "path", "Continue training from this checkpoint file, with its stored "
           "options (the original's way to resume).", LOGS, run_only=True),
    Option("keep_optimizer", "bool", "With --resume-training-from-ckpt: restore the optimiser state too "
           "(--resume always does).", LOGS),
    Option("sub_exp_dir", "str", "With --resume-training-from-ckpt: write into this subfolder of --exp-dir.", LOGS),
    Option("update_param_list", "strs", "When resuming: option names to take from this invocation instead of "
           "the checkpoint, e.g. 'max_steps,learning_rate' (flags given explicitly always are).", LOGS),
)

BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}


def named(name: str) -> str:
    """How a message below the command line names an option: its TrainConfig field in backticks
    (`batch_size`), with no command-line spelling; the CLI words it as the flag (--batch-size)."""
    if name not in BY_NAME:
        raise KeyError(f"no option {name!r}")
    return f"`{name}`"


NAMED = re.compile(r"`([a-z0-9_]+)`")


def options_named(text: str) -> tuple[str, ...]:
    """The options a message names (see `named`), in order, each once."""
    return tuple(dict.fromkeys(m for m in NAMED.findall(text) if m in BY_NAME))


# -- the training configuration ---------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig:
    """A run's options, typed and frozen; the defaults are defined here (and only here). Paths are kept as
    the strings they were given; lists are tuples. `from_opts` / `to_opts` convert from and to the
    original e4e `opts` dict (snake_case keys, plain JSON-able values, lists), the layout of config files
    after parsing, of opt.json and of the `opts` checkpoints store: the conversion happens only there."""

    exp_dir: str | None = None
    data: str | None = None
    val_data: str | None = None
    dataset_type: str = "ffhq_encode"
    input_size: int | None = None
    config: str | None = None
    device: str = "auto"
    seed: int = 0
    encoder_type: str = "Encoder4Editing"
    stylegan_weights: str = "stylegan2_ffhq_1024"
    stylegan_size: int | None = None
    checkpoint_path: str | None = None
    encoder_init: str = "ir_se50"
    id_weights: str | None = None
    start_from_latent_avg: bool = False
    train_decoder: bool = False
    batch_size: int = 4
    test_batch_size: int = 2
    workers: int | None = None
    test_workers: int = 2
    learning_rate: float = 0.0001
    optim_name: str = "ranger"
    max_steps: int = 500000
    amp: bool = False
    l2_lambda: float = 1.0
    lpips_lambda: float = 0.8
    lpips_type: str = "alex"
    id_lambda: float = 0.1
    delta_norm: int = 2
    delta_norm_lambda: float = 0.0002
    w_discriminator_lambda: float = 0.0
    w_discriminator_lr: float = 2e-05
    r1: float = 10.0
    d_reg_every: int = 16
    use_w_pool: bool = False
    w_pool_size: int = 50
    progressive_steps: tuple[int, ...] | None = None
    progressive_start: int | None = None
    progressive_step_every: int = 2000
    image_interval: int = 100
    board_interval: int = 50
    val_interval: int = 1000
    save_interval: int | None = None
    resume: bool = False
    keep_last: int | None = None
    save_training_data: bool = False
    resume_training_from_ckpt: str | None = None
    keep_optimizer: bool = False
    sub_exp_dir: str | None = None
    update_param_list: tuple[str, ...] | None = None

    @classmethod
    def from_opts(cls, opts: Mapping[str, Any]) -> "TrainConfig":
        """{option name: canonical value} (see `merge`, `for_resume`) -> TrainConfig; names it lacks keep their
        defaults. Unknown names are an OptionsError."""
        unknown = sorted(k for k in opts if k not in _DEFAULTS)
        if unknown:
            raise OptionsError(f"unknown option(s) {', '.join(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in opts.items()})

    def to_opts(self) -> dict[str, Any]:
        """The original e4e `opts` layout: every option by its name, tuples as lists."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(TrainConfig)}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def defaults() -> dict[str, Any]:
    """Every option's default, in the opts layout."""
    return TrainConfig().to_opts()


# -- values ---------------------------------------------------------------------------------------
def _split(value: str) -> list[str]:
    return [v for v in value.replace(",", " ").split() if v]


def coerce(opt: Option, value: Any, where: str) -> Any:
    """A value from the command line, a config file or stored opts -> the option's canonical type."""
    if value is None:
        return None
    bad = OptionsError(f"{where}: {opt.flag} expects {_expects(opt)}, got {value!r}")
    kind = opt.kind
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.strip().lower() in ("true", "yes", "1")
        raise bad
    if kind == "int":
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            out: Any = value
        elif isinstance(value, float) and value.is_integer():
            out = int(value)
        elif isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            out = int(value.strip())
        else:
            raise bad
    elif kind == "float":
        if isinstance(value, bool):
            raise bad
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise bad from None
    elif kind in ("str", "path"):
        if isinstance(value, Path):
            value = str(value)
        if not isinstance(value, str):
            raise bad
        out = value
    elif kind == "ints":
        items = _split(value) if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise bad
        try:
            out = [coerce(Option(opt.name, "int", "", ""), v, where) for v in items]
        except OptionsError:
            raise bad from None
    elif kind == "strs":
        items = _split(value) if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
            raise bad
        out = list(items)
    else:  # pragma: no cover - table error
        raise AssertionError(kind)
    if opt.choices and out not in opt.choices:
        raise OptionsError(f"{where}: {opt.flag} must be one of {', '.join(opt.choices)}, got {value!r}")
    if opt.minimum is not None and kind in ("int", "float") and out < opt.minimum:
        raise OptionsError(f"{where}: {opt.flag} must be >= {opt.minimum:g}, got {value!r}")
    return out


def _expects(opt: Option) -> str:
    return {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string", "path": "a path",
            "ints": "a list of integers", "strs": "a list of names"}[opt.kind]


# -- config files -----------------------------------------------------------------------------------
MAX_CONFIG_BYTES = 1 << 20  # a config of every option is ~3 kB
MAX_CONFIG_DEPTH = 100  # options are flat values and lists; deeper nesting can only be an attack


def _nesting(text: str) -> int:
    """An upper bound of the bracket nesting in a TOML/YAML text (quotes ignored: it never under-counts)."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    return deepest


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a TOML (.toml) or YAML (.yaml/.yml) file of options -> {snake_name: canonical value}.
    At most MAX_CONFIG_BYTES, brackets nested at most MAX_CONFIG_DEPTH deep (the parsers recurse)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise OptionsError(f"--config {path}: {path.stat().st_size:,} bytes; a config file is at most {MAX_CONFIG_BYTES:,}")
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise OptionsError(f"--config {path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise OptionsError(f"--config {path}: not UTF-8 text ({e.reason})") from None
    if _nesting(text) > MAX_CONFIG_DEPTH:
        raise OptionsError(f"--config {path}: values nested more than {MAX_CONFIG_DEPTH} deep; options are plain values and lists")
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise OptionsError(f"--config {path}: reading YAML needs PyYAML (pip install pyyaml), or write the file as TOML") from None
        try:
            data = yaml.safe_load(text)
        except RecursionError:
            raise OptionsError(f"--config {path}: nested too deeply") from None
        except yaml.YAMLError as e:
            raise OptionsError(f"--config {path}: not valid YAML ({e})") from None
    elif suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10: the same parser as the tomli package
            import tomli as tomllib

        try:
            data = tomllib.loads(text)
        except RecursionError:
            raise OptionsError(f"--config {path}: nested too deeply") from None
        except tomllib.TOMLDecodeError as e:
            raise OptionsError(f"--config {path}: not valid TOML ({e})") from None
    else:
        raise OptionsError(f"--config {path}: unknown format; name the file .toml, .yaml or .yml")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise OptionsError(f"--config {path}: expected a table of option = value")
    return parse_mapping(data, f"--config {path}")


def parse_mapping(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """{name or kebab-name: value} -> {snake_name: canonical value}; unknown names are an error."""
    out: dict[str, Any] = {}
    unknown = []
    for key, value in data.items():
        name = str(key).strip().lstrip("-").replace("-", "_")
        opt = BY_NAME.get(name)
        if opt is None or name == "config":
            unknown.append(str(key))
            continue
        out[name] = coerce(opt, value, where)
    if unknown:
        raise OptionsError(f"{where}: unknown option(s) {', '.join(unknown)} (see `e4e train --help`)")
    return out


# -- merging ------------------------------------------------------------------------------------------
def merge(given: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """defaults < config < given (the flags set on the command line) -> full opts, canonical values."""
    opts = defaults()
    opts.update(config or {})
    for name, value in given.items():
        opts[name] = coerce(BY_NAME[name], value, "command line")
    return opts


def for_resume(stored: Mapping[str, Any], current: Mapping[str, Any], overrides: Iterable[str]) -> tuple[dict[str, Any], dict[str, tuple[Any, Any]]]:
    """Options of a resumed run: the checkpoint's, except run-only options, options the checkpoint
    lacks, options named in `overrides` (set in the config file or on the command line) and those
    in --update-param-list, which come from `current`.

    Returns (opts, {name: (stored value, new value)} for every training option that changed).
    """
    names = set(overrides) | set(current.get("update_param_list") or [])
    unknown = sorted(n for n in names if n not in BY_NAME)
    if unknown:
        raise OptionsError(f"--update-param-list: unknown option(s) {', '.join(unknown)}")
    opts: dict[str, Any] = {}
    changed: dict[str, tuple[Any, Any]] = {}
    for opt in OPTIONS:
        name = opt.name
        if opt.run_only or name in names or name not in stored:
            opts[name] = current[name]
        else:
            opts[name] = coerce(opt, stored[name], "checkpoint opts")
        if not opt.run_only and name in stored and opts[name] != _safe_coerce(opt, stored[name]):
            changed[name] = (stored[name], opts[name])
    return opts, changed


def _safe_coerce(opt: Option, value: Any) -> Any:
    try:
        return coerce(opt, value, "checkpoint opts")
    except OptionsError:
        return value


def early_problems(opts: Mapping[str, Any]) -> list[str]:
    """Folders that do not exist and a --device that is not a device name: found before torch loads (a typo is
    answered at once); `check` includes them."""
    from e4ecli.runtime import DeviceError, check_device_spec

    problems = [f"--{key.replace('_', '-')} {opts[key]}: no such folder" for key in ("data", "val_data")
                if opts.get(key) and not Path(opts[key]).is_dir()]
    try:
        check_device_spec(str(opts.get("device") or "auto"))
    except DeviceError as e:
        problems.append(f"--device {e.spec}: {e.reason}")
    return problems


def check(opts: Mapping[str, Any]) -> list[str]:
    """Problems that make the options unusable (each names the option and says what to do)."""
    problems = []
    if not opts.get("exp_dir"):
        problems.append("--exp-dir is required: the folder that receives checkpoints and logs")
    if not opts.get("data"):
        problems.append("--data is required: a folder of training images")
    problems += early_problems(opts)
    if opts.get("resume") and opts.get("resume_training_from_ckpt"):
        problems.append("--resume and --resume-training-from-ckpt are exclusive: --resume takes the newest checkpoint in --exp-dir")
    losses = [opts["l2_lambda"], opts["lpips_lambda"], opts["id_lambda"], opts["w_discriminator_lambda"]]
    if not any(v > 0 for v in losses):
        problems.append("every loss weight is 0 (--l2-lambda, --lpips-lambda, --id-lambda, --w-discriminator-lambda): nothing to train")
    steps = opts.get("progressive_steps")
    if steps is not None and opts.get("progressive_start") is None and (not steps or steps[0] != 0 or sorted(steps) != list(steps)):
        problems.append(f"--progressive-steps must start with 0 and increase, got {steps}")
    if (steps is not None or opts.get("progressive_start") is not None) and opts["encoder_type"] != "Encoder4Editing":
        problems.append("progressive training (--progressive-start / --progressive-steps) needs --encoder-type Encoder4Editing")
    for name in ("progressive_steps", "update_param_list"):
        if opts.get(name) == []:
            problems.append(f"{BY_NAME[name].flag} is empty")
    return problems


def to_json(opts: Mapping[str, Any]) -> str:
    return json.dumps(dict(opts), indent=4, sort_keys=True)
