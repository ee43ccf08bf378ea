"""`e4e edit`: apply InterFaceGAN / GANSpace / SeFa edits to W+ latents and render them."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from e4ecli.cli.app import app
from e4ecli.cli.batch import (Job, batch_size_option, checkpoint_option, device_option, ident_hash, overwrite_option,
                              precision_option, run_batch, size_option, workers_option)
from e4ecli.cli.common import console, die, worded
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
    "light_none, light_front), stylespace:LAYER:CHANNEL (one StyleSpace channel, strength in its std; e.g. stylespace:6:501) "
    "or \"text:DESCRIPTION\" (StyleCLIP global direction, e.g. \"text:a face with a smile\"; needs --relevance)."
)


def neutral_option():
    return typer.Option(None, "--neutral", help="text: directions: the description of the unedited image (default by domain: "
                                               "'a face', 'a car', 'a church', 'a horse').")


def beta_option():
    return typer.Option(0.15, "--beta", help="text: directions: StyleCLIP's disentanglement threshold; channels whose relevance "
                                             "to the text is below it are left alone (higher: fewer channels, a narrower edit).")


def clip_weights_option():
    return typer.Option(None, "--clip-weights", help="text: directions: CLIP ViT-B/32 weights file (OpenAI's ViT-B-32.pt or an "
                                                     "open_clip state dict; default: the zoo's clip_vit_b32_openai, downloaded once).")


def relevance_option():
    return typer.Option(None, "--relevance", help="text: directions: the generator's channel relevance matrix (.npz from "
                                                  "`e4e directions styleclip`, or StyleCLIP's fs3.npy for FFHQ 1024).")


def text_options(neutral, beta, clip_weights, relevance, device: str = "cpu"):
    from e4ecli.edits.prompts import TextOptions

    return TextOptions(neutral=neutral, beta=beta, clip_weights=Path(clip_weights) if clip_weights else None,
                       relevance=Path(relevance) if relevance else None, device=device)
STRENGTH_HELP = (
    "How much, one per --direction in the same order (default: the registry's strength). A number, or a sweep "
    "A:B:N (N values from A to B; at most one sweep). GANSpace strengths are the target coordinate in std units; "
    "StyleFlow strengths are the attribute's new value in its units (age in years, yaw/pitch in degrees, others 0-1) or, "
    "for a lighting preset, how far to move towards it (0-1)."
)


def resolve_edits(specs: List[str], ckpt: "LoadedCheckpoint", ident: str, pca: Optional[str], force: bool = False,
                  text=None) -> List["Edit"]:
    """--direction specs -> Edits for this checkpoint; exits 2 with the reason on a bad spec (a registered
    direction of another domain too, unless `force`)."""
    from e4ecli.edits.specs import OtherDomain
    from e4ecli.hub.directions import DirectionError
    from e4ecli.pipelines.directions import resolve

    edits = []
    for spec in specs:
        try:
            with console.status(f"loading direction {spec}"):
                edit = resolve(spec, ckpt.generator, pca=pca, domain_name=ckpt.domain.name, sefa_cache_key=ident_hash(ident),
                               force=force, text=text)
        except OtherDomain as e:
            die(f"{worded(e)}; --force applies it anyway")
        except DirectionError as e:
            die(e)
        if force and edit.domain and edit.domain not in ("any", ckpt.domain.short):
            console.print(f"[yellow]note:[/] '{spec}' was found for {edit.domain} images; this model's domain is {ckpt.domain.short}")
        edits.append(edit)
    return edits


def check_directions(direction: List[str], strength: List[str], parse, pca: Optional[str], text=None, *, count_hint: str,
                     example: str, more=None, refuse=None) -> tuple[list, list[str]]:
    """-d / -s / --pca checked without a model, for every command that takes one strength per direction:
    (parsed strengths, problems). parse: the command's strength parser (edits.specs.parse_strength, edits.ramps.
    parse_ramp); count_hint ends the count problem; example: a --strength for a direction without a default;
    more(parsed) -> the command's own problems of the parsed strengths; refuse(spec) -> why the command cannot
    use that direction (or None)."""
    from e4ecli.hub.directions import DirectionError
    from e4ecli.pipelines.directions import check

    problems: list[str] = []
    parsed = []
    for value in strength:
        try:
            parsed.append(parse(value))
        except DirectionError as e:
            problems.append(worded(e))
    if strength and len(strength) != len(direction):
        problems.append(f"got {len(direction)} --direction but {len(strength)} --strength; give one strength per direction {count_hint}")
    if more is not None:
        problems += more(parsed)
    for spec in direction:
        why = refuse(spec) if refuse is not None else None
        if why:
            problems.append(why)
            continue
        try:
            default = check(spec, pca, text)
        except DirectionError as e:
            problems.append(worded(e))
            continue
        if not strength and default is None:
            problems.append(f"--direction {spec} has no default strength; give --strength (e.g. {example})")
    return parsed, problems


def check_options(direction: List[str], strength: List[str], pca: Optional[str], aligned: List[Path], text=None) -> tuple[list, list[str]]:
    """Everything about -d/-s/--pca/--aligned that can be checked without a model: (parsed strengths, problems)."""
    from e4ecli.edits.specs import parse_strength

    def one_sweep(parsed: list) -> list[str]:
        return ["only one --strength may be a sweep A:B:N; the others must be single numbers"] if sum(s.is_sweep for s in parsed) > 1 else []

    parsed, problems = check_directions(direction, strength, parse_strength, pca, text, more=one_sweep,
                                        count_hint="(in the same order), or none to use the registry's defaults",
                                        example="--strength 3 or --strength -3:3:7")
    for folder in aligned:
        if not folder.is_dir():
            problems.append(f"--aligned {folder}: no such folder")
    return parsed, problems


def pair_strengths(edits: List["Edit"], strengths: list):
    """Pair each edit with its parsed --strength (or its default); exits 2 when one has none."""
    from e4ecli.edits.specs import Strength
    from e4ecli.pipelines.edit import Step, format_strength

    steps = []
    for i, edit in enumerate(edits):
        if strengths:
            strength = strengths[i]
        elif edit.default_strength is not None:
            strength = Strength((edit.default_strength,), format_strength(edit.default_strength), False)
        else:
            die(f"--direction {edit.label} has no default strength; give --strength (e.g. --strength 3 or --strength -3:3:7)")
        steps.append(Step(edit, strength))
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
        "  e4e edit latents/ -o out/ -d age -s 3 --paste-back --aligned aligned/  # edited face in the original photo\n\n"
        "  e4e edit latents/ -o out/ -d \"text:a face with lipstick\" -s 4 --relevance ffhq_fs3.npz\n\n"
        "  e4e edit latents/ -o out/ -d stylespace:6:501 -s -3:3:7              # one StyleSpace channel, in its std"
    ),
)
def edit_cmd(
    inputs: List[Path] = typer.Argument(..., help=".npy latent files and/or folders (searched recursively).", show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder: <name>.png per latent (mirroring the input tree), plus manifest.jsonl."),
    direction: List[str] = typer.Option(..., "--direction", "-d", help=DIRECTION_HELP, show_default=False),
    strength: List[str] = typer.Option([], "--strength", "-s", help=STRENGTH_HELP, show_default=False),
    pca: Optional[str] = typer.Option(None, "--pca", help="GANSpace PCA for ganspace:... directions: a file or a registered name "
                                                          "(default: the model domain's, e.g. ffhq_pca)."),
    force: bool = typer.Option(False, "--force", help="Apply a registered direction even if it was found for another domain than the model's."),
    checkpoint: str = checkpoint_option(),
    device: str = device_option(),
    precision: str = precision_option(" (renders only; edits stay fp32)"),
    batch_size: int = batch_size_option("Latents"),
    workers: int = workers_option(),
    size: Optional[int] = size_option("Output width"),
    save_latents: bool = typer.Option(False, "--save-latents", help="Also write the edited latents as <name>.npy."),
    latents_only: bool = typer.Option(False, "--latents-only", help="Write only the edited latents (.npy), render nothing."),
    paste_back: bool = typer.Option(False, "--paste-back", help="Also write <name>.pasted.png: the edited face blended into the original photo "
                                                                "(needs the alignment sidecar <name>.json; a latent without one fails)."),
    aligned: List[Path] = typer.Option([], "--aligned", help="Folder(s) of `e4e align` outputs holding the <name>.json sidecars "
                                                             "(default: beside each latent)."),
    feather: float = typer.Option(0.1, min=0.0, max=0.5, help="Paste-back: width of the soft edge, as a fraction of the aligned square's side."),
    overwrite: bool = overwrite_option("latent"),
    styleflow_weights: Optional[Path] = StyleflowWeights,
    attribute: List[str] = Attribute,
    neutral: Optional[str] = neutral_option(),
    beta: float = beta_option(),
    clip_weights: Optional[Path] = clip_weights_option(),
    relevance: Optional[Path] = relevance_option(),
) -> None:
    """Edit W+ latents (InterFaceGAN, GANSpace, SeFa, StyleFlow, StyleSpace, StyleCLIP text) and render the results."""
    from e4ecli.cli.common import capped_workers
    from e4ecli.cli.styleflow import overrides_or_die
    from e4ecli.edits.syntax import direction_kind
    from e4ecli.files.kinds import LATENT_EXTENSIONS
    from e4ecli.pipelines.plans import EditConfig

    text = text_options(neutral, beta, clip_weights, relevance)
    parsed, problems = check_options(direction, strength, pca, aligned, text)
    stylespace = any(direction_kind(d) in ("text", "stylespace") for d in direction)
    if latents_only and paste_back:
        problems.append("--paste-back needs renders; drop --latents-only")
    overrides = overrides_or_die(attribute, styleflow_weights, direction)
    config = EditConfig(precision=precision, batch_size=batch_size, workers=capped_workers(workers), size=size, save_latents=save_latents,
                        latents_only=latents_only, paste_back=paste_back, feather=feather)
    sidecars: dict = {}

    def check_items(items) -> list[str]:
        """Every file each input will write (frames, strips, latents, pasted images) clashes with no other and
        replaces no input or sidecar; found before any model loads."""
        from e4ecli.cli.common import outputs_or_die
        from e4ecli.files.guard import overwritten_inputs
        from e4ecli.pipelines.plans import plan_outputs

        if paste_back:
            from e4ecli.pasteback import find_sidecar

            for it in items:
                found = find_sidecar(it.source, it.key, aligned)
                if found is not None:
                    sidecars[it] = found
        sweeps = [s for s in parsed if s.is_sweep]
        values = sweeps[0].values if sweeps else (0.0,)
        plans = {it: plan_outputs(it, out, values, bool(sweeps), save_latents=save_latents, latents_only=latents_only,
                                  sidecar=sidecars.get(it), stylespace=stylespace).all_outputs() for it in items}
        outputs_or_die(items, plans)
        hits = overwritten_inputs(sidecars.values(), [p for paths in plans.values() for p in paths])
        return [f"the output would overwrite the alignment sidecar {side}; choose another -o folder" for side, _ in hits[:1]]

    def work(job: Job):
        from dataclasses import replace

        from e4ecli.cli.common import load_model
        from e4ecli.cli.styleflow import setup_or_die
        from e4ecli.pipelines.edit import EditPipeline

        ckpt, ident = load_model(checkpoint)
        edits = resolve_edits(direction, ckpt, ident, pca, force=force, text=replace(text, device=str(job.device)))
        styleflow = setup_or_die(edits, job.items, styleflow_weights, overrides, quiet=not job.dist.is_main)
        pipe = EditPipeline.from_checkpoint(ckpt, config, steps=pair_strengths(edits, parsed), device=job.device, styleflow=styleflow)
        return pipe(job.items, out, finished=job.start(pipe.settings(ident_hash(ident)), ident), sidecars=sidecars)

    run_batch("edit", inputs, out, LATENT_EXTENSIONS, work, device=device, precision=precision, overwrite=overwrite,
              checkpoint=checkpoint, suffix=".png", empty="no .npy latents found in the given inputs", usage=problems,
              check_items=check_items)
