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
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterable, NoReturn, Sequence

import typer

from e4ecli.cli.common import DEFAULT_CHECKPOINT, DEVICE_HELP, EXIT_USAGE, MAX_SIZE, console, die, escape, progress_columns

if TYPE_CHECKING:
    from e4ecli.files.batch import Item
    from e4ecli.files.provenance import Previous
    from e4ecli.pipelines.common import Finished, Result

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


def ident_hash(ident: str) -> str:
    """'e4e_ffhq_encode.pt:0123abcd...' -> the content part (a renamed copy is the same checkpoint)."""
    return ident.rsplit(":", 1)[-1]


# -- the skeleton ------------------------------------------------------------------------------------
@dataclass
class Job:
    """What `work` gets: this process's share of the inputs, the device, and `start(settings)`."""

    label: str
    out: Path
    items: list["Item"]
    all_items: list["Item"]
    device: Any
    dist: Any
    overwrite: bool
    previous: "Previous | None" = field(default=None, repr=False)
    checkpoint_id: str | None = None

    def start(self, settings, checkpoint_id: str | None = None) -> "Finished":
        """Record the run's Settings (and the manifest's `checkpoint` label); returns the predicate the
        pipelines take as `finished=`."""
        from e4ecli.files.provenance import Previous

        import os

        self.previous = Previous(self.out, settings, self.overwrite)
        self.previous.keep = {os.path.realpath(it.source) for it in self.all_items}  # never removed as obsolete
        self.checkpoint_id = checkpoint_id
        return self.previous.finished


def run_batch(label: str, inputs: Sequence[Path], out: Path, extensions: Collection[str],
              work: Callable[[Job], Iterable["Result"]], *, device: str, precision: str, overwrite: bool,
              suffix: str, empty: str, checkpoint: str | None = None, usage: Iterable[str | None] = (),
              check_items: Callable[[list["Item"]], Iterable[str] | None] | None = None, distributed: bool = True,
              exclude_out: bool = True) -> NoReturn:
    """Run one batch command from validated options to its exit code (see the module docstring).

    usage: the command's own problems found without a model (reported with run_batch's own, together);
    check_items(all items) -> more problems (or it exits itself, e.g. outputs_or_die), before anything loads."""
    from e4ecli.cli.common import discover_or_die, distributed_or_die, out_dir_or_die, precision_or_die, run_with_progress
    from e4ecli.files.batch import shard
    from e4ecli.files.guard import out_dir_problem

    precision_or_die(precision)
    problems_before = list(usage)
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
    mine = shard(items, dist.rank, dist.world)
    job = Job(label, out, mine, items, dev, dist, overwrite)
    progress = {"done": 0}
    try:
        results = work(job)  # a plain function: the model loads here, the pipeline runs lazily below
        code = run_with_progress(results, len(mine), label, out, job.checkpoint_id, missing, suffix=suffix, dist=dist,
                                 previous=job.previous, counter=progress)
    except KeyboardInterrupt:
        interrupted(progress["done"], len(mine))
    dist.close()
    raise typer.Exit(code)


def interrupted(done: int, total: int) -> NoReturn:
    """Ctrl-C: one line, exit 130 (finished outputs are complete and a rerun skips them)."""
    from e4ecli.files.guard import release_all

    release_all()
    console.print(f"interrupted: {done} of {total} done, rerun the same command to finish")
    raise typer.Exit(EXIT_INTERRUPTED)


__all__ = ["EXIT_INTERRUPTED", "EXIT_USAGE", "Job", "progress_columns", "run_batch"]
