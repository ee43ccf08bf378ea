"""`e4e invert`: images -> W+ latents (.npy)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from e4ecli.cli.app import app
from e4ecli.cli.align import DETECTOR_HELP, Detector
from e4ecli.cli.batch import (Job, batch_size_option, checkpoint_option, device_option, ident_hash, overwrite_option,
                              precision_option, run_batch, size_option, workers_option)
from e4ecli.cli.common import DEFAULT_CHECKPOINT, die
from e4ecli.cli.refining import REFINE_HELP, PivotMode, RefineMode


@app.command(
    "invert",
    epilog=(
        "Examples:\n\n"
        "  e4e invert ./photos -o latents/\n\n"
        "  e4e invert face.jpg -o out/ --save-reconstructions --device cpu\n\n"
        "  e4e invert ./cars -o cars_latents/ --checkpoint e4e_cars_encode --batch-size 8 --workers 4\n\n"
        "  e4e invert ./photos -o latents_w/ --stage 0   # pure W codes: less faithful, edit best\n\n"
        "  e4e invert ./photos -o refined/ --refine w+ --refine-steps 50   # optimise each code: more faithful\n\n"
        "  e4e invert face.jpg -o pti/ --refine pti --save-reconstructions   # + pti/face.pti.safetensors: e4e edit ... -c pti/face.pti.safetensors\n\n"
        "  e4e invert ./selfies -o latents/ --align --detector dlib   # FFHQ-align each photo first (+ <name>.json)"
    ),
)
def invert_cmd(
    inputs: List[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively).", show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder: <name>.npy per image, mirroring the input tree, plus manifest.jsonl."),
    checkpoint: str = checkpoint_option("e4e/pSp checkpoint: a zoo name (see `e4e weights list`) or a file path."),
    device: str = device_option(),
    precision: str = precision_option(),
    batch_size: int = batch_size_option("Images"),
    workers: int = workers_option("Processes decoding images in the background (0: decode inline; at most one per CPU)."),
    save_reconstructions: bool = typer.Option(False, "--save-reconstructions", help="Also write <name>.png: the generator's rendering of the latents."),
    size: Optional[int] = size_option("With --save-reconstructions: their width"),
    overwrite: bool = overwrite_option("image"),
    align: bool = typer.Option(False, "--align", help="Align the largest face of each photo first (FFHQ recipe at 256 px, as e4e's align_face) "
                               "and write the alignment sidecar <name>.json."),
    stage: Optional[int] = typer.Option(None, "--stage", min=0, help="e4e's distortion-editability dial: use the base code w plus only the first K offsets "
                                        "(0 = pure W, best for editing; n_styles-1 = the full e4e code, the default). e4e checkpoints only."),
    save_aligned: bool = typer.Option(False, "--save-aligned", help="With --align: also keep the aligned crop <name>.aligned.png (paste-back, inspection)."),
    detector: Detector = typer.Option(Detector.face_alignment, "--detector", "-L", help="With --align: " + DETECTOR_HELP),
    refine: Optional[RefineMode] = typer.Option(None, "--refine", help=REFINE_HELP, show_default=False),
    refine_steps: int = typer.Option(30, "--refine-steps", min=0, help="With --refine: optimisation steps per image (PTI: generator steps)."),
    refine_lr: Optional[float] = typer.Option(None, "--refine-lr", help="Peak learning rate (default 0.03 for latents, 3e-3 for PTI); warm-up, cosine decay."),
    pivot: Optional[PivotMode] = typer.Option(None, "--pivot", help="With --refine pti: refine the pivot first in w+ or w (default: the encoder's code)."),
    pivot_steps: int = typer.Option(30, "--pivot-steps", min=0, help="With --pivot: latent steps before tuning."),
    pti_shared: bool = typer.Option(False, "--pti-shared", help="With --refine pti: tune ONE generator for all inputs (a small batch) "
                                    "-> OUT/pti_shared.safetensors."),
    lpips_weight: Optional[float] = typer.Option(None, "--lpips-weight", help="LPIPS weight (default 0.8 for latents as e4e, 1 for PTI); "
                                                "needs torchvision's AlexNet file."),
    id_weight: float = typer.Option(0.0, "--id-weight", help="Identity (ArcFace) loss weight for faces, e.g. 0.1 as e4e trains (default: off)."),
    reg_weight: Optional[float] = typer.Option(None, "--reg-weight", help="Latents: pull toward the encoder's code (default 0.001); "
                                              "PTI: locality regulariser (default 1)."),
    arcface: str = typer.Option("ir_se50", "--arcface", help="With --id-weight: ArcFace IR-SE50 weights, a file or the zoo name."),
) -> None:
    """Invert photos into W+ latents with an e4e encoder (aligned faces expected for FFHQ models)."""
    from e4ecli.cli.common import capped_workers, outputs_or_die, planned
    from e4ecli.cli.refining import refine_options_or_die
    from e4ecli.files.provenance import base_record
    from e4ecli.files.kinds import IMAGE_EXTENSIONS, is_video
    from e4ecli.pipelines.plans import InvertConfig

    config = InvertConfig(precision=precision, batch_size=batch_size, workers=capped_workers(workers), stage=stage,
                          save_reconstructions=save_reconstructions, size=size, save_aligned=save_aligned)
    problems = ["--save-aligned keeps the crops of --align: add --align"] if save_aligned and not align else []
    for clip in [p for p in inputs if is_video(p) and p.is_file()][:1]:
        problems.append(f"{clip} is a video: align its frames first (e4e align {clip} -o aligned/ writes aligned/{clip.stem}/<frame>.png "
                        f"with smoothing), then e4e invert aligned/{clip.stem}; or edit it in one go with e4e edit-video")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    chosen: dict = {}

    def check_items(items) -> None:
        from e4ecli.pipelines.plans import output_suffixes

        chosen["opts"] = opts = refine_options_or_die(refine, refine_steps, refine_lr, pivot, pivot_steps, pti_shared, lpips_weight, id_weight,
                                                      reg_weight, len(items), world)
        outputs_or_die(items, planned(items, out, output_suffixes(save_reconstructions, align, save_aligned, opts)))

    def work(job: Job):
        from e4ecli.cli.common import load_model
        from e4ecli.cli.refining import refiner_with_notes
        from e4ecli.pipelines.invert import InvertPipeline, NoEncoder, StageError

        ckpt, ident = load_model(checkpoint)
        try:
            pipe = InvertPipeline.from_checkpoint(ckpt, config, device=job.device)
        except NoEncoder:
            die(f"{checkpoint} holds only a generator; `e4e invert` needs an e4e/pSp checkpoint (e.g. {DEFAULT_CHECKPOINT})")
        except StageError as e:
            die(f"--stage {stage}: {checkpoint}: {e}")
        if align:
            if not ckpt.domain.is_face:
                die(f"--align aligns human faces; {checkpoint} is a {ckpt.domain.name} model (drop --align)")
            from e4ecli.cli.align import open_detector_or_die
            from e4ecli.pipelines.align import FaceAligner

            pipe.aligner = FaceAligner(open_detector_or_die(detector.value, str(job.device)), size=256, supersample=1)
        if chosen["opts"] is not None:
            pipe.refiner = refiner_with_notes(chosen["opts"], job.device, ckpt, arcface, base_record(ckpt.path, ident, checkpoint))
        return pipe(job.items, out, finished=job.start(pipe.settings(ident_hash(ident)), ident))

    run_batch("invert", inputs, out, IMAGE_EXTENSIONS, work, device=device, precision=precision, overwrite=overwrite,
              checkpoint=checkpoint, suffix=".npy", usage=problems, check_items=check_items,
              empty="no images found in the given inputs (looked for " + ", ".join(sorted(IMAGE_EXTENSIONS)) + ")")
