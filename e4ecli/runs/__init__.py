"""Batch runs below the CLI: the same skip / manifest / lock behaviour for `e4e` and for library users.

A run takes inputs (files and folders) to one output folder. This layer finds and names the inputs,
shares them across torchrun processes, locks the folder (one writer at a time), skips outputs an earlier
run made with the same settings (fingerprint, e4ecli.files.provenance), records every result in
OUT/manifest.jsonl (rank parts merged by rank 0), and removes files an earlier record lists that this run no
longer writes. It never prints and never exits: it yields events (e4ecli.runs.events) and raises typed
problems; `e4ecli.cli` shows the events as a progress bar and a summary and words the problems.

    from e4ecli.files.latents import LATENT_EXTENSIONS
    from e4ecli.hub.checkpoints import file_id
    from e4ecli.pipelines.render import RenderConfig, RenderPipeline
    from e4ecli.runs import BatchRun, Finished, ItemFailed

    pipe = RenderPipeline.from_checkpoint(path, RenderConfig(size=256), device="cpu")
    with BatchRun.prepare("render", ["latents/"], Path("renders"), LATENT_EXTENSIONS, suffixes=pipe.suffixes) as run:
        finished = run.start(pipe.settings(file_id(path)), file_id(path))
        for ev in run.execute(pipe(run.items, run.out, finished=finished)):
            if isinstance(ev, ItemFailed):
                print(ev.source, ev.error)
            elif isinstance(ev, Finished):
                print(ev.done, ev.skipped, ev.failed)  # a second identical run: 0 done, all skipped

API
  BatchRun.prepare(label, inputs, out, extensions, *, overwrite=False, dist=None, device=None,
                   exclude_out=True, suffixes=None, lock=True) -> BatchRun
      checks the output folder, finds the inputs, refuses clashing names (and, given `suffixes`, outputs
      that would collide or replace inputs), shards them for `dist` (runtime.Dist; a world of one by
      default), locks an existing `out`. Raises RunError subclasses (nothing created) or OutputLocked.
  run.items / run.all_items / run.missing   this process's share, every item, (input, reason) not found
  run.start(settings, checkpoint_id=None) -> finished(item, outputs) -> bool
      the settings fingerprinted into each manifest line; pass the predicate to a pipeline as finished=.
  run.execute(results) -> Iterator[event]   (results: the pipeline's lazy iterable of Result)
      makes and locks `out`, then yields
        Started(label, out, total, rank, world, missing)
        Note(message, level)                 e.g. which changed settings make finished outputs be redone
        ItemDone(result) | ItemSkipped(result) | ItemFailed(result)   one per item (.source, .error)
        Finished(label, out, counts, failures, seconds, stopped)    counts of every rank; .ok, .done,
                                             .skipped, .failed; stopped: the manifest could not be written
      releases the folder at the end (also on Ctrl-C / an exception).
  run.run(results, on_event=None) -> Finished     execute() to its end.
  run.close() / `with BatchRun.prepare(...) as run:`   release the folder.
  find_inputs(inputs, extensions, out, exclude_out=True) -> Inputs(items, missing, clashes)
  planned_outputs(items, out, suffixes) -> {item: [paths]};  check_outputs(items, planned)
One output file from some inputs (e4ecli.runs.output, e4ecli.runs.video_edit):
  OutputRun.prepare(label, target, sources=(), *, overwrite=False, records=None, require_record=True,
                    stamp_input=False, stamp_output=False, record=True, lock=True) -> OutputRun
      checks the file (OutputUnusable, OverwritesInput, UnrecordedOutput: it exists and no manifest line
      says how it was made), locks its records folder (RECORDS/manifest.jsonl; default: target's folder).
  job.start(settings, checkpoint_id=None) -> bool   up to date? (job.changed: why not, job.record: the line)
  job.execute(make, atomic=True, errors=(OSError, ValueError)) -> Started, [Note], ItemDone | ItemSkipped |
      ItemFailed, Finished; make(path) writes the output (a temp name renamed onto the target) and returns
      extra manifest fields. job.run(make) -> Finished.
  video_edit.prepare(clip, out, work) / request_settings(...): `e4e edit-video`'s job, judged before any
      model or detector loads.
Problems (all RunError, raised before anything is created): OutputUnusable(out, reason), NameClash(out,
clashes), NoInputs(missing), OutputsClash(clashes), OverwritesInput(hits), UnrecordedOutput(target, manifest); and files.guard.OutputLocked
(another process writes into the folder).
"""
from e4ecli.runs.batch import (BatchRun, Inputs, NameClash, NoInputs, OutputLocked, OutputsClash, OutputUnusable, OverwritesInput,
                               RunError, check_outputs, find_inputs, planned_outputs)
from e4ecli.runs.events import Finished, ItemDone, ItemFailed, ItemSkipped, Note, Started
from e4ecli.runs.output import OutputRun, UnrecordedOutput

__all__ = ["BatchRun", "Finished", "Inputs", "ItemDone", "ItemFailed", "ItemSkipped", "NameClash", "NoInputs", "Note", "OutputLocked",
           "OutputRun", "OutputUnusable", "OutputsClash", "OverwritesInput", "RunError", "Started", "UnrecordedOutput", "check_outputs", "find_inputs",
           "planned_outputs"]
