"""`e4e eval`: distortion, perceptual quality and editability numbers of an encoder (the e4e paper's protocol)."""
from __future__ import annotations

import json
import math
from enum import Enum
from pathlib import Path
from typing import Any, List, Optional

import typer

from e4ecli.cli.align import DETECTOR_HELP, Detector
from e4ecli.cli.app import app
from e4ecli.cli.common import DEFAULT_CHECKPOINT, DEVICE_HELP, console, die
from e4ecli.cli.sweep import SWEEP_HELP
from e4ecli.cli.edit import beta_option, clip_weights_option, neutral_option, relevance_option


class SweepDial(str, Enum):
    stage = "stage"
    refine = "refine"

METRICS_HELP = (
    "Comma-separated: l2, lpips, id (ArcFace), id_dlib (dlib's face descriptor, another scale) (distortion); fid, swd "
    "(inputs vs reconstructions); fid_edit, swd_edit, lec (editability, need --direction). 'default': l2,lpips,id,fid,swd plus "
    "the editability ones when --direction is given (id_dlib stands in, under its own name, when ArcFace is missing); 'all'."
)
HINTS = {  # the way out, in this command's words, when a metric is unavailable
    "id": "--arcface FILE names the ArcFace weights, or drop id from --metrics",
    "lpips": "or drop lpips from --metrics", "fid": "or drop fid from --metrics", "fid_edit": "or drop fid_edit from --metrics",
}
LABELS = {
    "l2": ("l2", "↓", "distortion"), "lpips": ("LPIPS", "↓", "distortion"), "id": ("ID similarity (ArcFace)", "↑", "distortion"),
    "id_dlib": ("ID similarity (dlib, not ArcFace)", "↑", "distortion"),
    "fid": ("FID", "↓", "perceptual quality"), "swd": ("SWD ×10³", "↓", "perceptual quality"),
    "fid_edit": ("FID (edited)", "↓", "editability"), "swd_edit": ("SWD ×10³ (edited)", "↓", "editability"),
    "lec": ("LEC", "↓", "editability"),
    "tl_id": ("TL-ID (consecutive frames)", "→1", "temporal"), "tg_id": ("TG-ID (all frame pairs)", "→1", "temporal"),
    "flicker": ("flicker (output / source)", "↓", "temporal"),
    "flicker_output": ("flicker of the output, grey levels", "↓", "temporal"),
    "flicker_source": ("flicker of the source, grey levels", "", "temporal"),
}

ARCFACE_DEFAULT = "ir_se50"


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.4f}" if abs(v) < 100 else f"{v:.2f}"


def print_table(report: dict, title: str) -> None:
    from e4ecli.cli.common import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("metric", no_wrap=True)  # a long backend note folds; the metric's name never splits
    table.add_column("value", justify="right", style="bold")
    table.add_column("group")
    table.add_column("backend / note", overflow="fold")
    for name in LABELS:
        if name not in report:
            continue
        label, better, group = LABELS[name]
        if name in report["unavailable"]:
            note = "[yellow]unavailable (reason below)[/]"
        else:
            note = escape(report["metric_backends"].get(name, ""))
        table.add_row(f"{label} {better}", _fmt(report[name]), group, note)
    console.print(table)
    reasons: dict[str, list[str]] = {}
    for name, why in report["unavailable"].items():
        reasons.setdefault(why, []).append(name)
    for why, names in reasons.items():
        hint = "; ".join(HINTS[n] for n in names if n in HINTS)
        console.print(f"[yellow]{', '.join(names)} unavailable:[/] {escape(why)}" + (f" ({escape(hint)})" if hint else ""))
    if "id_dlib" in report and "id" in report.get("unavailable", {}):
        console.print("[yellow]note:[/] id_dlib is dlib's face descriptor, not ArcFace: its values are not comparable with id")


@app.command(
    "eval",
    epilog=(
        "Examples:\n\n"
        "  e4e eval ./ffhq_test --checkpoint e4e_ffhq_encode --json eval.json\n\n"
        "  e4e eval ./faces --metrics l2,lpips,id --json distortion.json\n\n"
        "  e4e eval ./faces --metrics all --direction age --strength 3 --json edit.json\n\n"
        "  e4e eval ./faces --sweep stage -d age -s 3 --json sweep.json   # + sweep.png: distortion vs editability per stage\n\n"
        "  e4e eval ./faces -m lec --direction age --strength 3 --lec-filter --json lec.json\n\n"
        "  e4e eval edited.mp4 --source clip.mp4 --json temporal.json   # a clip: TL-ID, TG-ID, flicker\n\n"
        "Inputs are used as they are: align photos first (`e4e align`) for face models. A video (with --source, the clip it "
        "was made from) is judged for temporal coherence instead: no checkpoint is needed."
    ),
)
def eval_cmd(
    inputs: List[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively).", show_default=False),
    json_out: Path = typer.Option(..., "--json", "-o", help="Write the numbers here (metric: value, n_images, checkpoint, metric_backends, per_image)."),
    checkpoint: str = typer.Option(DEFAULT_CHECKPOINT, "--checkpoint", "-c", help="e4e/pSp checkpoint: a zoo name (see `e4e weights list`) or a file path."),
    metrics: str = typer.Option("default", "--metrics", "-m", help=METRICS_HELP),
    direction: Optional[str] = typer.Option(None, "--direction", "-d", help="The edit of fid_edit / swd_edit / lec: a registered name "
                                              "(age, smile, ...), a direction file, FILE.npz:K (row K), ganspace:COMP:START:END or sefa:K[:LAYERS]."),
    strength: Optional[float] = typer.Option(None, "--strength", "-s", help="Edit strength (default: the registry's; the paper's LEC uses 3 for age)."),
    pca: Optional[str] = typer.Option(None, "--pca", help="GANSpace PCA for ganspace:... directions (default: the model domain's)."),
    force: bool = typer.Option(False, "--force", help="Apply a registered direction even if it was found for another domain than the model's."),
    lec_filter: bool = typer.Option(False, "--lec-filter", help="Report LEC as the mean within the 1st-99th percentile, as the original script."),
    arcface: str = typer.Option(ARCFACE_DEFAULT, "--arcface", help="ArcFace IR-SE50 weights for `id`: a file or the zoo name (when the "
                                "default is unavailable, dlib's descriptor is reported as id_dlib; a file you name must work)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    batch_size: int = typer.Option(4, "--batch-size", "-b", min=1, help="Images per forward pass."),
    workers: int = typer.Option(0, min=0, help="Processes decoding images in the background (0: decode inline; at most one per CPU)."),
    seed: int = typer.Option(0, help="Seed of SWD's patch positions and projections."),
    sweep: Optional[SweepDial] = typer.Option(None, "--sweep", help=SWEEP_HELP, show_default=False),
    sweep_values: Optional[str] = typer.Option(None, "--sweep-values", help="The settings, e.g. 0,3,8,13 (default: stages 0, 1, 3, middle, last; "
                                               "refine steps 0,10,30)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="With --sweep: the PNG plot (default: the --json path with .png)."),
    source: Optional[Path] = typer.Option(None, "--source", help="For an edited video: the clip it was made from. Reports STIT's TL-ID "
                                          "and TG-ID (ArcFace identity of frame pairs relative to the source) and flicker.", show_default=False),
    detector: Detector = typer.Option(Detector.face_alignment, "--detector", "-L", help="With --source: " + DETECTOR_HELP),
    neutral: Optional[str] = neutral_option(),
    beta: float = beta_option(),
    clip_weights: Optional[Path] = clip_weights_option(),
    relevance: Optional[Path] = relevance_option(),
) -> None:
    """Evaluate an encoder: l2 / LPIPS / identity, FID / SWD, and editability (FID / SWD of edits, LEC); or an edited clip
    against its source: TL-ID, TG-ID and flicker."""
    from e4ecli.files.kinds import VIDEO_SUFFIXES

    if source is not None or (len(inputs) == 1 and inputs[0].suffix.lower() in VIDEO_SUFFIXES):
        if direction is not None or sweep is not None or metrics != "default":
            die("a clip is judged on TL-ID, TG-ID and flicker only: drop --direction, --sweep and --metrics")
        raise typer.Exit(eval_clip(inputs, source, json_out, arcface, detector.value, device))
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from e4ecli.cli.common import (EXIT_FAILED, EXIT_OK, capped_workers, device_or_die, discover_or_die, escape, load_model, out_file_or_die,
                                   output_run_or_die, write_output_or_die)
    from e4ecli.files.images import IMAGE_EXTENSIONS
    from e4ecli.pipelines.eval import Evaluator, NeedsEdit, build_metrics, parse_metrics

    from e4ecli.cli.sweep import SWEEP_METRICS, parse_values_or_die

    if sweep is not None:
        if direction is None:
            die("--sweep plots distortion against editability: give --direction (e.g. --direction age --strength 3)")
        metrics = SWEEP_METRICS if metrics == "default" else metrics
    values = parse_values_or_die(sweep_values) if sweep is not None else None
    if sweep_values is not None and sweep is None:
        die("--sweep-values applies with --sweep")
    try:
        names = parse_metrics(metrics, direction is not None)
    except NeedsEdit as e:
        die(f"{e}: give --direction (e.g. --direction age --strength 3)")
    except ValueError as e:
        die(e)
    if direction is not None:
        from e4ecli.cli.edit import text_options
        from e4ecli.edits.syntax import direction_kind
        from e4ecli.hub.directions import DirectionError
        from e4ecli.pipelines.directions import check

        try:
            check(direction, pca, text_options(neutral, beta, clip_weights, relevance))
        except DirectionError as e:
            die(e)
        if direction_kind(direction) in ("text", "stylespace") and "lec" in names:
            if metrics.strip() == "default":
                names = [n for n in names if n != "lec"]
                console.print("[yellow]note:[/] lec left out: it is defined for W+ edits, and this direction edits StyleSpace")
            else:
                die(f"lec: Latent Editing Consistency is defined for W+ edits (it re-encodes the edited image into W+ and subtracts "
                    f"the edit's W+ shift); {direction} moves StyleSpace and has no W+ shift: drop lec (e.g. -m fid_edit,swd_edit) "
                    "or use a W+ direction")
    if json_out.is_dir():
        die(f"--json {json_out} is a folder; give a file name, e.g. {json_out / 'eval.json'}")
    out_file_or_die(json_out, option="--json")
    workers = capped_workers(workers)
    dev = device_or_die(device)
    items, problems = discover_or_die(inputs, IMAGE_EXTENSIONS, json_out.parent, skip_out=False)
    job = output_run_or_die("eval", json_out, [it.source for it in items], option="--json", record=False, lock=False)
    if not items:
        die("no images found in the given inputs (looked for " + ", ".join(sorted(IMAGE_EXTENSIONS)) + ")")
    ckpt, ident = load_model(checkpoint)
    if not ckpt.has_encoder:
        die(f"{checkpoint} holds only a generator; `e4e eval` needs an e4e/pSp checkpoint (e.g. {DEFAULT_CHECKPOINT})")
    edit, s = None, 0.0
    if direction is not None:
        from e4ecli.cli.edit import resolve_edits, text_options
        from e4ecli.hub.directions import DirectionError

        (edit,) = resolve_edits([direction], ckpt, ident, pca, force=force,
                                text=text_options(neutral, beta, clip_weights, relevance, str(dev)))
        try:
            edit.check(ckpt.generator.n_latent, ckpt.generator.style_dim)
        except DirectionError as e:
            die(e)
        if strength is None and edit.default_strength is None:
            die(f"--direction {edit.label} has no default strength; give --strength (e.g. --strength 3)")
        s = float(strength if strength is not None else edit.default_strength)
    from e4ecli.metrics import MetricUnavailable

    try:
        with console.status("loading metric networks"):
            built = build_metrics(names, dev, arcface=arcface, domain_name=ckpt.domain.name,
                                  arcface_required=arcface != ARCFACE_DEFAULT)
    except MetricUnavailable as e:
        die(f"--arcface {arcface}: {e}")
    if sweep is not None:
        from e4ecli.cli.sweep import run_sweep_cli

        def make(refine):
            return Evaluator(ckpt, built, dev, edit=edit, strength=s, batch_size=batch_size, workers=workers, lec_filter=lec_filter, seed=seed, refine=refine)

        raise typer.Exit(run_sweep_cli(sweep.value, values, items, problems, ckpt, ident, make, json_out, plot, edit.label, s, dev))
    ev = Evaluator(ckpt, built, dev, edit=edit, strength=s, batch_size=batch_size, workers=workers, lec_filter=lec_filter, seed=seed)
    for src, why in problems:
        ev.failed[src] = why
    with Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(), TextColumn("•"),
                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task("eval", total=len(items))
        for r in ev.run(items):
            if r.status == "failed":
                progress.console.print(f"[red]✗[/] {escape(str(r.item.source))}: {escape(r.error or 'failed')}")
            progress.advance(task)
    with console.status("computing set metrics (FID, SWD)"):
        report = ev.report()
    names = built.requested  # id_dlib joins when it stands in for a missing ArcFace
    report = {**{k: report[k] for k in names}, "n_images": report["n_images"], "checkpoint": ident,
              "edit": {"direction": edit.label, "strength": s} if edit is not None else None,
              **{k: v for k, v in report.items() if k not in names and k != "n_images"}}
    write_output_or_die(job, json.dumps(report, indent=1) + "\n")  # e4ecli.runs.OutputRun: checked, atomic
    title = f"e4e eval: {report['n_images']} image(s), {ident}" + (f", edit {edit.label} × {s:g}" if edit is not None else "")
    print_table(report, title)
    if report["failed"]:
        console.print(f"[red]{len(report['failed'])} input(s) failed[/] (listed under 'failed' in {escape(str(json_out))})")
    console.print(f"numbers in {escape(str(json_out))}")
    raise typer.Exit(EXIT_FAILED if report["failed"] else EXIT_OK)


def eval_clip(inputs: List[Path], source: Optional[Path], json_out: Path, arcface: str, detector: str, device: str) -> int:
    """`e4e eval OUT.mp4 --source CLIP.mp4`: the temporal metrics of pipelines.temporal, as a table and JSON."""
    from e4ecli.cli.common import EXIT_FAILED, EXIT_OK, escape, output_run_or_die, write_output_or_die
    from e4ecli.files.video import VIDEO_SUFFIXES, VideoError, probe

    if len(inputs) != 1:
        die(f"a clip is compared with its source one at a time: give one edited video, not {len(inputs)} inputs")
    output = inputs[0]
    if source is None:
        die(f"{output} is a video: give --source CLIP, the clip it was made from (e.g. e4e eval {output} --source clip.mp4 --json m.json)")
    for what, path in (("the edited clip", output), ("--source", source)):
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            die(f"{what} {path}: not a video file name (expected {', '.join(VIDEO_SUFFIXES)})")
        if not path.is_file():
            die(f"{what} {path}: no such file")
    if output.resolve() == source.resolve():
        die(f"{output} is its own --source: compare the edit with the clip it was made from")
    if json_out.is_dir():
        die(f"--json {json_out} is a folder; give a file name, e.g. {json_out / 'temporal.json'}")
    job = output_run_or_die("eval", json_out, [output, source], option="--json", record=False, lock=False)
    try:
        info = probe(source)
        probe(output)
    except VideoError as e:
        die(str(e))

    from rich.progress import Progress

    from e4ecli.cli.align import open_detector_or_die
    from e4ecli.cli.common import device_or_die, progress_columns
    from e4ecli.metrics import MetricUnavailable, pairwise
    from e4ecli.pipelines.temporal import ClipMismatch, clip_metrics

    dev = device_or_die(device)
    with console.status("loading the identity network"):
        try:
            features, backend = pairwise.arcface_features(arcface, dev), "arcface_ir_se50"
        except MetricUnavailable as e:
            if arcface != ARCFACE_DEFAULT:
                die(f"--arcface {arcface}: {e}")
            try:
                features, backend = pairwise.dlib_features(), "dlib_resnet_v1 (dlib's face descriptor: ArcFace is unavailable)"
            except MetricUnavailable as e2:
                die(f"no identity network can run: ArcFace: {e}; dlib: {e2} (--arcface FILE names the ArcFace weights)")
            console.print(f"[yellow]note:[/] ArcFace unavailable ({escape(str(e))}); TL-ID and TG-ID use dlib's face descriptor")
    backend_lm = open_detector_or_die(detector, device)
    try:
        with Progress(*progress_columns(), console=console) as progress:
            task = progress.add_task("eval clip", total=info.frame_count)
            result = clip_metrics(output, source, backend_lm.detect, features, on_frame=lambda t: progress.advance(task))
    except (ClipMismatch, VideoError) as e:
        die(str(e), EXIT_FAILED)
    names = ("tl_id", "tg_id", "flicker", "flicker_output", "flicker_source")
    report = {**{k: result.values[k] for k in names}, "n_frames": result.frames, "output": str(output), "source": str(source),
              "frames_without_face": result.frames_without_face, "flicker_pairs": result.values["flicker_pairs"],
              "metric_backends": {"tl_id": backend, "tg_id": backend, "flicker": f"face region: landmark hull ({backend_lm.name})"},
              "unavailable": {}, "failed": {}}
    if result.values["flicker_output"] is not None and result.values["flicker"] is None:
        report["unavailable"]["flicker"] = "the source does not change at all inside the face while the output does"
    write_output_or_die(job, json.dumps(report, indent=1) + "\n")
    print_table(report, f"e4e eval: {output} against {source}, {result.frames} frame(s)")
    if result.frames_without_face:
        console.print(f"[yellow]{len(result.frames_without_face)} frame(s) without a face[/] (left out of the pairs they are in; "
                      f"listed under 'frames_without_face')")
    console.print(f"numbers in {escape(str(json_out))}")
    if report["tl_id"] is None:
        console.print("[red]no face found in two consecutive frames:[/] nothing to measure")
        return EXIT_FAILED
    return EXIT_OK
