"""`e4e directions list | sefa | ganspace | fit`: the registry, and making new directions."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from e4ecli.cli.app import App, app
from e4ecli.cli.common import DEFAULT_CHECKPOINT, DEVICE_HELP, EXIT_FAILED, EXIT_OK, console, die, escape
from e4ecli.files.provenance import ident_hash

directions_app = App(
    help=(
        "Editing directions: the published ones (registry, download cache) and new ones made from a "
        "checkpoint (SeFa, GANSpace PCA) or from labelled latents (InterFaceGAN boundary)."
    ),
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(directions_app, name="directions")


def _styles(styles) -> str:
    if styles is None:
        return "all"
    return str(styles[0]) if styles[1] - styles[0] == 1 else f"{styles[0]}-{styles[1] - 1}"


@directions_app.command(
    "list",
    epilog="Examples:\n\n  e4e directions list\n\n  E4E_DIRECTIONS=/data/directions e4e directions list",
)
def list_cmd() -> None:
    """Every registered direction: kind, domain, styles, default strength and range, cache state."""
    from rich.console import Console
    from rich.table import Table

    from e4ecli.hub import directions as hub

    try:
        registry = hub.load_registry()
    except hub.DirectionError as e:
        die(e)
    table = Table(title=f"editing directions (cache: {escape(str(hub.cache_dir()))})", title_justify="left")
    table.add_column("name", overflow="fold", min_width=14)
    for col in ("kind", "domain", "styles", "strength (range)", "cached"):
        table.add_column(col, no_wrap=True)
    for e in registry.values():
        file_entry = registry[e.pca] if e.kind == "ganspace" else e  # type: ignore[index]
        cached = "[green]yes[/]" if hub.local_copy(file_entry) else "no"
        kind = f"ganspace c{e.component}" if e.kind == "ganspace" else e.kind
        strength = "" if e.strength is None else f"{e.strength:g}"
        if e.range is not None:
            strength += f" ({e.range[0]:g}:{e.range[1]:g})"
        name = f"[bold]{escape(e.name)}[/]" + (f"\n[dim]{escape(e.description)}[/]" if e.description else "")
        table.add_row(name, kind, e.domain, "" if e.kind == "pca" else _styles(e.styles), strength, cached)
    Console(highlight=False, emoji=False).print(table)
    console.print("Also: a .pt/.npy direction file, ganspace:COMP:START:END, sefa:K[:LAYERS], stylespace:LAYER:CHANNEL, "
                  "\"text:DESCRIPTION\" (see `e4e edit --help`).")


@directions_app.command(
    "sefa",
    epilog=(
        "Examples:\n\n"
        "  e4e directions sefa --checkpoint e4e_ffhq_encode --layers 2,3,4,5 -o sefa_2-5.npz\n\n"
        "  e4e directions sefa -c stylegan2-ffhq-config-f.pt --layers all -o sefa_all.npz --num 20\n\n"
        "Then: e4e edit latents/ -o out/ -d sefa:0:2,3,4,5 -s 10 (computed on the fly), or -d sefa_2-5.npz:0 (row 0 of the .npz)."
    ),
)
def sefa_cmd(
    out: Path = typer.Option(..., "-o", "--out", help="Output .npz: directions (k, 512) by eigenvalue descending, eigenvalues (k,), layers."),
    checkpoint: str = typer.Option(DEFAULT_CHECKPOINT, "--checkpoint", "-c", help="Checkpoint or generator: zoo name or file path."),
    layers: str = typer.Option("all", help="Styled convolutions to factorise (= the styles the directions move): all, 2,3,4,5 or 2-5."),
    num: Optional[int] = typer.Option(None, "--num", "-k", min=1, help="Keep only the first k directions (default: all 512)."),
) -> None:
    """Closed-form factorisation (SeFa) of the generator's modulation weights."""
    from rich.table import Table

    from e4ecli.cli.common import load_model, out_file_or_die, save_or_die
    from e4ecli.cli.batch import checkpoint_problem, usage_or_die
    from e4ecli.edits.syntax import parse_layers

    problems = [] if out.suffix.lower() == ".npz" else [f"-o {out}: the SeFa output is an .npz file"]
    try:
        parse_layers(layers, None)  # the syntax now; the range once the generator is loaded
    except ValueError as e:
        problems.append(f"--layers {layers}: {e}")
    usage_or_die(problems)
    out_file_or_die(out)
    usage_or_die([checkpoint_problem(checkpoint)])
    ckpt, _ = load_model(checkpoint)
    import numpy as np

    from e4ecli.edits import ops

    try:
        result = ops.sefa(ckpt.generator, layers)
    except ValueError as e:
        die(f"--layers {layers}: {e}")
    k = num or result.directions.shape[0]
    save_or_die(out, {"directions": result.directions[:k].numpy(), "eigenvalues": result.eigenvalues[:k].numpy(),
                      "layers": np.asarray(result.layers, dtype=np.int64)}, "npz")
    table = Table(title=f"SeFa, layers {','.join(map(str, result.layers))}", title_justify="left")
    table.add_column("K", justify="right")
    table.add_column("eigenvalue", justify="right")
    for i, v in enumerate(result.eigenvalues[: min(k, 10)].tolist()):
        table.add_row(str(i), f"{v:.4f}")
    console.print(table)
    console.print(f"wrote {k} directions to {escape(out)}")


@directions_app.command(
    "ganspace",
    epilog=(
        "Examples:\n\n"
        "  e4e directions ganspace --checkpoint e4e_ffhq_encode -n 80 --samples 100000 -o my_pca.pt\n\n"
        "Then: e4e edit latents/ -o out/ -d ganspace:54:7:8 -s 20 --pca my_pca.pt"
    ),
)
def ganspace_cmd(
    out: Path = typer.Option(..., "-o", "--out", help="Output .pt (the published layout: mean (1, 512), comp (n, 1, 512), std (n,)) or .npz."),
    checkpoint: str = typer.Option(DEFAULT_CHECKPOINT, "--checkpoint", "-c", help="Checkpoint or generator: zoo name or file path."),
    n_components: int = typer.Option(80, "-n", "--components", min=1, help="Principal components to keep."),
    samples: int = typer.Option(100_000, "--samples", min=2, help="W samples from the mapping network."),
    seed: int = typer.Option(0, help="Seed of the z samples (same seed, same PCA)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
) -> None:
    """GANSpace: PCA of W = mapping(z) over random z, in the layout of the published PCA files."""
    from e4ecli.cli.common import device_or_die, load_model, out_file_or_die, save_or_die
    from e4ecli.edits import ops

    if out.suffix.lower() not in (".pt", ".npz"):
        die(f"-o {out}: write the PCA as .pt or .npz")
    out_file_or_die(out)
    dev = device_or_die(device)
    ckpt, _ = load_model(checkpoint)
    if n_components > ckpt.generator.style_dim:
        die(f"-n {n_components}: W has only {ckpt.generator.style_dim} dimensions")
    with console.status(f"PCA of {samples} W samples"):
        pca = ops.fit_pca(ckpt.generator.to(dev), n_components, samples, seed)
    data = pca.to_published()
    if out.suffix.lower() == ".pt":
        save_or_die(out, data, "torch")
    else:
        save_or_die(out, {k: v.numpy() for k, v in data.items()}, "npz")
    top = ", ".join(f"{v:.3f}" for v in pca.std[:5].tolist())
    console.print(f"wrote {n_components} components to {escape(out)} (std of the first: {top})")


@directions_app.command(
    "fit",
    epilog=(
        "Examples:\n\n"
        "  e4e directions fit --latents latents/ --labels smiling.csv -o smile_mine.npy\n\n"
        "labels.csv: one `name,label` row per latent (name relative to --latents, .npy optional; "
        "label 1/0, true/false, yes/no); a header row is allowed.\n\n"
        "Then: e4e edit latents/ -o out/ -d smile_mine.npy -s 3"
    ),
)
def fit_cmd(
    latents: Path = typer.Option(..., "--latents", help="Folder of the labelled W+ latents (.npy)."),
    labels: Path = typer.Option(..., "--labels", help="CSV of name,label rows."),
    out: Path = typer.Option(..., "-o", "--out", help="Output direction: .npy (or .pt), unit length, towards label 1."),
    wplus: bool = typer.Option(False, "--wplus", help="Fit on the whole W+ code (direction (n_styles, 512)) instead of W, the mean over styles ((1, 512))."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", min=0.01, max=0.9, help="Share of the latents held out to measure accuracy."),
    c: float = typer.Option(1.0, "--c", min=1e-6, help="SVM regularisation C (smaller: smoother boundary)."),
    seed: int = typer.Option(0, help="Seed of the train/held-out split."),
) -> None:
    """InterFaceGAN: a linear SVM boundary between latents labelled 1 and 0, with held-out accuracy."""
    from rich.table import Table

    from e4ecli.cli.common import out_file_or_die, save_or_die
    from e4ecli.files.labels import FitError, gather, read_labels

    if out.suffix.lower() not in (".npy", ".pt"):
        die(f"-o {out}: write the direction as .npy or .pt")
    out_file_or_die(out, [labels])
    if not latents.is_dir():
        die(f"--latents {latents}: not a folder")
    try:
        rows, problems = read_labels(labels)  # a wrong labels file is answered before numpy loads
        from e4ecli.edits.fit import fit_boundary

        codes, y, missing = gather(latents, rows)
        problems += missing
        for where, why in problems:
            console.print(f"[red]✗[/] {escape(where)}: {escape(why)}")
        boundary = fit_boundary(codes, y, wplus=wplus, val_fraction=val_fraction, seed=seed, c=c)
    except FitError as e:
        die(e)
    if out.suffix.lower() == ".pt":
        import torch

        save_or_die(out, torch.from_numpy(boundary.direction), "torch")
    else:
        save_or_die(out, boundary.direction, "npy")
    table = Table(title="InterFaceGAN boundary", title_justify="left")
    for col in ("latents (1 / 0)", "train", "held out", "train accuracy", "held-out accuracy", "skipped"):
        table.add_column(col, justify="right")
    table.add_row(f"{boundary.n_positive} / {boundary.n_negative}", str(boundary.n_train), str(boundary.n_val),
                  f"{boundary.train_accuracy:.3f}", f"[bold]{boundary.accuracy:.3f}[/]", str(len(problems)))
    console.print(table)
    console.print(f"held-out accuracy {boundary.accuracy:.3f} on {boundary.n_val} latents; wrote {escape(out)} {tuple(boundary.direction.shape)}")
    raise typer.Exit(EXIT_FAILED if problems else EXIT_OK)


@directions_app.command(
    "styleclip",
    epilog=(
        "Examples:\n\n"
        "  e4e directions styleclip -c e4e_ffhq_encode -o ffhq_fs3.npz --samples 100      # hours on a GPU at 1024 px\n\n"
        "  e4e directions styleclip -c my_e4e.pt -o rel.npz --samples 20 --channels 0-511   # the first layer only\n\n"
        "Interrupted? Run the same command again: finished chunks are kept. Then:\n"
        "  e4e edit latents/ -o out/ -d \"text:a face with a smile\" -s 4 --relevance ffhq_fs3.npz"
    ),
)
def styleclip_cmd(
    out: Path = typer.Option(..., "-o", "--out", help="Output .npz (fs3: channels x 512, with its layout); an unfinished one is continued."),
    checkpoint: str = typer.Option(DEFAULT_CHECKPOINT, "--checkpoint", "-c", help="Checkpoint or generator: zoo name or file path."),
    samples: int = typer.Option(100, "--samples", min=1, help="Sampled style codes each channel is moved on (StyleCLIP: 100)."),
    channels: Optional[str] = typer.Option(None, "--channels", help="Only these rows (conv channels in layer order), e.g. 0-511 or "
                                                                    "0-9,600; the file stays unfinished until every row is done."),
    seed: int = typer.Option(0, help="Seed of the sampled codes."),
    alpha: float = typer.Option(5.0, "--alpha", min=0.0, help="How far each channel is moved either side of its mean, in its std (StyleCLIP: 5)."),
    chunk: int = typer.Option(16, "--chunk", min=1, help="Rows written to the file at a time (what an interruption can lose)."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", min=1, help="Renders per generator call."),
    clip_weights: Optional[Path] = typer.Option(None, "--clip-weights", help="CLIP ViT-B/32 weights (default: the zoo's clip_vit_b32_openai)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
) -> None:
    """StyleCLIP's channel relevance matrix (fs3) for any generator: what text edits (-d "text:...") project on."""
    if out.suffix.lower() != ".npz":
        die(f"-o {out}: the relevance matrix is written as .npz")
    if clip_weights is not None and not clip_weights.is_file():
        die(f"--clip-weights {clip_weights}: no such file")
    if out.exists() and not out.is_file():
        die(f"-o {out}: not a regular file")
    from e4ecli.cli.batch import checkpoint_problem, usage_or_die
    from e4ecli.cli.common import device_problem

    usage_or_die([device_problem(device), checkpoint_problem(checkpoint)])  # before torch: a typo is answered at once
    from rich.progress import Progress

    from e4ecli.cli.common import device_or_die, load_model, progress_columns
    from e4ecli.edits import stylespace as ss
    from e4ecli.hub.directions import DirectionError
    from e4ecli.pipelines.directions import clip_cached
    from e4ecli.pipelines.styleclip import compute_relevance, parse_rows

    dev = device_or_die(device)
    ckpt, ident = load_model(checkpoint)
    gen = ckpt.generator.to(dev).eval()
    try:
        rows = parse_rows(channels, sum(ss.conv_layout(gen)))
    except DirectionError as e:
        die(f"--channels {e}")
    try:
        with console.status("loading CLIP"):
            clip = clip_cached(clip_weights, str(dev))
        with Progress(*progress_columns(), console=console, transient=False) as progress:
            task = progress.add_task("relevance rows", total=len(rows))
            key = ident_hash(ident)
            done_now, missing = compute_relevance(gen, clip, out, samples=samples, seed=seed, rows=rows, alpha=alpha,
                                                  domain=ckpt.domain.short, checkpoint=key, stats_key=key, chunk=chunk,
                                                  batch_size=batch_size, on_rows=lambda k: progress.advance(task, k))
            progress.update(task, completed=len(rows))
    except DirectionError as e:
        die(e)
    state = "complete" if missing == 0 else f"unfinished: {missing} rows left (run again without --channels to finish)"
    console.print(f"computed {done_now} rows into {escape(out)} ({state})")
