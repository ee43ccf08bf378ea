"""StyleFlow options shared by `e4e edit` and `e4e video`: validation, the flow, presets and the estimator."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence

import typer

from e4ecli.cli.common import console, die

if TYPE_CHECKING:
    from e4ecli.edits.specs import Edit
    from e4ecli.files.batch import Item
    from e4ecli.pipelines.styleflow import StyleflowSetup

WEIGHTS_HELP = "StyleFlow flow weights for styleflow:... directions (default: the zoo's styleflow_flow, StyleFlow's modellarge10k.pt)."
ATTRIBUTE_HELP = ("StyleFlow: a latent's current attribute, NAME=VALUE (e.g. age=35); repeat for several. Wins over "
                  "<name>.attributes.json and the estimate.")

StyleflowWeights = typer.Option(None, "--styleflow-weights", help=WEIGHTS_HELP)
Attribute = typer.Option([], "--attribute", help=ATTRIBUTE_HELP, show_default=False)


def overrides_or_die(texts: List[str], weights: Optional[Path], directions: Sequence[str]) -> dict[str, float]:
    """Validate --attribute and --styleflow-weights before any model is loaded."""
    from e4ecli.edits.syntax import StyleflowSpecError, direction_kind, parse_overrides

    uses = any(direction_kind(d) == "styleflow" for d in directions)
    if (texts or weights is not None) and not uses:
        die("--attribute and --styleflow-weights apply to styleflow:NAME directions; give -d styleflow:NAME too")
    if weights is not None and not weights.is_file():
        die(f"--styleflow-weights {weights}: no such file")
    try:
        return parse_overrides(texts)
    except StyleflowSpecError as e:
        die(e)


def setup_or_die(edits: Sequence["Edit"], items: Sequence["Item"], weights: Optional[Path], overrides: dict[str, float],
                 quiet: bool = False) -> Optional["StyleflowSetup"]:
    """The StyleflowSetup for these edits (None without styleflow edits); exits 2 naming what is missing."""
    from e4ecli.edits.styleflow import StyleflowSpecError
    from e4ecli.hub import styleflow as hub
    from e4ecli.hub.zoo import ZooError
    from e4ecli.pipelines import styleflow as pipe

    names = [e.styleflow_target.name for e in edits if e.kind == "styleflow"]
    if not names:
        return None
    if len(set(names)) != len(names):
        die("each styleflow:NAME may be given once (they compose into one round trip)")
    try:
        from e4ecli.hub.checkpoints import file_id

        with console.status("loading the StyleFlow flow"):
            flow_path = weights if weights is not None else hub.fetch(hub.FLOW)
            flow = hub.load_flow(flow_path)
        presets = pipe.load_presets(names)
        estimator = estimator_id = None
        if pipe.needs_estimate(items, overrides):
            with console.status("fitting the StyleFlow attribute estimator (once; cached)"):
                fitted, estimator_id = pipe.default_estimator()
            estimator = lambda: fitted  # noqa: E731
            if not quiet:
                console.print("[yellow]note:[/] latents without a complete <name>.attributes.json get estimated attributes "
                              "(recorded in manifest.jsonl under 'styleflow')")
    except (ZooError, hub.StyleflowFileError, StyleflowSpecError) as e:
        die(e)
    return pipe.StyleflowSetup(flow, presets, overrides, estimator, flow_id=file_id(flow_path), estimator_id=estimator_id)


def bind_or_die(edit: "Edit", path: Path, latent, weights: Optional[Path], overrides: dict[str, float]) -> tuple["Edit", str]:
    """`e4e video`: (the styleflow edit bound to the one latent's attributes (file, overrides or estimate), the
    source id of that condition: what a rerun compares, so that a changed attributes file redoes the video)."""
    from rich.markup import escape

    from e4ecli.edits.styleflow import StyleflowSpecError
    from e4ecli.files.batch import Item
    from e4ecli.pipelines.styleflow import bind

    item = Item(Path(path), Path(path).stem)
    setup = setup_or_die([edit], [item], weights, overrides, quiet=True)
    assert setup is not None
    try:
        cond, info = setup.source_for(item, latent)
    except StyleflowSpecError as e:
        die(e)
    if info["estimated"]:
        console.print(f"[yellow]note:[/] estimated {', '.join(info['estimated'])} of {escape(str(path))}: "
                      + ", ".join(f"{k} {v:.3g}" for k, v in info["attributes"].items() if k in info["estimated"]))
    return bind(edit, cond, setup), info["source_id"]
