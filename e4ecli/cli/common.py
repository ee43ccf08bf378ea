"""Shared CLI plumbing: loading models with friendly errors, progress, manifest, summary, exit codes.

Exit codes (documented in the README): 0 every input done (or already done), 1 some input failed,
2 nothing could start (bad options, unusable checkpoint, output names that would collide).
"""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import typer
from rich.console import Console
from rich.markup import escape as _markup_escape
from rich.table import Table

if TYPE_CHECKING:
    from e4ecli.files.batch import Item
    from e4ecli.hub.checkpoints import LoadedCheckpoint

# messages stay one line each, whatever the width; no :name: emoji (A:B:N, ganspace:-1:0:1 and file names stay as written)
console = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_CHECKPOINT = "e4e_ffhq_encode"

MAX_SIZE = 4096  # --size: output width in pixels (a 100000 px render would need ~120 GB)
DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N."


_BIDI = {0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029}


def _visible(ch: str) -> str:
    import unicodedata

    code = ord(ch)
    if code in _BIDI or unicodedata.category(ch) in ("Cc", "Cs"):
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return ch


def visible(text: object) -> str:
    """Control characters (ESC, newline, ...), bidi overrides and undecodable bytes shown as escapes: a name
    cannot forge a line or move the cursor. For text shown without markup (progress descriptions)."""
    text = str(text)
    if not text.isprintable():
        text = "".join(_visible(ch) if not ch.isprintable() else ch for ch in text)
    return text


def escape(text: object) -> str:
    """Text from a file name, a file or an option, made safe to print in rich markup: visible() plus rich
    markup escaped. Use it for everything that did not come from this program."""
    return _markup_escape(visible(text))


# how the CLI spells the settings that errors from below name (e4ecli.errors): its flags
FLAGS = {"pca": "--pca", "neutral": "--neutral", "beta": "--beta", "relevance": "--relevance", "clip_weights": "--clip-weights",
         "force": "--force", "attribute": "--attribute", "direction": "--direction", "strength": "--strength", "out": "-o"}


def worded(error: BaseException) -> str:
    """An error's message, the settings it names spelled as the CLI's flags."""
    from e4ecli.errors import worded as word

    return word(error, FLAGS)


def message_lines(message: "str | BaseException") -> list[str]:
    """The lines of a message: a string is one line (a line break in it came from a name and is shown as \\n);
    an error laid out on several lines by this program says so with a `lines` attribute (hub.fetch.FetchError),
    also when it was re-raised as another error with the same text (`raise X(str(e)) from None`)."""
    if isinstance(message, str):
        return [message]
    text, seen, error = worded(message), set(), message
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        lines = getattr(error, "lines", None)
        if lines and len(lines) > 1 and "\n".join(lines) == text:
            return list(lines)
        error = error.__cause__ or error.__context__
    return [text]


def error_text(message: "str | BaseException", prefix: str = "[bold red]error:[/] ") -> str:
    """`error: ...` in rich markup: each line of the message escaped on its own (names stay on their line),
    the lines joined by real line breaks."""
    return prefix + "\n".join(escape(line) for line in message_lines(message))


def die(message: "str | BaseException", code: int = EXIT_USAGE) -> None:
    """Print `error: message` and exit. Pass the error itself (not str(e)) when it may span several lines."""
    from e4ecli.files.guard import release_all

    release_all()
    console.print(error_text(message))
    raise typer.Exit(code)


def machine_cpus() -> int:
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def capped_workers(workers: int, option: str = "--workers") -> int:
    """At most one worker process per CPU this process may use (--workers 1000 once spawned 533 processes)."""
    cpus = machine_cpus()
    if workers > cpus:
        console.print(f"[yellow]note:[/] {option} {workers}: this machine has {cpus} CPU(s); using {cpus}")
        return cpus
    return workers


def out_dir_or_die(out: Path, lock: bool = True) -> None:
    """-o must be a folder this process can write (checked before anything loads; creates nothing).
    With `lock`, an existing folder is taken for this run (another e4e writing there is refused)."""
    from e4ecli.files.guard import OutputLocked, lock_output, out_dir_problem

    problem = out_dir_problem(out)
    if problem:
        die(f"-o {problem}")
    if lock:
        try:
            lock_output(out)
        except OutputLocked as e:
            die(locked_message(e))


def locked_message(e) -> str:
    """files.guard.OutputLocked as the CLI words it: what to do next."""
    return f"{e}; wait for it to finish or use another -o folder"


def landmark_note(message) -> None:
    """A note of the landmark detectors (e4ecli.landmarks.Notify) on the console; the fallback to dlib says how to
    choose it directly."""
    from e4ecli.landmarks import UsingDlib

    hint = " (--detector dlib skips this check)" if isinstance(message, UsingDlib) else ""
    console.print(f"[yellow]note:[/] {escape(str(message) + hint)}", soft_wrap=True)


def out_file_or_die(out: Path, inputs: Iterable[Path] = (), option: str = "-o") -> None:
    """An output file must be writable (its folder exists or can be made) and must not be one of `inputs`."""
    from e4ecli.files.guard import out_file_problem, overwritten_inputs

    problem = out_file_problem(out)
    if problem:
        die(f"{option} {problem}")
    for src, _ in overwritten_inputs(inputs, [out]):
        die(f"{option} {out} is the input {src}; writing it would destroy the input (choose another name)")


def output_run_or_die(label: str, target: Path, inputs: Iterable[Path] = (), option: str = "-o", **kw):
    """e4ecli.runs.OutputRun.prepare for a command's one output file, its problems worded as out_file_or_die does."""
    from e4ecli.runs import OutputLocked, OutputRun, OutputUnusable, OverwritesInput, UnrecordedOutput

    try:
        return OutputRun.prepare(label, target, list(inputs), **kw)
    except OutputUnusable as e:
        die(f"{option} {e.reason}")
    except OverwritesInput as e:
        die(f"{option} {target} is the input {e.hits[0][0]}; writing it would destroy the input (choose another name)")
    except UnrecordedOutput as e:
        die(f"{e}; --overwrite replaces it")
    except OutputLocked as e:
        die(locked_message(e))


def write_output_or_die(job, text: str) -> None:
    """Write a report (JSON) through its OutputRun: atomically, one line and exit 1 when it cannot be written."""
    from e4ecli.runs import Finished, ItemFailed

    for ev in job.execute(lambda tmp: tmp.write_text(text, encoding="utf-8") and None):
        if isinstance(ev, ItemFailed):
            die(ev.error, EXIT_FAILED)
        if isinstance(ev, Finished) and ev.stopped:
            die(ev.stopped, EXIT_FAILED)


def planned(items: Sequence["Item"], out_dir: Path, suffixes: Sequence[str]) -> dict:
    """item -> OUT/<key><suffix> for every suffix (the files a one-output-per-suffix command writes)."""
    from e4ecli.runs import planned_outputs

    return planned_outputs(items, out_dir, suffixes)


def save_or_die(out: Path, obj, kind: str) -> None:
    """Write one output file atomically (kind: 'torch', 'npy' or 'npz'); a write error (a full disk) is one
    line and exit 1, with the previous file left in place."""
    import os

    from e4ecli.files.batch import atomic_output, save_torch

    try:
        if kind == "torch":
            save_torch(out, obj)
        else:
            import numpy as np

            with atomic_output(out) as tmp:
                if kind == "npy":
                    np.save(tmp, obj, allow_pickle=False)
                else:
                    np.savez(tmp, **obj)
    except OSError as e:
        why = os.strerror(e.errno).lower() if e.errno else str(e)
        die(f"{why} writing {out} (nothing replaced)", EXIT_FAILED)


def outputs_or_die(items: Sequence["Item"], planned: dict) -> None:
    """`planned`: item -> every file that item will write. Refuse (exit 2, before any work) when two inputs
    would write the same file or when an output would replace one of the inputs."""
    from e4ecli.runs import OutputsClash, OverwritesInput, check_outputs

    try:
        check_outputs(items, planned)
    except OutputsClash as e:
        for path, owners in e.clashes[:20]:
            console.print(f"[red]✗[/] {', '.join(escape(o.source) for o in owners)} would all write {escape(path)}")
        die(f"{len(e.clashes)} output file(s) would be written by several inputs; rename the inputs or use separate -o folders")
    except OverwritesInput as e:
        src, _ = e.hits[0]
        more = f" (and {len(e.hits) - 1} more)" if len(e.hits) > 1 else ""
        die(f"the output would overwrite the input {src}{more}; choose an -o folder that does not hold the inputs")


def device_error(e) -> str:
    """A runtime.DeviceError in the CLI's words."""
    return f"--device {e.spec}: {e.reason}" + (f"; use --device {e.fallback}" if e.fallback else "")


def device_problem(spec: str) -> str | None:
    """Why --device cannot be a device at all (a typo), found without importing torch; None otherwise."""
    from e4ecli.runtime import DeviceError, check_device_spec

    try:
        check_device_spec(spec)
    except DeviceError as e:
        return device_error(e)
    return None


def device_or_die(spec: str):
    """The torch.device for --device, the process configured for it (runtime.configure_process), or a one-line exit."""
    from e4ecli.runtime import DeviceError, configure_process, resolve_device

    try:
        device = resolve_device(spec)
    except DeviceError as e:
        die(device_error(e))
    configure_process(device)
    return device


def precision_or_die(precision: str) -> None:
    from e4ecli.runtime import PRECISIONS

    if precision not in PRECISIONS:
        die(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")


def distributed_or_die(device_spec: str, precision: str = "fp32", *, training: bool = False):
    """(Dist, torch.device): joins torchrun's process group when launched by it; configures the process
    (runtime.configure_process; training: `e4e train`'s switches)."""
    from e4ecli.runtime import DeviceError, configure_process, precision_note, setup_distributed

    precision_or_die(precision)
    try:
        dist, device = setup_distributed(device_spec)
    except DeviceError as e:
        die(device_error(e))
    configure_process(device, training=training)
    note = precision_note(device, precision)
    if note and dist.is_main:
        console.print(f"[yellow]note:[/] {escape(note.replace('`precision`', '--precision'))}")
    return dist, device


def load_model(spec: str) -> tuple["LoadedCheckpoint", str]:
    """Zoo name or path -> (loaded checkpoint, short id for manifests); friendly exit on failure."""
    from e4ecli.hub.checkpoints import CheckpointError, file_id, load_checkpoint
    from e4ecli.hub.fetch import FetchError

    try:
        path = Path(spec)
        if not path.exists():
            from e4ecli.hub import zoo

            path = zoo.resolve(spec)
        with console.status(f"loading {escape(str(path))}"):
            ckpt = load_checkpoint(path)
            ident = f"{path.name}:{file_id(path)}"
    except (CheckpointError, FetchError) as e:  # fetch errors (offline, unknown zoo name) carry their own instructions
        die(e)
    if ckpt.latent_avg_source != "file":
        console.print(f"[yellow]note:[/] {escape(str(path))} has no latent_avg; using the {ckpt.latent_avg_source}")
    return ckpt, ident


def discover_or_die(inputs: Sequence[Path], extensions, out_dir: Path, skip_out: bool = True) -> tuple[list["Item"], list[tuple[str, str]]]:
    """Expand inputs (e4ecli.runs.find_inputs), printing each missing one; refuse to start if two inputs
    would write the same output.

    skip_out: folder scans do not enter out_dir (a command's output folder inside an input folder)."""
    from e4ecli.runs import find_inputs

    found = find_inputs(inputs, extensions, out_dir, exclude_out=skip_out)
    for src, why in found.missing:
        console.print(f"[red]✗[/] {escape(src)}: {escape(why)}")
    if found.clashes:
        for key, sources in list(found.clashes.items())[:20]:
            console.print(f"[red]✗[/] {', '.join(escape(str(s)) for s in sources)} would all be written as {escape(str(out_dir / key))}.*")
        die(f"{len(found.clashes)} output name(s) would be shared by several inputs; rename them or invert them into separate -o folders")
    return found.items, found.missing


def progress_columns() -> tuple:
    """The progress bar of every command: label, bar, N/M, elapsed, eta."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return (TextColumn("{task.description}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(), TextColumn("•"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())


_LIVE: list = []  # the batch's rich Progress while it is shown (one live display at a time)


@contextmanager
def _live(progress):
    _LIVE.append(progress)
    try:
        yield progress
    finally:
        _LIVE.remove(progress)


def live_progress():
    """The progress display of the batch being shown, to add a bar of its own to (refinement steps); None when
    none is shown (or on a rank other than 0, whose display is disabled)."""
    return _LIVE[-1] if _LIVE and not _LIVE[-1].disable else None


def show_events(events: Iterable, counter: dict | None = None) -> int:
    """A batch run's events (e4ecli.runs.events) as the CLI shows them: progress bar with ETA, one line per
    failure, notes, the summary table on rank 0; returns the exit code (0 all done, 1 something failed).
    counter["done"] counts the items done or skipped (for the Ctrl-C line). An output folder that cannot be
    used or is locked exits 2."""
    from rich.progress import Progress

    from e4ecli.runs import Finished, ItemFailed, Note, OutputLocked, OutputUnusable, Started

    counter = counter if counter is not None else {}
    counter["done"] = 0
    events = iter(events)
    try:
        first = next(events)
    except OutputUnusable as e:
        die(f"-o {e.reason}")
    except OutputLocked as e:
        die(locked_message(e))
    finished = first if isinstance(first, Finished) else None
    if isinstance(first, Started):
        main = first.rank == 0
        with Progress(*progress_columns(), console=console, transient=False, disable=not main) as progress, _live(progress):
            task = progress.add_task(first.label if first.world == 1 else f"{first.label} (rank 0 of {first.world})", total=first.total)
            for ev in events:
                if isinstance(ev, Finished):
                    finished = ev
                elif isinstance(ev, Note):
                    progress.console.print(f"[yellow]{'warning' if ev.level == 'warning' else 'note'}:[/] {escape(ev.message)}")
                else:
                    if isinstance(ev, ItemFailed):
                        progress.console.print(f"[red]✗[/] {escape(ev.source)}: {escape(ev.error)}")
                    else:
                        counter["done"] += 1
                    progress.advance(task)
    assert finished is not None
    if finished.stopped:
        console.print(f"[red]✗[/] stopped: {escape(finished.stopped)}")
    if finished.rank == 0:
        print_summary(finished.label, Counter(finished.counts), finished.failures, finished.seconds, finished.out)
    return EXIT_OK if finished.ok else EXIT_FAILED


def print_summary(label: str, counts: Counter, failures: Sequence[tuple[str, str]], elapsed: float, out_dir: Path) -> None:
    done = counts["ok"]
    table = Table(title=f"{label}: summary", title_justify="left", show_header=True)
    table.add_column("done", justify="right", style="green")
    table.add_column("skipped (already done)", justify="right")
    table.add_column("failed", justify="right", style="red" if counts["failed"] else "")
    table.add_column("time", justify="right")
    table.add_column("per item", justify="right")
    per = f"{elapsed / done:.2f} s" if done else "-"
    table.add_row(str(done), str(counts["skipped"]), str(counts["failed"]), f"{elapsed:.1f} s", per)
    console.print(table)
    if failures:
        ft = Table(title="failed inputs", title_justify="left")
        ft.add_column("input", overflow="fold")
        ft.add_column("reason", overflow="fold")
        for src, why in failures[:50]:
            ft.add_row(escape(src), escape(why))
        if len(failures) > 50:
            ft.add_row(f"... and {len(failures) - 50} more", "see manifest.jsonl")
        console.print(ft)
    console.print(f"outputs and manifest.jsonl in {escape(str(out_dir))}")
