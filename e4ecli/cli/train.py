"""`e4e train`: the e4e training recipe. Options come from e4ecli.training.options (one table for the
flags, the --config file and the checkpoints' opts); the work is e4ecli.training.loop."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional

import typer

from e4ecli.cli.app import app
from e4ecli.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, console, die, error_text, escape
from e4ecli.training.options import OPTIONS, Option

EPILOG = (
    "Examples:\n\n"
    "  e4e train --exp-dir runs/ffhq --data ffhq/train --val-data ffhq/test --start-from-latent-avg "
    "--w-discriminator-lambda 0.1 --progressive-start 20000 --use-w-pool --batch-size 8 --save-interval 10000\n\n"
    "  e4e train --config ffhq.toml                      # the same options in a TOML/YAML file\n\n"
    "  e4e train --exp-dir runs/ffhq --resume            # continue from the newest checkpoint\n\n"
    "  torchrun --nproc-per-node 8 -m e4ecli train --config ffhq.toml   # 8 GPUs (--batch-size is per GPU)\n\n"
    "  e4e train --exp-dir runs/cars --data cars/train --dataset-type cars_encode "
    "--stylegan-weights stylegan2-car-config-f.pt --checkpoint-path e4e_cars_encode   # fine-tune\n\n"
    "Weights: --stylegan-weights, --encoder-init and --id-weights take files or zoo names (see `e4e weights list`); "
    "LPIPS takes torchvision's ImageNet backbone from the torch hub cache."
)

_ANNOTATIONS = {"str": Optional[str], "int": Optional[int], "float": Optional[float], "path": Optional[Path],
                "ints": Optional[str], "strs": Optional[str]}


def _cli_parameter(opt: Option) -> inspect.Parameter:
    """One typer option from the table entry (lists are typed as 'a,b,c' strings on the command line)."""
    help_text = opt.help + ("" if opt.original else " (new in e4ecli)")
    if opt.kind == "bool":
        decls = [f"{opt.flag}/--no-{opt.flag[2:]}"]
        annotation: Any = bool
        default = bool(opt.default)
    else:
        decls = [opt.flag, *opt.aliases]
        annotation = _ANNOTATIONS[opt.kind]
        default = opt.default if opt.kind not in ("ints", "strs") else None
        if opt.choices:
            help_text += f" One of: {', '.join(opt.choices)}."
    info = typer.Option(default, *decls, help=help_text, rich_help_panel=opt.panel, show_default=opt.default is not None)
    return inspect.Parameter(opt.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)


def _explicit(ctx: typer.Context, values: dict[str, Any]) -> dict[str, Any]:
    """The options the user typed (not defaults)."""
    given = {}
    for name, value in values.items():
        source = ctx.get_parameter_source(name)  # click's ParameterSource (typer may vendor click: compare names)
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            given[name] = value
    return given


def train_cmd(ctx: typer.Context, **values: Any) -> None:
    """Train an e4e encoder over a StyleGAN2 generator (the paper's recipe; one CPU, one GPU or many with torchrun)."""
    from e4ecli.training import options as optmod

    given = _explicit(ctx, values)
    given.pop("config", None)
    try:
        config = optmod.load_config(values["config"]) if values.get("config") else {}
        opts = optmod.merge(given, config)
        opts["config"] = str(values["config"]) if values.get("config") else None
    except optmod.OptionsError as e:
        die(e)
    problems = optmod.early_problems(opts)
    for problem in problems[:-1]:
        console.print(error_text(problem))
    if problems:
        die(problems[-1])
    from e4ecli.cli.common import capped_workers

    for name in ("workers", "test_workers"):  # at most one DataLoader process per CPU (the loader caps resumed runs too)
        if isinstance(opts.get(name), int):
            opts[name] = capped_workers(opts[name], "--" + name.replace("_", "-"))
    raise typer.Exit(_run(opts, set(config) | set(given)))


train_cmd.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    + [_cli_parameter(o) for o in OPTIONS]
)
app.command("train", epilog=EPILOG, no_args_is_help=True)(train_cmd)


def _run(opts: dict[str, Any], overrides: set[str]) -> int:
    """Join torchrun's process group (if launched by it), plan the run, train; returns the exit code."""
    from e4ecli.cli.common import distributed_or_die
    from e4ecli.hub.checkpoints import CheckpointError
    from e4ecli.training import loop
    from e4ecli.training.options import OptionsError

    dist, device = distributed_or_die(opts["device"], training=True)  # TF32 on CUDA: runtime.configure_process
    try:
        try:
            plan = loop.prepare(opts, overrides)
        except (OptionsError, loop.TrainError, CheckpointError) as e:
            die(worded(e))
        dist.barrier()
        if dist.is_main:
            for name, (old, new) in plan.changed.items():
                console.print(f"[yellow]note:[/] {name}: {escape(repr(old))} in the checkpoint, {escape(repr(new))} now")
        return _consume(loop.train(plan, dist, device), dist)
    finally:
        dist.close()


def worded(message: "str | BaseException") -> "str | BaseException":
    """A message from below the command line with the options it names (`batch_size`, see
    training.options.named) spelled as this command's flags (--batch-size); its lines kept."""
    from e4ecli.cli.common import message_lines
    from e4ecli.training.options import BY_NAME, NAMED
    from e4ecli.training.plan import TrainError

    def word(line: str) -> str:
        return NAMED.sub(lambda m: BY_NAME[m.group(1)].flag if m.group(1) in BY_NAME else m.group(0), line)

    if isinstance(message, str):
        return word(message)
    return TrainError([word(line) for line in message_lines(message)])


def _consume(events, dist) -> int:
    """Show events: rich progress on rank 0; other ranks print only their warnings."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from e4ecli.hub.checkpoints import CheckpointError
    from e4ecli.training import loop

    tag = "" if dist.is_main else f"[rank {dist.rank}] "
    started = None
    skipped: list[str] = []
    last_saved = None
    progress = Progress(
        TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("stage {task.fields[stage]}"),
        TextColumn("{task.fields[loss]}"), console=console, transient=False, disable=not dist.is_main,
    )
    task = None
    seconds: list[float] = []
    try:
        with progress:
            for ev in events:
                if isinstance(ev, loop.Note):
                    if isinstance(ev, loop.FileSkipped):
                        skipped.append(ev.message)
                    if dist.is_main or ev.per_rank:
                        color = "yellow" if ev.level == "warning" else "cyan"
                        progress.console.print(f"{tag}[{color}]{'warning' if ev.level == 'warning' else 'note'}:[/] {escape(worded(ev.message))}")
                elif isinstance(ev, loop.Started):
                    started = ev
                    if dist.is_main:
                        _print_start(progress.console, ev)
                    task = progress.add_task("train", total=max(0, ev.max_steps - ev.step + 1), rate="", stage=_stage(ev.stage, ev.n_styles), loss="-")
                elif isinstance(ev, loop.StepDone):
                    seconds = (seconds + [ev.seconds])[-20:]
                    mean = sum(seconds) / len(seconds)
                    rate = f"{1 / mean:.2f} step/s" if mean < 1 else f"{mean:.1f} s/step"
                    progress.update(task, advance=1, rate=rate, stage=_stage(ev.stage, started.n_styles), loss=_losses(ev.losses))
                elif isinstance(ev, loop.StageChanged) and dist.is_main:
                    progress.console.print(f"step {ev.step}: progressive stage {ev.stage} (w + {ev.stage} delta(s) trained)")
                elif isinstance(ev, loop.Validated) and dist.is_main:
                    best = " [green](best)[/]" if ev.best else ""
                    shown = ", ".join(f"{k} {v:.4f}" for k, v in ev.losses.items() if k in ("loss", "loss_l2", "loss_lpips", "loss_id"))
                    progress.console.print(f"validation @ step {ev.step}: {shown}{best}")
                elif isinstance(ev, loop.Saved):
                    last_saved = ev.path
                    progress.console.print(f"saved {escape(str(ev.path))}")
                elif isinstance(ev, loop.Finished) and dist.is_main:
                    progress.stop()
                    _print_summary(ev, started, last_saved, skipped)
    except KeyboardInterrupt:
        console.print(f"{tag}[yellow]interrupted[/]: continue with the same command plus --resume (it restarts from the newest iteration_N.pt)")
        return EXIT_FAILED
    except (loop.TrainError, CheckpointError) as e:
        if started is None:
            console.print(error_text(worded(e), f"{tag}[bold red]error:[/] "))
            return EXIT_USAGE
        console.print(error_text(worded(e), f"{tag}[bold red]error:[/] "))
        return EXIT_FAILED
    return EXIT_FAILED if skipped else EXIT_OK


SHOWN_LOSSES = (("loss", "loss"), ("loss_l2", "l2"), ("loss_lpips", "lpips"), ("loss_id", "id"), ("discriminator_loss", "D"))


def _losses(values: dict[str, float]) -> str:
    """The headline losses of a step for the progress line: 'loss 0.5460 l2 0.3453 lpips 0.1575 ...'."""
    return " ".join(f"{short} {values[key]:.4f}" for key, short in SHOWN_LOSSES if key in values)


def _stage(stage: int | None, n_styles: int) -> str:
    return "-" if stage is None else f"{stage}/{n_styles - 1}"


def _print_start(out, ev) -> None:
    where = f"resuming from {escape(ev.resumed_from)} at step {ev.step}" if ev.resumed_from else f"from step {ev.step}"
    procs = f", {ev.world} processes" if ev.world > 1 else ""
    out.print(f"training on {ev.device}{procs}: {ev.n_train} training / {ev.n_val} validation images, "
              f"{ev.n_styles} styles, {where} to step {ev.max_steps}")


def _print_summary(ev, started, last_saved, skipped: list[str]) -> None:
    from rich.table import Table

    table = Table(title="train: summary", title_justify="left")
    for col in ("steps run", "last step", "time", "per step", "best val loss", "last checkpoint"):
        table.add_column(col, justify="right" if col != "last checkpoint" else "left", overflow="fold")
    per = f"{ev.seconds / ev.steps_run:.2f} s" if ev.steps_run else "-"
    best = f"{ev.best_val_loss:.4f}" if ev.best_val_loss is not None else "-"
    table.add_row(str(ev.steps_run), str(ev.step), f"{ev.seconds:.1f} s", per, best, escape(str(last_saved or "-")))
    console.print(table)
    if skipped:
        console.print(f"[red]{len(skipped)} image file(s) could not be read and were skipped[/] (listed above)")
