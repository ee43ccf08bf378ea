"""A run that makes ONE output file from some inputs (`e4e video`'s clip, `e4e edit-video`'s clip, `e4e eval`'s
JSON): the same template as a batch run, for a single output -- its folder checked and locked, a settings
fingerprint, a manifest record, skipped when up to date, written atomically.

    job = OutputRun.prepare("video", Path("morph.mp4"), [a, b])           # OutputRunError subclasses: nothing created
    if not job.start(Settings("video", checkpoint=ck_id, frames=60)):     # False: redo (job.changed says why)
        for ev in job.execute(lambda tmp: write(tmp)):                   # make writes the temp path it is given
            ...                                                           # Started, Note, ItemDone | ItemFailed, Finished

`start()` needs only the settings: a caller that can name them before loading any model learns that the output
is up to date without loading anything (`e4e edit-video` does). The record is a line of RECORDS/manifest.jsonl
(RECORDS: the output's folder by default) in the format of e4ecli.files.provenance, keyed by the output's path
relative to RECORDS; `extra` fields (counts, notes) are kept on it and returned by `job.record` on the next run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from e4ecli.files.batch import Item
from e4ecli.files.guard import lock_output, out_dir_problem, out_file_problem, overwritten_inputs, unlock_output
from e4ecli.runs.batch import OutputUnusable, OverwritesInput, RunError
from e4ecli.runs.events import Finished, ItemDone, ItemFailed, ItemSkipped, Note, Started


class UnrecordedOutput(RunError):
    """The output exists and no manifest line says how it was made: it is not replaced without `overwrite`."""

    def __init__(self, target: Path, manifest: Path):
        self.target, self.manifest = Path(target), Path(manifest)
        super().__init__(f"{target} exists and {manifest} has no record of how it was made")


@dataclass
class OneResult:
    """The single output's result, shaped like a pipeline's Result (item, status, outputs, error, extra)."""

    item: Item
    status: str
    outputs: list[Path] = field(default_factory=list)
    error: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class OutputRun:
    """One output file `target` made from `sources`; records in `records`/manifest.jsonl (default: target's folder).

    stamp_input: the (single) source's size and mtime join the fingerprint (a changed input redoes the output);
    stamp_output: also record the output file's size and mtime, and redo when they changed (the file was
    replaced or edited after the run); record_it=False: no manifest line, no skip and no lock (a report that is
    always made anew, `e4e eval`'s JSON), the rest of the template (checks, atomic write, events) kept."""

    label: str
    target: Path
    sources: list[Path]
    overwrite: bool = False
    records: Path | None = None
    stamp_output: bool = False
    stamp_input: bool = False
    record_it: bool = True
    previous: Any = field(default=None, repr=False)  # files.provenance.Previous, set by start()
    checkpoint_id: str | None = None
    up_to_date: bool = False
    changed: str | None = None  # why an existing output is redone ('frames (1)'), set by start()

    def __post_init__(self) -> None:
        self.target = Path(self.target)
        self.sources = [Path(s) for s in self.sources]
        self.records = Path(self.records) if self.records is not None else (self.target.parent if str(self.target.parent) else Path("."))

    @classmethod
    def prepare(cls, label: str, target: Path, sources: Sequence[Path] = (), *, overwrite: bool = False, records: Path | None = None,
                require_record: bool = True, stamp_input: bool = False, stamp_output: bool = False, record: bool = True,
                lock: bool = True) -> "OutputRun":
        """Check the output (nothing is created); raises OutputUnusable (target is a folder, its folder cannot be
        made), OverwritesInput (target is one of the sources), UnrecordedOutput (with require_record: target exists
        without a manifest line and not overwrite), files.guard.OutputLocked (another process writes there)."""
        run = cls(label, target, list(sources), overwrite, records, stamp_output, stamp_input, record)
        problem = out_file_problem(run.target)
        if problem is None and run.records != run.target.parent:
            problem = out_dir_problem(run.records)
        if problem:
            raise OutputUnusable(run.target, problem)
        hits = overwritten_inputs(run.sources, [run.target])
        if hits:
            raise OverwritesInput(hits)
        if record and require_record and not overwrite and run.target.exists() and run.record_status() not in ("ok", "skipped"):
            raise UnrecordedOutput(run.target, run.records / "manifest.jsonl")
        if lock:
            run.lock()
        return run

    # -- the record ----------------------------------------------------------------------------------------
    @property
    def source_label(self) -> str:
        return ", ".join(str(p) for p in self.sources)

    @property
    def key(self) -> str:
        import os

        return Path(os.path.relpath(self.target, self.records)).as_posix()

    @property
    def record(self) -> dict | None:
        """The manifest line of the target that an earlier run wrote (None: none)."""
        from e4ecli.files.provenance import manifest_paths, read_records

        if self.previous is not None:
            return self.previous.records.get(self.key)
        return read_records(manifest_paths(self.records)).get(self.key)

    def record_status(self) -> str | None:
        return (self.record or {}).get("status")

    def lock(self) -> None:
        """Take the records folder if it exists (raises files.guard.OutputLocked)."""
        lock_output(self.records)

    def close(self) -> None:
        unlock_output(self.records)

    def __enter__(self) -> "OutputRun":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the decision ------------------------------------------------------------------------------------------
    def start(self, settings: Mapping, checkpoint_id: str | None = None) -> bool:
        """Judge the earlier record against `settings` (the values that change the output's bytes; the sources'
        size and mtime are added); True when the output is up to date (execute() then only records the skip)."""
        from e4ecli.files.provenance import Previous, input_stamp

        self.previous = Previous(self.records, settings, self.overwrite)
        self.checkpoint_id = checkpoint_id
        self.up_to_date = self.previous.finished_source(self._source, [self.target])
        if self.up_to_date and self.stamp_output and (self.record or {}).get("output_stamp") != input_stamp(self.target):
            self.up_to_date = False
            self.previous.redo_reasons["output file changed"] += 1
        self.changed = self.previous.summary() if self.target.exists() and not self.overwrite else None
        return self.up_to_date

    @property
    def _source(self) -> Path | None:
        return self.sources[0] if self.stamp_input and self.sources else None

    def execute(self, make: Callable[[Path], Mapping | None], atomic: bool = True,
                errors: tuple[type[BaseException], ...] = (OSError, ValueError)) -> Iterator[Any]:
        """Make the output unless it is up to date, record it, yield the events:
        Started, [Note why it is redone], ItemDone | ItemSkipped | ItemFailed, Finished.

        make(path) writes the output at `path` -- a temp name beside the target, renamed onto it when make
        returns (atomic=True), or the target itself when make writes atomically on its own (atomic=False) --
        and returns extra fields for the manifest line (or None). An exception of `errors` from make is the
        item's failure (one line); others propagate. Only a made output is recorded: a skip or a failure leaves
        the earlier output and its line as they were."""
        from e4ecli.files.batch import Manifest, ManifestError, Record, atomic_output
        from e4ecli.files.provenance import input_stamp

        if self.previous is None and self.record_it:
            raise RuntimeError("call start(settings) before execute()")
        problem = out_dir_problem(self.records)
        if problem:
            raise OutputUnusable(self.target, problem)
        self.records.mkdir(parents=True, exist_ok=True)
        if self.record_it:  # one writer of the folder's manifest at a time; a report without a record takes no lock
            lock_output(self.records)
        start = time.perf_counter()
        item = Item(self.sources[0] if self.sources else self.target, self.target.stem)
        stopped = None
        try:
            yield Started(self.label, self.target.parent, 1)
            if self.up_to_date:
                result = OneResult(item, "skipped", [self.target], extra=dict(self.record or {}))
            else:
                if self.changed:
                    yield Note(f"redoing {self.target}: it was made differently ({self.changed})")
                try:
                    if atomic:
                        with atomic_output(self.target) as tmp:
                            extra = make(tmp)
                    else:
                        extra = make(self.target)
                    result = OneResult(item, "ok", [self.target], extra=dict(extra or {}))
                except errors as e:
                    result = OneResult(item, "failed", [], f"cannot write {self.target}: {e}")
            if result.status == "ok" and self.record_it:
                fields = dict(self.previous.fields(self._source), **result.extra, files=[self.key])
                if self.stamp_output:
                    fields["output_stamp"] = input_stamp(self.target)
                try:
                    with Manifest(self.records) as manifest:
                        manifest.add(Record(self.source_label, self.key, "ok", None, self.checkpoint_id, extra=fields))
                except ManifestError as e:
                    stopped = f"cannot record results: {e}"
            yield (ItemDone if result.status == "ok" else ItemSkipped if result.status == "skipped" else ItemFailed)(result)
            failures = [(self.source_label, result.error or "failed")] if result.status == "failed" else []
            yield Finished(self.label, self.target.parent, {result.status: 1}, failures, time.perf_counter() - start, stopped)
        finally:
            self.close()

    def run(self, make: Callable[[Path], Mapping | None], atomic: bool = True, on_event: Callable[[Any], None] | None = None,
            errors: tuple[type[BaseException], ...] = (OSError, ValueError)) -> Finished:
        """execute() to its end; returns the Finished event."""
        finished = None
        for ev in self.execute(make, atomic, errors):
            if on_event is not None:
                on_event(ev)
            if isinstance(ev, Finished):
                finished = ev
        assert finished is not None
        return finished


__all__ = ["OneResult", "OutputRun", "UnrecordedOutput"]
