"""What a run is, decided before anything is built: a fresh start, `--resume` (the newest complete
checkpoint in --exp-dir) or `--resume-training-from-ckpt`. Reads options and checkpoints, never writes."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from e4ecli.hub.checkpoints import safe_load
from e4ecli.training import checkpoint as ckpts
from e4ecli.training import options as optmod
from e4ecli.training.options import TrainConfig, named


class TrainError(RuntimeError):
    """Training cannot start or go on; the message says why and what to do. A message given as a sequence of
    lines is laid out one per line (`lines`); a string is one line. Options are named by their TrainConfig
    field (`options.named`: `batch_size`, never a command-line flag); `fields` lists them, and the CLI words
    them as its flags."""

    def __init__(self, message: "str | Sequence[str]"):
        self.lines: tuple[str, ...] = (message,) if isinstance(message, str) else tuple(message)
        super().__init__("\n".join(self.lines))

    @property
    def fields(self) -> tuple[str, ...]:
        """The options the message is about (TrainConfig field names)."""
        return optmod.options_named(str(self))


@dataclass
class Plan:
    config: TrainConfig  # the run's options (a resumed run's: the checkpoint's, merged with this invocation's)
    resume_path: Path | None = None
    resume_ckpt: dict | None = None
    full_resume: bool = False  # --resume: restore everything; else --resume-training-from-ckpt semantics
    notes: list[str] = field(default_factory=list)
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    purge_logs: bool = False  # a fresh start over the logs of a run killed before its first checkpoint


def prepare(options: "Mapping[str, Any] | TrainConfig", overrides: set[str]) -> Plan:
    """Resolve a run from merged options (`options.merge`'s dict, or a TrainConfig): fresh start, --resume
    (newest complete checkpoint in --exp-dir) or --resume-training-from-ckpt. Reads, never writes.
    overrides: the options given for this invocation (they win over a resumed checkpoint's).
    Raises TrainError/OptionsError."""
    opts = options.to_opts() if isinstance(options, TrainConfig) else dict(options)
    resuming = bool(opts.get("resume") or opts.get("resume_training_from_ckpt"))
    problems = optmod.check(opts)
    if resuming:  # the other options may come from the checkpoint: checked once merged
        problems = [p for p in problems if p.startswith((optmod.BY_NAME["exp_dir"].flag, optmod.BY_NAME["resume"].flag))]
    if problems:
        raise optmod.OptionsError("; ".join(problems))
    exp_dir = Path(opts["exp_dir"])
    ckpt_dir = exp_dir / "checkpoints"
    if opts.get("resume"):
        path, ckpt, notes = ckpts.newest_resumable(ckpt_dir)
        if path is None:
            if _checkpoint_files(ckpt_dir):
                raise TrainError(f"{named('resume')}: {ckpt_dir} has no complete iteration_N.pt checkpoint with training state"
                                 + (f" ({'; '.join(notes)})" if notes else "") + f"; start a new run in another {named('exp_dir')}")
            return _checked(Plan(TrainConfig.from_opts(opts), notes=[f"{named('resume')}: no checkpoint in {exp_dir} yet; starting the run from step 0"],
                                 purge_logs=True))
        merged, changed = optmod.for_resume(_stored_opts(ckpt, path), opts, overrides)
        return _checked(Plan(TrainConfig.from_opts(merged), path, ckpt, True, notes, changed))
    if opts.get("resume_training_from_ckpt"):
        path = Path(opts["resume_training_from_ckpt"])
        ckpt = safe_load(path)
        if not ckpts.has_training_state(ckpt):
            raise TrainError(f"{named('resume_training_from_ckpt')} {path}: the file holds no training state (global_step, "
                             f"optimizer); fine-tune it with {named('checkpoint_path')} instead")
        merged, changed = optmod.for_resume(_stored_opts(ckpt, path), opts, overrides)
        if merged.get("sub_exp_dir"):
            merged["exp_dir"] = str(Path(merged["exp_dir"]) / merged["sub_exp_dir"])
        plan = _checked(Plan(TrainConfig.from_opts(merged), path, ckpt, False, [], changed))
        _refuse_existing_run(Path(plan.config.exp_dir))
        return plan
    _refuse_existing_run(exp_dir)
    if (exp_dir / "metrics.jsonl").exists():  # logs of a run stopped before its first checkpoint: nothing to keep
        return Plan(TrainConfig.from_opts(opts), notes=[f"{exp_dir} holds only the logs of a run stopped before its first checkpoint; starting afresh"],
                    purge_logs=True)
    return Plan(TrainConfig.from_opts(opts))


def _stored_opts(ckpt: dict, path: Path) -> dict:
    stored = ckpt.get("opts")
    if not isinstance(stored, dict):
        raise TrainError(f"{path}: the checkpoint has no 'opts' dict to resume with")
    return stored


def _checked(plan: Plan) -> Plan:
    problems = optmod.check(plan.config.to_opts())
    if problems:
        raise optmod.OptionsError("; ".join(problems))
    return plan


def _checkpoint_files(ckpt_dir: Path) -> list[Path]:
    """Checkpoint files of a run; the hidden temp file of a save cut short by a kill does not count."""
    return [p for p in ckpt_dir.glob("*.pt") if not p.name.startswith(".")] if ckpt_dir.is_dir() else []


def _refuse_existing_run(exp_dir: Path) -> None:
    if _checkpoint_files(exp_dir / "checkpoints"):
        raise TrainError(f"{exp_dir} already holds a training run (checkpoints): continue it with "
                         f"{named('resume')}, or choose a new {named('exp_dir')}")
