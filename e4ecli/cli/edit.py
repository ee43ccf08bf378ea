"""`e4e edit`: apply InterFaceGAN / GANSpace / SeFa edits to W+ latents and render them."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from e4ecli.cli.app import app
from e4ecli.cli.common import DEFAULT_CHECKPOINT, DEVICE_HELP, MAX_SIZE, console, die, escape
from e4ecli.cli.styleflow import Attribute, StyleflowWeights

if TYPE_CHECKING:
    from e4ecli.edits.specs import Edit
    from e4ecli.hub.checkpoints import LoadedCheckpoint

DIRECTION_HELP = (
    "What to change; repeat to compose edits in order. A registered name (age, smile, pose, eye_openness, ...: "
    "`e4e directions list`; one found for another domain than the model's is refused without --force), a .pt/.npy "
    "direction file ((512,), (1, 512) or (n_styles, 512)), FILE.npz:K (row K of an .npz from `e4e directions sefa`), "
    "ganspace:COMP:START:END, sefa:K[:LAYERS] (e.g. sefa:0:2,3,4,5), or styleflow:NAME (gender, glasses, yaw, pitch, "
    "baldness, beard, age, expression; lighting presets light_left_right, light_right_left, light_down_up, light_up_down, "
    "light_none, light_front)."
)
STRENGTH_HELP = (
    "How much, one per --direction in the same order (default: the registry's strength). A number, or a sweep "
    "A:B:N (N values from A to B; at most one sweep). GANSpace strengths are the target coordinate in std units; "
    "StyleFlow strengths are the attribute's new value in its units (age in years, yaw/pitch in degrees, others 0-1) or, "
    "for a lighting preset, how far to move towards it (0-1)."
)


def resolve_edits(specs: List[str], ckpt: "LoadedCheckpoint", ident: str, pca: Optional[str], force: bool = False) -> List["Edit"]:
    """--direction specs -> Edits for this checkpoint; exits 2 with the reason on a bad spec (a registered
    direction of another domain too, unless `force`)."""
    from e4ecli.edits.specs import OtherDomain, resolve
    from e4ecli.hub.directions import DirectionError

    edits = []
    for spec in specs:
        try:
            with console.status(f"loading direction {spec}"):
                edit = resolve(spec, ckpt.generator, pca=pca, domain_name=ckpt.domain.name, sefa_cache_key=ident.split(":")[-1],
                               force=force)
        except OtherDomain as e:
            die(f"{e}; --force applies it anyway")
        except DirectionError as e:
            die(str(e))
        if force and edit.domain and edit.domain not in ("any", ckpt.domain.short):
            console.print(f"[yellow]note:[/] '{spec}' was found for {edit.domain} images; this model's domain is {ckpt.domain.short}")
        edits.append(edit)
    return edits


def pair_strengths(edits: List["Edit"], strengths: List[str]):
    """Pair each edit with its --strength (or its default); exits 2 with the reason when impossible."""
    from e4ecli.edits.specs import Strength, parse_strength
    from e4ecli.hub.directions import DirectionError
    from e4ecli.pipelines.edit import Step, format_strength

    if strengths and len(strengths) != len(edits):
        die(f"got {len(edits)} --direction but {len(strengths)} --strength; give one strength per direction "
            "(in the same order), or none to use the registry's defaults")
    steps = []
    for i, edit in enumerate(edits):
        if strengths:
            try:
                strength = parse_strength(strengths[i])
            except DirectionError as e:
                die(str(e))
        elif edit.default_strength is not None:
            strength = Strength((edit.default_strength,), format_strength(edit.default_strength), False)
        else:
            die(f"--direction {edit.label} has no default strength; give --strength (e.g. --strength 3 or --strength -3:3:7)")
        steps.append(Step(edit, strength))
    if sum(s.strength.is_sweep for s in steps) > 1:
        die("only one --strength may be a sweep A:B:N; the others must be single numbers")
    return steps


@app.command(
    "edit",
    epilog=(
        "Examples:\n\n"
        "  e4e edit latents/ -o older/ --direction age --strength 3\n\n"
        "  e4e edit face.npy -o sweep/ --direction smile --strength -3:3:7      # frames + labelled strip\n\n"
        "  e4e edit latents/ -o out/ -d age -s 2 -d eye_openness -s 20          # composed in order\n\n"
        "  e4e edit latents/ -o out/ -d ganspace:54:7:8 -s 20 --pca ffhq_pca.pt --save-latents\n\n"
        "  e4e edit latents/ -o out/ -d sefa:0:2,3,4,5 -s 10\n\n"
        "  e4e edit latents/ -o out/ -d styleflow:age -s 60 -d styleflow:glasses -s 1   # one StyleFlow round trip\n\n"
        "  e4e edit latents/ -o out/ -d age -s 3 --paste-back --aligned aligned/  # edited face in the original photo"
    ),
)
def edit_cmd(
    inputs: List[Path] = typer.Argument(..., help=".npy latent files and/or folders (searched recursively).", show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder: <name>.png per latent (mirroring the input tree), plus manifest.jsonl."),
    direction: List[str] = typer.Option(..., "--direction", "-d", help=DIRECTION_HELP, show_default=False),
    strength: List[str] = typer.Option([], "--strength", "-s", help=STRENGTH_HELP, show_default=False),
    pca: Optional[str] = typer.Option(None, "--pca", help="GANSpace PCA for ganspace:... directions: a file or a registered name (default: the model domain's, e.g. ffhq_pca)."),
    force: bool = typer.Option(False, "--force", help="Apply a registered direction even if it was found for another domain than the model's."),
    checkpoint: str = typer.Option(DEFAULT_CHECKPOINT, "--checkpoint", "-c", help="e4e/pSp checkpoint or bare StyleGAN2 generator: zoo name or file path."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    precision: str = typer.Option("fp32", help="fp32 (exact, the default), or for speed fp16 (GPUs) / bf16 (GPUs, and CPUs with native bf16) for the renders; edits stay fp32."),
    batch_size: int = typer.Option(4, "--batch-size", "-b", min=1, help="Latents per forward pass."),
    size: Optional[int] = typer.Option(None, min=1, max=MAX_SIZE, help=f"Output width, by area averaging "
                                      f"(default: the generator's native size; at most {MAX_SIZE})."),
    save_latents: bool = typer.Option(False, "--save-latents", help="Also write the edited latents as <name>.npy."),
    latents_only: bool = typer.Option(False, "--latents-only", help="Write only the edited latents (.npy), render nothing."),
    paste_back: bool = typer.Option(False, "--paste-back", help="Also write <name>.pasted.png: the edited face blended into the original photo (needs the alignment sidecar <name>.json)."),
    aligned: List[Path] = typer.Option([], "--aligned", help="Folder(s) of `e4e align` outputs holding the <name>.json sidecars (default: beside each latent)."),
    feather: float = typer.Option(0.1, min=0.0, max=0.5, help="Paste-back: width of the soft edge, as a fraction of the aligned square's side."),
    overwrite: bool = typer.Option(False, help="Redo latents whose outputs already exist (default: skip them)."),
    styleflow_weights: Optional[Path] = StyleflowWeights,
    attribute: List[str] = Attribute,
) -> None:
    """Edit W+ latents (InterFaceGAN, GANSpace, SeFa, StyleFlow) and render the results."""
    from e4ecli.cli.common import discover_or_die, distributed_or_die, load_model, out_dir_or_die, outputs_or_die, run_with_progress
    from e4ecli.cli.styleflow import overrides_or_die, setup_or_die
    from e4ecli.files.batch import shard
    from e4ecli.files.latents import LATENT_EXTENSIONS

    if latents_only and paste_back:
        die("--paste-back needs renders; drop --latents-only")
    overrides = overrides_or_die(attribute, styleflow_weights, direction)
    dist, dev = distributed_or_die(device, precision)
    out_dir_or_die(out, lock=dist.is_main)
    items, problems = discover_or_die(inputs, LATENT_EXTENSIONS, out)
    if not items and not problems:
        die("no .npy latents found in the given inputs")
    ckpt, ident = load_model(checkpoint)
    edits = resolve_edits(direction, ckpt, ident, pca, force=force)
    steps = pair_strengths(edits, strength)

    sidecars = {}
    if paste_back:
        from e4ecli.pasteback import find_sidecar

        for it in items:
            found = find_sidecar(it.source, it.key, aligned)
            if found is not None:
                sidecars[it] = found
        missing = len(items) - len(sidecars)
        if missing and dist.is_main:
            where = ", ".join(escape(a) for a in aligned) or "beside the latents"
            console.print(f"[yellow]note:[/] {missing} of {len(items)} latents have no alignment sidecar (<name>.json) {where}; "
                          "they get no paste-back (use --aligned with the `e4e align` output folder)")

    from e4ecli.files.guard import overwritten_inputs
    from e4ecli.pipelines.edit import edit, plan_outputs, sweep_values

    sweep_at, values = sweep_values(steps)
    plans = {it: plan_outputs(it, out, values, sweep_at is not None, save_latents=save_latents, latents_only=latents_only,
                              sidecar=sidecars.get(it)).all_outputs() for it in items}
    outputs_or_die(items, plans)  # frames, strips, latents and pasted images of every input, before any work
    for side, _ in overwritten_inputs(sidecars.values(), [p for paths in plans.values() for p in paths])[:1]:
        die(f"the output would overwrite the alignment sidecar {side}; choose another -o folder")

    items = shard(items, dist.rank, dist.world)  # under torchrun each process takes its share
    styleflow = setup_or_die(edits, items, styleflow_weights, overrides, quiet=not dist.is_main)
    results = edit(items, ckpt, out, steps, device=dev, precision=precision, batch_size=batch_size, size=size,
                   save_latents=save_latents, latents_only=latents_only, sidecars=sidecars, feather=feather, overwrite=overwrite,
                   styleflow=styleflow)
    code = run_with_progress(results, len(items), "edit", out, ident, problems, suffix=".png", dist=dist)
    dist.close()
    raise typer.Exit(code)
