"""The batch run: inputs found and named, shared across processes, the output folder locked, finished work
skipped by fingerprint, every result recorded in the manifest, obsolete files removed; see e4ecli.runs."""
from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Iterator, Mapping, Sequence

from e4ecli.files.batch import Item, collisions, discover, output_path, shard
from e4ecli.files.guard import OutputLocked, lock_output, out_dir_problem, overwritten_inputs, shared_outputs, unlock_output
from e4ecli.runs.events import Finished, ItemDone, ItemFailed, ItemSkipped, Note, Started
from e4ecli.runtime import Dist


# -- problems that stop a run before it starts (nothing has been created) ----------------------------
class RunError(Exception):
    """A batch run that cannot start; nothing was created or loaded. Subclasses carry the details."""


class OutputUnusable(RunError):
    """The output folder cannot be used; `reason` names it ('OUT is a file, not a folder')."""

    def __init__(self, out: Path, reason: str):
        self.out, self.reason = Path(out), reason
        super().__init__(reason)


class NameClash(RunError):
    """Several inputs would be written under one output name: `clashes` maps the key to their sources."""

    def __init__(self, out: Path, clashes: Mapping[str, list[Path]]):
        self.out, self.clashes = Path(out), dict(clashes)
        super().__init__(f"{len(self.clashes)} output name(s) would be shared by several inputs")


class NoInputs(RunError):
    """Nothing to do: no input file found (`missing`: (input, reason) for inputs that do not exist)."""

    def __init__(self, missing: Sequence[tuple[str, str]] = ()):
        self.missing = list(missing)
        super().__init__(f"none of the inputs can be read ({len(self.missing)} missing)" if self.missing else "no input files found")


class OutputsClash(RunError):
    """Several inputs would write the same output file: `clashes` is [(path, [items])]."""

    def __init__(self, clashes: list[tuple[Path, list[Any]]]):
        self.clashes = clashes
        super().__init__(f"{len(clashes)} output file(s) would be written by several inputs")


class OverwritesInput(RunError):
    """An output would replace one of the inputs: `hits` is [(input, output)]."""

    def __init__(self, hits: list[tuple[Path, Path]]):
        self.hits = hits
        super().__init__(f"the output would overwrite the input {hits[0][0]}")


# -- planning ---------------------------------------------------------------------------------------
@dataclass
class Inputs:
    """What the inputs expand to: the items, the inputs that do not exist, and output names claimed twice."""

    items: list[Item]
    missing: list[tuple[str, str]]
    clashes: dict[str, list[Path]]


def find_inputs(inputs: Sequence[str | Path], extensions: Collection[str], out: Path, exclude_out: bool = True) -> Inputs:
    """Expand files and folders into Items named after them (e4ecli.files.batch's naming rule). Folder scans
    do not enter `out` with `exclude_out` (an output folder inside an input folder)."""
    items, missing = discover(inputs, extensions, exclude=out if exclude_out else None)
    return Inputs(items, missing, collisions(items))


def planned_outputs(items: Sequence[Item], out: Path, suffixes: Sequence[str]) -> dict[Item, list[Path]]:
    """item -> OUT/<key><suffix> for every suffix (the files a one-output-per-suffix command writes)."""
    return {it: [output_path(out, it.key, s) for s in suffixes] for it in items}


def check_outputs(items: Sequence[Item], planned: Mapping[Any, Sequence[Path]]) -> None:
    """`planned`: item -> every file it will write. Raises OutputsClash when two inputs would write the same
    file, OverwritesInput when an output would replace an input (also through links)."""
    clashes = shared_outputs(planned)
    if clashes:
        raise OutputsClash(clashes)
    hits = overwritten_inputs([it.source for it in items], [p for paths in planned.values() for p in paths])
    if hits:
        raise OverwritesInput(hits)


# -- the run ----------------------------------------------------------------------------------------
@dataclass
class BatchRun:
    """One batch run into the folder `out`: `items` is this process's share of `all_items`.

    Build it with `BatchRun.prepare(...)` (checks and locks), call `start(settings)` once the settings are
    known (returns the pipelines' `finished=` predicate), then iterate `execute(results)` for the events."""

    label: str
    out: Path
    items: list[Item]
    all_items: list[Item]
    device: Any = None  # for the caller's pipeline; the run itself never touches a device
    dist: Any = None  # runtime.Dist (a world of one when None)
    overwrite: bool = False
    previous: Any = field(default=None, repr=False)  # files.provenance.Previous, set by start()
    checkpoint_id: str | None = None
    missing: list[tuple[str, str]] = field(default_factory=list)
    suffix: str = ""  # the manifest's output name for a failed item that wrote nothing: <key><suffix>

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.dist is None:
            self.dist = Dist()

    @classmethod
    def prepare(cls, label: str, inputs: Sequence[str | Path], out: Path, extensions: Collection[str], *,
                overwrite: bool = False, dist: Dist | None = None, device: Any = None, exclude_out: bool = True,
                suffixes: Sequence[str] | None = None, lock: bool = True) -> "BatchRun":
        """Check and plan a run; raises a RunError (nothing created) or OutputLocked.

        suffixes: the files each input writes (OUT/<key><suffix>): checked for clashes and for replacing inputs.
        lock: take the output folder now when it exists (execute() takes it anyway once it made it)."""
        dist = dist or Dist()
        out = Path(out)
        problem = out_dir_problem(out)
        if problem:
            raise OutputUnusable(out, problem)
        found = find_inputs(inputs, extensions, out, exclude_out)
        if found.clashes:
            raise NameClash(out, found.clashes)
        if not found.items:
            raise NoInputs(found.missing)
        if suffixes:
            check_outputs(found.items, planned_outputs(found.items, out, suffixes))
        run = cls(label, out, shard(found.items, dist.rank, dist.world), found.items, device, dist, overwrite,
                  missing=found.missing, suffix=suffixes[0] if suffixes else "")
        if lock and dist.is_main:
            run.lock()
        return run

    def lock(self) -> None:
        """Take the output folder for this process if it exists (raises files.guard.OutputLocked)."""
        lock_output(self.out)

    def close(self) -> None:
        """Release the output folder."""
        unlock_output(self.out)

    def __enter__(self) -> "BatchRun":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, settings: Mapping, checkpoint_id: str | None = None) -> Callable[[Item, Sequence[Path]], bool]:
        """Record the run's Settings (e4ecli.files.provenance; and the manifest's `checkpoint` label); returns
        the predicate the pipelines take as `finished=`."""
        from e4ecli.files.provenance import Previous

        self.previous = Previous(self.out, settings, self.overwrite)
        self.previous.keep = {os.path.realpath(it.source) for it in self.all_items}  # never removed as obsolete
        self.checkpoint_id = checkpoint_id
        return self.previous.finished

    def execute(self, results: Iterable[Any], total: int | None = None) -> Iterator[Any]:
        """Take the pipeline's Results (lazily: the work happens while this iterates) and yield Started, Note,
        ItemDone / ItemSkipped / ItemFailed per result, then Finished (counts of every process).

        Makes and locks the output folder first (OutputUnusable, OutputLocked); appends each result to
        OUT/manifest.jsonl (under torchrun manifest.rank<r>.jsonl, merged by rank 0 at the end) with its
        settings fingerprint; removes the files an earlier record of an output lists that this run no longer
        writes; releases the folder at the end."""
        dist = self.dist
        if dist.is_main:
            problem = out_dir_problem(self.out)
            if problem:
                raise OutputUnusable(self.out, problem)
            self.out.mkdir(parents=True, exist_ok=True)
            lock_output(self.out)  # now that it exists
        try:
            yield from self._consume(results, len(self.items) if total is None else total)
        finally:
            self.close()

    def run(self, results: Iterable[Any], on_event: Callable[[Any], None] | None = None) -> Finished:
        """execute() to the end; returns the Finished event (`on_event` sees every event)."""
        finished = None
        for ev in self.execute(results):
            if on_event is not None:
                on_event(ev)
            if isinstance(ev, Finished):
                finished = ev
        assert finished is not None
        return finished

    def _consume(self, results: Iterable[Any], total: int) -> Iterator[Any]:
        from e4ecli.files.batch import Manifest, ManifestError, Record

        dist, out, previous = self.dist, self.out, self.previous
        counts: Counter = Counter()
        missing = list(self.missing) if dist.is_main else []  # every rank saw the same missing inputs
        failures: list[tuple[str, str]] = list(missing)
        counts["failed"] += len(missing)
        start = time.perf_counter()
        name = "manifest.jsonl" if dist.world == 1 else f"manifest.rank{dist.rank}.jsonl"
        stopped = None
        noted = previous is None
        try:
            with Manifest(out, name) as manifest:
                for src, why in missing:
                    manifest.add(Record(src, "", "failed", why, self.checkpoint_id))
                yield Started(self.label, out, total, dist.rank, dist.world, tuple(missing))
                for r in results:
                    if not noted:  # every skip decision is made before the first result arrives
                        noted = True
                        changed = previous.summary()
                        if changed:
                            yield Note(f"redoing outputs an earlier run made differently: {changed}")
                    counts[r.status] += 1
                    shown = r.outputs[0].relative_to(out).as_posix() if r.outputs else r.item.key + self.suffix
                    extra = dict(getattr(r, "extra", None) or {})
                    if previous is not None:
                        extra.update(previous.fields(r.item.source))
                        if r.outputs:
                            extra["files"] = [p.relative_to(out).as_posix() for p in r.outputs]
                        if r.status == "ok":  # what the earlier run wrote and this one did not must not pass for its result
                            for stale in previous.obsolete(r.outputs, previous.keep):
                                stale.unlink(missing_ok=True)
                    manifest.add(Record(str(r.item.source), shown, r.status, r.error, self.checkpoint_id, extra=extra))
                    if r.status == "failed":
                        failures.append((str(r.item.source), r.error or "failed"))
                        yield ItemFailed(r)
                    elif r.status == "skipped":
                        yield ItemSkipped(r)
                    else:
                        yield ItemDone(r)
        except ManifestError as e:  # e.g. the disk is full: the manifest keeps whole lines; stop rather than go on blind
            stopped = f"cannot record results: {e}"
        elapsed = time.perf_counter() - start
        if dist.world > 1:
            gathered = dist.gather((dict(counts), failures))
            counts, failures = Counter(), []
            for c, f in gathered:
                counts.update(c)
                failures.extend(f)
            dist.barrier()
            if dist.is_main:
                Manifest(out).absorb_parts()
        yield Finished(self.label, out, dict(counts), failures, elapsed, stopped, dist.rank, dist.world)


__all__ = ["BatchRun", "Inputs", "NameClash", "NoInputs", "OutputLocked", "OutputUnusable", "OutputsClash", "OverwritesInput",
           "RunError", "check_outputs", "find_inputs", "planned_outputs"]
