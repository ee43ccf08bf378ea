"""`e4e eval --sweep stage|refine`: the eval protocol at several dial settings, a table, JSON and a PNG plot."""
from __future__ import annotations

import json
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from e4ecli.cli.common import console, die

SWEEP_HELP = ("Evaluate at several settings of a dial and plot distortion against editability (needs --direction): "
              "stage (e4e's progressive stage, 0 = pure W ... the full code) or refine (W+ refinement steps after the encoder).")
SWEEP_METRICS = "l2,lpips,id,lec"


def parse_values_or_die(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        die(f"--sweep-values {text!r}: give whole numbers separated by commas, e.g. 0,3,8,13")
    if not values:
        die("--sweep-values is empty")
    return values


def run_sweep_cli(dial: str, values: list[int] | None, items, problems, ckpt, ident: str, make_evaluator, json_out: Path, plot: Path | None,
                  edit_label: str, strength: float, dev) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from e4ecli.cli.common import EXIT_FAILED, EXIT_OK
    from e4ecli.files.batch import write_text
    from e4ecli.files.plot import save_curve
    from e4ecli.pipelines.sweep import check_settings, curve_axes, default_settings, run_sweep

    if dial == "stage" and not hasattr(ckpt.encoder, "set_progressive_stage"):
        die(f"--sweep stage: {ckpt.path} is a {ckpt.kind}, which has no progressive stages (e4e checkpoints only)")
    settings = values if values is not None else default_settings(dial, ckpt.n_styles)
    try:
        check_settings(dial, settings, ckpt.n_styles)
    except ValueError as e:
        die(f"--sweep-values: {e}")
    nets = None
    if dial == "refine":
        from e4ecli.cli.refining import loss_nets_with_notes
        from e4ecli.pipelines.refine import RefineOptions

        nets = loss_nets_with_notes(RefineOptions("w+"), dev, ckpt, "ir_se50")
    points, failed = [], {src: why for src, why in problems}
    with Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(), MofNCompleteColumn(), TextColumn("•"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(f"sweep {dial}", total=len(settings) * len(items))
        for k, ev, results in run_sweep(dial, settings, items, lambda refine: make_evaluator(refine), ckpt, nets):
            report = ev.report()
            failed.update(report["failed"])
            points.append({"setting": k, **{m: report[m] for m in ev.metrics.requested}, "n_images": report["n_images"],
                           "unavailable": report["unavailable"]})
            progress.advance(task, len(results))
    x_name, y_name = curve_axes(points)
    result = {"sweep": dial, "checkpoint": ident, "edit": {"direction": edit_label, "strength": strength}, "points": points,
              "plot": {"x": x_name, "y": y_name}, "failed": failed}
    try:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        write_text(json_out, json.dumps(result, indent=1) + "\n")
        plot = plot or json_out.with_suffix(".png")
        if x_name and y_name:
            label = "stage" if dial == "stage" else "steps"
            save_curve(plot, [p[x_name] for p in points], [p[y_name] for p in points], [f"{label} {p['setting']}" for p in points],
                       x_name, y_name, f"e4e eval --sweep {dial}: {points[0]['n_images']} image(s), edit {edit_label} x {strength:g}")
    except OSError as e:
        die(f"cannot write the sweep results: {e}", EXIT_FAILED)
    table = Table(title=f"e4e eval --sweep {dial}", title_justify="left")
    metric_names = [m for m in points[0] if m not in ("setting", "n_images", "unavailable")]
    table.add_column(dial)
    for m in metric_names:
        table.add_column(m, justify="right")
    for p in points:
        table.add_row(str(p["setting"]), *[("-" if p[m] is None else f"{p[m]:.4f}") for m in metric_names])
    console.print(table)
    if x_name and y_name:
        console.print(f"plot ({x_name} vs {y_name}) in {escape(str(plot))}")
    else:
        console.print("[yellow]note:[/] no plot: a distortion metric (l2, lpips) and an editability one (lec, swd_edit, fid_edit) are both needed")
    console.print(f"numbers in {escape(str(json_out))}")
    return EXIT_FAILED if failed else EXIT_OK
