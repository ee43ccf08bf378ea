"""Shared CLI plumbing: loading models with friendly errors, progress, manifest, summary, exit codes.

Exit codes (documented in the README): 0 every input done (or already done), 1 some input failed,
2 nothing could start (bad options, unusable checkpoint, output names that would collide).
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from e4ecli.files.batch import Item
    from e4ecli.hub.checkpoints import LoadedCheckpoint

console = Console(stderr=True, highlight=False, soft_wrap=True)  # messages stay one line each, whatever the width
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_CHECKPOINT = "e4e_ffhq_encode"

DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N."


def die(message: str, code: int = EXIT_USAGE) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def device_or_die(spec: str):
    from e4ecli.runtime import DeviceError, resolve_device

    try:
        return resolve_device(spec)
    except DeviceError as e:
        die(str(e))


def precision_or_die(precision: str) -> None:
    from e4ecli.runtime import PRECISIONS

    if precision not in PRECISIONS:
        die(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")


def distributed_or_die(device_spec: str, precision: str = "fp32"):
    """(Dist, torch.device): joins torchrun's process group when launched by it; tunes the backend."""
    from e4ecli.runtime import DeviceError, setup_distributed, tune_for

    precision_or_die(precision)
    try:
        dist, device = setup_distributed(device_spec)
    except DeviceError as e:
        die(str(e))
    tune_for(device)
    return dist, device


def load_model(spec: str) -> tuple["LoadedCheckpoint", str]:
    """Zoo name or path -> (loaded checkpoint, short id for manifests); friendly exit on failure."""
    from e4ecli.hub.checkpoints import CheckpointError, file_id, load_checkpoint

    try:
        path = Path(spec)
        if not path.exists():
            from e4ecli.hub import zoo

            path = zoo.resolve(spec)
        with console.status(f"loading {escape(str(path))}"):
            ckpt = load_checkpoint(path)
            ident = f"{path.name}:{file_id(path)}"
    except CheckpointError as e:
        die(str(e))
    except Exception as e:  # zoo errors (offline, unknown name) carry their own instructions
        if type(e).__name__ == "ZooError":
            die(str(e))
        raise
    if ckpt.latent_avg_source != "file":
        console.print(f"[yellow]note:[/] {escape(str(path))} has no latent_avg; using the {ckpt.latent_avg_source}")
    return ckpt, ident


def discover_or_die(inputs: Sequence[Path], extensions, out_dir: Path, skip_out: bool = True) -> tuple[list["Item"], list[tuple[str, str]]]:
    """Expand inputs; refuse to start if two inputs would write the same output.

    skip_out: folder scans do not enter out_dir (a command's output folder inside an input folder)."""
    from e4ecli.files.batch import collisions, discover

    items, problems = discover(inputs, extensions, exclude=out_dir if skip_out else None)
    for src, why in problems:
        console.print(f"[red]✗[/] {escape(src)}: {escape(why)}")
    clash = collisions(items)
    if clash:
        for key, sources in list(clash.items())[:20]:
            console.print(f"[red]✗[/] {', '.join(escape(str(s)) for s in sources)} would all be written as {escape(str(out_dir / key))}.*")
        die(f"{len(clash)} output name(s) would be shared by several inputs; rename them or invert them into separate -o folders")
    return items, problems


def run_with_progress(results: Iterable, total: int, label: str, out_dir: Path, checkpoint_id: str | None,
                      problems: Sequence[tuple[str, str]] = (), suffix: str = "", dist=None) -> int:
    """Consume pipeline Results: progress bar with ETA, one line per failure, manifest, summary table.

    Under torchrun (`dist.world > 1`) each rank writes manifest.rank<r>.jsonl; rank 0 merges them into
    manifest.jsonl and prints the summary of all ranks; every rank returns the same exit code.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from e4ecli.files.batch import Manifest, Record
    from e4ecli.runtime import Dist

    dist = dist or Dist()
    counts: Counter = Counter()
    problems = list(problems) if dist.is_main else []  # every rank saw the same missing inputs
    failures: list[tuple[str, str]] = list(problems)
    counts["failed"] += len(problems)
    start = time.perf_counter()
    name = "manifest.jsonl" if dist.world == 1 else f"manifest.rank{dist.rank}.jsonl"
    with Manifest(out_dir, name) as manifest, Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("•"),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console, transient=False,
        disable=not dist.is_main,
    ) as progress:
        for src, why in problems:
            manifest.add(Record(src, "", "failed", why, checkpoint_id))
        task = progress.add_task(label if dist.world == 1 else f"{label} (rank 0 of {dist.world})", total=total)
        for r in results:
            counts[r.status] += 1
            out = str(r.outputs[0].relative_to(out_dir)) if r.outputs else r.item.key + suffix
            manifest.add(Record(str(r.item.source), out, r.status, r.error, checkpoint_id))
            if r.status == "failed":
                failures.append((str(r.item.source), r.error or "failed"))
                progress.console.print(f"[red]✗[/] {escape(str(r.item.source))}: {escape(r.error or 'failed')}")
            progress.advance(task)
    elapsed = time.perf_counter() - start
    if dist.world > 1:
        gathered = dist.gather((dict(counts), failures))
        counts, failures = Counter(), []
        for c, f in gathered:
            counts.update(c)
            failures.extend(f)
        dist.barrier()
        if dist.is_main:
            Manifest(out_dir).absorb_parts()
    if dist.is_main:
        print_summary(label, counts, failures, elapsed, out_dir)
    return EXIT_FAILED if counts["failed"] else EXIT_OK


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
