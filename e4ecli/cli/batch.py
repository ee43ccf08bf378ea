"""The skeleton every batch command shares, and the options they share.

A batch command parses its options, checks what it can without a model (`usage` messages), then calls
`run_batch(...)` with a `work(job)` function that loads the model, builds the run's `Settings`
(e4ecli.files.provenance) and returns the pipeline's Results:

    def work(job: Job):
        ckpt, ident = load_model(checkpoint)
        finished = job.start(Settings("render", checkpoint=ident_hash(ident), precision=precision, size=size))
        return render(job.items, ckpt, out, device=job.device, ..., finished=finished)

    run_batch("render", inputs, out, LATENT_EXTENSIONS, work, device=device, precision=precision,
              overwrite=overwrite, checkpoint=checkpoint, suffix=".png", empty="no .npy latents found ...")

run_batch: validates (precision, -o, the command's `usage` messages, inputs: all reported together; then
`check_items`, e.g. outputs that would collide or replace inputs; then that the checkpoint is a file or a
zoo name; exit 2 with nothing created) -> joins torchrun, locks -o -> shards -> work -> progress, manifest with each output's
settings, summary -> exit 0/1; Ctrl-C exits 130 with one line.

The run itself (sharding, lock, skip by fingerprint, manifest, rank merging, obsolete outputs) is
e4ecli.runs.BatchRun -- `Job` is that class -- and this module is its CLI adapter: problems become one line
and exit 2, the run's events a progress bar and a summary (e4ecli.cli.common.show_events).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Collection, Iterable, NoReturn, Sequence

import typer

from e4ecli.cli.common import DEFAULT_CHECKPOINT, DEVICE_HELP, EXIT_USAGE, MAX_SIZE, console, die, escape, progress_columns
from e4ecli.files.provenance import ident_hash  # noqa: F401 -- the commands take it from here
from e4ecli.runs.batch import BatchRun as Job  # what `work` gets: items (this process's share), device, dist, start(settings)

if TYPE_CHECKING:
    from e4ecli.files.batch import Item
    from e4ecli.pipelines.common import Result

EXIT_INTERRUPTED = 130
PRECISION_HELP = "fp32 (exact, the default), or for speed fp16 (GPUs) / bf16 (GPUs, and CPUs with native bf16: AVX512-BF16 or AMX)."


# -- shared options -------------------------------------------------------------------------------
def checkpoint_option(help: str = "e4e/pSp checkpoint or bare StyleGAN2 generator: zoo name or file path."):
    return typer.Option(DEFAULT_CHECKPOINT, "--checkpoint", "-c", help=help)


def device_option(prefix: str = ""):
    return typer.Option("auto", help=prefix + DEVICE_HELP)


def precision_option(note: str = ""):
    return typer.Option("fp32", help=PRECISION_HELP[:-1] + note + ".")


def batch_size_option(what: str = "Latents"):
    return typer.Option(4, "--batch-size", "-b", min=1, help=f"{what} per forward pass.")


def workers_option(help: str = "Processes reading inputs in the background (0: read inline; at most one per CPU)."):
    return typer.Option(0, min=0, help=help)


def size_option(what: str = "Output width"):
    return typer.Option(None, min=1, max=MAX_SIZE, help=f"{what}, by area averaging (default: the generator's native size; at most {MAX_SIZE}).")


def overwrite_option(what: str = "input"):
    return typer.Option(False, help=f"Redo every {what}, even those an earlier run already made with the same settings "
                                    "(default: skip those; outputs made with other settings are always redone).")


# -- validation before anything loads --------------------------------------------------------------
def checkpoint_problem(spec: str) -> str | None:
    """Why `--checkpoint spec` cannot be opened, found without opening it (None: a file or a zoo name)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return None
    if path.exists():
        return f"--checkpoint {spec}: not a file"
    from e4ecli.hub import zoo

    try:
        zoo.lookup(spec)
    except zoo.ZooError as e:
        if path.suffix or "/" in spec or "\\" in spec:
            return f"--checkpoint {spec}: no such file"
        return f"--checkpoint {spec}: neither an existing file nor a zoo name ({e})"
    return None


def usage_or_die(problems: Iterable[str | None]) -> None:
    """Print every usage problem (one line each) and exit 2; nothing has been created or loaded yet."""
    found = [p for p in problems if p]
    for p in found[:-1]:
        console.print(f"[bold red]error:[/] {escape(p)}")
    if found:
        die(found[-1])


# -- the skeleton ------------------------------------------------------------------------------------
def run_batch(label: str, inputs: Sequence[Path], out: Path, extensions: Collection[str],
              work: Callable[[Job], Iterable["Result"]], *, device: str, precision: str, overwrite: bool,
              suffix: str, empty: str, checkpoint: str | None = None, usage: Iterable[str | None] = (),
              check_items: Callable[[list["Item"]], Iterable[str] | None] | None = None, distributed: bool = True,
              exclude_out: bool = True) -> NoReturn:
    """Run one batch command from validated options to its exit code (see the module docstring).

    usage: the command's own problems found without a model (reported with run_batch's own, together);
    check_items(all items) -> more problems (or it exits itself, e.g. outputs_or_die), before anything loads."""
    from e4ecli.cli.common import (device_problem, discover_or_die, distributed_or_die, out_dir_or_die, precision_or_die,
                                   show_events)
    from e4ecli.files.batch import shard
    from e4ecli.files.guard import out_dir_problem, release_all

    precision_or_die(precision)
    problems_before = list(usage)
    problems_before.append(device_problem(device))
    out_problem = out_dir_problem(out)
    problems_before.append(f"-o {out_problem}" if out_problem else None)
    items, missing = discover_or_die(inputs, extensions, out, skip_out=exclude_out)  # prints each missing input
    if not items:
        problems_before.append(f"none of the inputs can be read ({len(missing)} missing); nothing to do" if missing else empty)
    usage_or_die(problems_before)
    if check_items is not None:
        usage_or_die(check_items(items) or ())
    if checkpoint is not None:  # last: every problem above is found without even looking at the checkpoint
        usage_or_die([checkpoint_problem(checkpoint)])

    if distributed:
        dist, dev = distributed_or_die(device, precision)
    else:
        from e4ecli.cli.common import device_or_die
        from e4ecli.runtime import Dist

        dist, dev = Dist(), device_or_die(device)
    out_dir_or_die(out, lock=dist.is_main)
    job = Job(label, out, shard(items, dist.rank, dist.world), items, dev, dist, overwrite, missing=missing, suffix=suffix)
    progress = {"done": 0}
    try:
        results = work(job)  # a plain function: the model loads here, the pipeline runs lazily below
        code = show_events(job.execute(results), counter=progress)
    except KeyboardInterrupt:
        interrupted(progress["done"], len(job.items))
    finally:
        release_all()
    dist.close()
    raise typer.Exit(code)


def interrupted(done: int, total: int) -> NoReturn:
    """Ctrl-C: one line, exit 130 (finished outputs are complete and a rerun skips them)."""
    from e4ecli.files.guard import release_all

    release_all()
    console.print(f"interrupted: {done} of {total} done, rerun the same command to finish")
    raise typer.Exit(EXIT_INTERRUPTED)


__all__ = ["EXIT_INTERRUPTED", "EXIT_USAGE", "Job", "progress_columns", "run_batch"]
