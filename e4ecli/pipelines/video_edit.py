"""Edit the face in a video clip (STIT's pipeline): align with smoothing -> invert every frame (e4e pivots) ->
optionally tune ONE generator on all frames (PTI) -> edit -> optionally stitch -> paste each edited crop back
into its frame -> the clip at the source frame rate, same frame count, the source's audio copied unchanged.

Everything per frame is kept in a work folder so that a killed run resumes and an identical rerun is a no-op:

  WORK/aligned/<frame>.png|.json   aligned crops and sidecars (pipelines.video_align), WORK/aligned/clip.json
  WORK/latents/<frame>.npy         e4e codes (the pivots)
  WORK/pti/generator.pt            the tuned synthesis weights (WORK/pti/state.pt while tuning: resumes per epoch)
  WORK/edited/<frame>.png          edited (and stitched) crops; <frame>.mask.npy the stitched blend mask
  WORK/done.json                   the output written last, with its fingerprint

Each stage folder holds `stage.json` with the fingerprint of everything that changes its files (its own
settings and the fingerprint of the stage before it); a stage whose fingerprint changed is redone, the ones
before it are kept. Files are written atomically, so a frame's file is there complete or not at all.
Only one frame (plus one batch) is ever in memory: frames are streamed from the clip twice (track, align) and
once more to encode, latents and crops are read back from the work folder.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from e4ecli.edits.ramps import Ramp
from e4ecli.edits.specs import Edit
from e4ecli.files.batch import read_json, save_image, save_npy, save_torch, write_text
from e4ecli.files.provenance import input_stamp, stable_hash
from e4ecli.pipelines.edit import render_uint8
from e4ecli.refine.losses import Weights
from e4ecli.files.video import TruncatedVideo, VideoInfo, VideoWriter, iter_frames
from e4ecli.pipelines.video_align import CENTER_SIGMA, XY_SIGMA, ClipAlignment, align_clip, frame_name

STAGE_FILE = "stage.json"
# STIT's train.py: l2 weighted 10, LPIPS 1, no locality regulariser, Adam at 3e-5
STIT_PTI = {"weights": Weights(l2=10.0, lpips=1.0, reg=0.0), "lr": 3e-5}
DONE_FILE = "done.json"


@dataclass(frozen=True)
class VideoEditOptions:
    size: int = 256  # aligned crop side (e4e's align_face)
    supersample: int = 1
    face: int | None = None
    center_sigma: float = CENTER_SIGMA
    xy_sigma: float = XY_SIGMA
    pti_steps: int = 0  # epochs over all frames; 0: no PTI
    pti_lr: float | None = None
    stitch: bool = False
    stitch_steps: int = 100
    mask: str = "auto"
    feather: float = 0.1
    side_by_side: bool = False
    batch_size: int = 4


@dataclass
class VideoEditResult:
    output: Path
    frames: int
    edited: int
    without_face: list[int]
    stopped: str | None
    skipped: bool = False
    notes: list[str] = field(default_factory=list)
    stages: dict = field(default_factory=dict)  # stage -> "done" | "reused"
    timings: dict = field(default_factory=dict)
    shares: list[int] = field(default_factory=list)  # under torchrun: the frames each process inverted and edited, by rank


def stage_folder(work: Path, name: str, fingerprint: str) -> tuple[Path, bool]:
    """WORK/name for `fingerprint`: (folder, whether it holds earlier work with the same fingerprint). A folder
    made with another fingerprint is emptied first."""
    folder = work / name
    state = read_json(folder / STAGE_FILE)
    if state is not None and state.get("fingerprint") == fingerprint:
        return folder, True
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    write_text(folder / STAGE_FILE, json.dumps({"fingerprint": fingerprint}) + "\n")
    return folder, False


def _batches(seq: Sequence[int], n: int) -> Iterator[list[int]]:
    for i in range(0, len(seq), max(1, n)):
        yield list(seq[i:i + n])


def _load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im.convert("RGB"))


def invert_frames(aligned: ClipAlignment, model, domain, folder: Path, device, batch_size: int,
                  on_frame: Callable[[int], None] | None = None, frames: Sequence[int] | None = None) -> None:
    """e4e codes of every aligned frame (or of `frames`, this process's share) -> folder/<frame>.npy (frames
    already there are kept)."""
    from PIL import Image

    todo = [i for i in (aligned.with_face if frames is None else frames) if not (folder / f"{frame_name(i)}.npy").exists()]
    for chunk in _batches(todo, batch_size):
        x = torch.stack([domain.preprocess(Image.open(aligned.image(i)).convert("RGB")) for i in chunk]).to(device)
        with torch.inference_mode():
            codes = model.encode(x).float().cpu().numpy()
        for i, code in zip(chunk, codes):
            save_npy(folder / f"{frame_name(i)}.npy", code)
            if on_frame is not None:
                on_frame(i)


def load_latent(folder: Path, i: int) -> torch.Tensor:
    return torch.from_numpy(np.load(folder / f"{frame_name(i)}.npy"))


def tune_on_clip(generator, aligned: ClipAlignment, latents: Path, folder: Path, *, epochs: int, lr: float | None, domain, nets, latent_avg,
                 device, batch_size: int, on_epoch: Callable[[int], None] | None = None):
    """PTI over all frames, one generator (refine.pti.tune_generator_streaming); resumes from folder/state.pt;
    the result is folder/generator.pt (the tunable weights). Returns the tuned generator."""
    from PIL import Image

    from e4ecli.refine.pti import tunable, tune_generator_streaming

    final = folder / "generator.pt"
    if final.exists():
        return load_tuned_weights(generator, final)
    state_path = folder / "state.pt"
    state = torch.load(state_path, map_location="cpu", weights_only=True) if state_path.exists() else None
    h, w = domain.input_size

    def batches():
        for chunk in _batches(aligned.with_face, batch_size):
            pivots = torch.stack([load_latent(latents, i) for i in chunk]).to(device)
            targets = torch.stack([domain.preprocess(Image.open(aligned.image(i)).convert("RGB")) for i in chunk]).to(device)
            yield pivots, targets

    def keep(epoch: int, st: dict) -> None:
        save_torch(state_path, st)
        if on_epoch is not None:
            on_epoch(epoch)

    avg = latent_avg.reshape(-1, latent_avg.shape[-1])[0] if latent_avg is not None else None
    with torch.enable_grad():
        tuned = tune_generator_streaming(generator, batches, epochs=epochs, lr=lr or STIT_PTI["lr"], weights=STIT_PTI["weights"],
                                         nets=nets, latent_avg=avg, crop=domain.encoder_frame, state=state, on_epoch=keep)
    save_torch(final, {k: v.detach().cpu() for k, v in tunable(tuned).items()})
    state_path.unlink(missing_ok=True)
    return tuned


def load_tuned_weights(generator, path: Path):
    import copy

    tuned = copy.deepcopy(generator).eval()
    weights = torch.load(path, map_location="cpu", weights_only=True)
    named = dict(tuned.named_parameters())
    with torch.no_grad():
        for k, v in weights.items():
            named[k].copy_(v.to(named[k].device))
    for p in tuned.parameters():
        p.requires_grad_(False)
    return tuned


def edit_codes(w: torch.Tensor, steps: Sequence[tuple[Edit, Ramp]], frames: Sequence[int], total: int) -> torch.Tensor:
    """w (N, S, D) of the given frames -> the edits applied in order, each at its strength for that frame."""
    for edit, ramp in steps:
        strength = torch.tensor([ramp.at(i, total) for i in frames], dtype=w.dtype, device=w.device)
        w = edit.apply(w, strength)
    return w


def edit_offsets(steps: Sequence[tuple[Edit, Ramp]], frames: Sequence[int], total: int, device=None) -> list[torch.Tensor] | None:
    """The StyleSpace offsets (one (N, C_l) per layer) of the StyleSpace/text steps for the given frames, each at its
    strength for that frame; None when no step edits in StyleSpace (W+ edits: edit_codes)."""
    total_offsets = None
    for edit, ramp in steps:
        if not edit.in_stylespace:
            continue
        strength = torch.tensor([ramp.at(i, total) for i in frames], dtype=torch.float32)
        offsets = edit.style_offsets(strength, len(frames))
        total_offsets = offsets if total_offsets is None else [a + b for a, b in zip(total_offsets, offsets)]
    return None if total_offsets is None else [o.to(device) for o in total_offsets]


def edit_frames(aligned: ClipAlignment, generator, domain, latents: Path, folder: Path, steps, total: int, device, batch_size: int,
                stitch=None, masker=None, on_frame: Callable[[int], None] | None = None, frames: Sequence[int] | None = None) -> None:
    """Edited crops -> folder/<frame>.png (every aligned frame, or `frames`); with `stitch` (a refine.stitch.StitchConfig)
    each crop is stitched and its blend mask saved as folder/<frame>.mask.npy."""
    todo = [i for i in (aligned.with_face if frames is None else frames) if not (folder / f"{frame_name(i)}.png").exists()]
    for chunk in _batches(todo, 1 if stitch is not None else batch_size):
        w = torch.stack([load_latent(latents, i) for i in chunk]).to(device)
        with torch.inference_mode():
            edited = edit_codes(w, steps, chunk, total)
            offsets = edit_offsets(steps, chunk, total, w.device)
        if stitch is None:
            crops, _ = render_uint8(generator, domain, edited, batch_size, None, offsets=offsets)
            for i, crop in zip(chunk, crops):
                save_image(folder / f"{frame_name(i)}.png", crop)
                if on_frame is not None:
                    on_frame(i)
            continue
        from e4ecli.refine.masks import landmarks_in_crop
        from e4ecli.refine.stitch import stitch_frame

        i = chunk[0]
        reference = _load_rgb(aligned.image(i))
        side = read_json(aligned.sidecar(i)) or {}
        face = masker(reference, landmarks_in_crop(side["landmarks"], side["source_from_output"]))
        with torch.enable_grad():
            r = stitch_frame(generator, edited[0].clone(), w[0].clone(), face.mask, stitch, target=reference,
                             s_offsets=None if offsets is None else [o[:1] for o in offsets])
        save_npy(folder / f"{frame_name(i)}.mask.npy", r.blend_mask.astype(np.float32))
        save_image(folder / f"{frame_name(i)}.png", r.crop)
        if on_frame is not None:
            on_frame(i)


def paste(frame: np.ndarray, crop: np.ndarray, sidecar: dict, feather: float, mask: np.ndarray | None = None) -> np.ndarray:
    """The edited crop into its frame (pasteback.paste_back): feathered square, or the stitching blend mask."""
    from e4ecli.pasteback import paste_back

    a = np.asarray(sidecar["source_from_output"], dtype=np.float64)
    return paste_back(frame, crop, a, int(sidecar["output_size"]), feather, mask=mask)


def encode(clip: Path, info: VideoInfo, aligned: ClipAlignment, edited: Path, out: Path, feather: float, side_by_side: bool,
           on_frame: Callable[[int], None] | None = None) -> VideoWriter:
    """Stream the clip once more: frames with the face get their edited crop pasted back, the others pass
    through; written at the source rate with the source's audio (files.video.VideoWriter)."""
    writer = VideoWriter(out, info.fps, audio_from=clip)
    faces = set(aligned.with_face)
    frames = iter_frames(clip, info)
    try:
        with writer:
            try:
                for i, frame in enumerate(frames):
                    if i >= aligned.frames:
                        break
                    result = frame
                    crop_path = edited / f"{frame_name(i)}.png"
                    if i in faces and crop_path.exists():
                        mask_path = edited / f"{frame_name(i)}.mask.npy"
                        mask = np.load(mask_path) if mask_path.exists() else None
                        result = paste(frame, _load_rgb(crop_path), read_json(aligned.sidecar(i)), feather, mask)
                    writer.write(np.concatenate([frame, result], axis=1) if side_by_side else result)
                    if on_frame is not None:
                        on_frame(i)
            except TruncatedVideo:
                pass  # a damaged clip: the frames before the damage are written (the track pass reported where it stopped)
    finally:
        frames.close()
    return writer


@dataclass
class Fingerprints:
    aligned: str
    latents: str
    pti: str | None
    edited: str
    output: str


def fingerprints(info: VideoInfo, detector: str, ckpt_id: str, steps, opts: VideoEditOptions, frames_id: str, out: Path,
                 stitch_config=None, mask_kind: str | None = None) -> Fingerprints:
    latents = stable_hash({"aligned": frames_id, "checkpoint": ckpt_id})
    pti = (stable_hash({"latents": latents, "epochs": opts.pti_steps, "lr": opts.pti_lr or STIT_PTI["lr"], "weights": STIT_PTI["weights"].__dict__})
           if opts.pti_steps > 0 else None)
    stitch = None
    if stitch_config is not None:
        from dataclasses import asdict

        stitch = {"config": asdict(stitch_config), "mask": mask_kind}
    edited = stable_hash({"latents": latents, "pti": pti, "edits": [[e.identity(), r.to_json()] for e, r in steps], "stitch": stitch})
    output = stable_hash({"edited": edited, "feather": opts.feather, "side_by_side": opts.side_by_side, "input": input_stamp(info.path),
                          "out": os.path.abspath(out)})
    return Fingerprints(frames_id, latents, pti, edited, output)


def output_is_current(out: Path, work: Path, fingerprint: str) -> bool:
    done = read_json(work / DONE_FILE)
    return bool(done) and done.get("fingerprint") == fingerprint and out.exists() and done.get("output_stamp") == input_stamp(out)


def _together(dist, step: Callable[[], object] | None):
    """Run `step` on this process (None: nothing to do here), then wait for every process; the first failure of
    any process is raised on all of them (a process never waits for one that died). Returns step's value."""
    value, error = None, None
    try:
        value = step() if step is not None else None
    except Exception as e:  # noqa: BLE001 -- handed to every process, raised again below
        error = e
    if dist is not None and dist.world > 1:
        errors = dist.gather(error)
        error = error or next((e for e in errors if e is not None), None)
    if error is not None:
        raise error
    return value


def _share(frames: Sequence[int], dist) -> list[int]:
    """This process's frames (round robin, as files.batch.shard shares items)."""
    if dist is None or dist.world <= 1:
        return list(frames)
    return [f for k, f in enumerate(frames) if k % dist.world == dist.rank]


def edit_video(clip: Path, info: VideoInfo, out: Path, work: Path, *, backend, ckpt, ckpt_id: str, steps: Sequence[tuple[Edit, Ramp]],
               opts: VideoEditOptions, device, nets=None, stitch_config=None, masker=None,
               progress: Callable[[str, int, int | None], None] | None = None, notify: Callable[[str], None] | None = None,
               dist=None) -> VideoEditResult:
    """The whole edit (module docstring). progress(stage, done, total); notify(line) for notes.

    dist (runtime.Dist, under torchrun): the frames are shared across the processes as the image commands share
    their inputs -- inversion and editing (+ stitching) split round robin, each process writing its frames into
    the shared work folder; tracking (sequential, smoothed over time), PTI (one generator for all frames) and the
    encode run on rank 0 while the others wait. Every process returns the result; only rank 0 writes the clip."""
    import time

    from e4ecli.pipelines.video_align import settings_id

    main = dist is None or dist.is_main

    def tick(stage: str, total: int | None = None):
        count = {"n": 0}

        def on(_i=None, *_):
            count["n"] += 1
            if progress is not None:
                progress(stage, count["n"], total)
        return on

    def first_main(step: Callable[[], object]):
        """`step` on rank 0, then on the others (which find rank 0's files: a stage folder is emptied once)."""
        value = _together(dist, step if main else None)
        other = _together(dist, None if main else step)  # every process takes part in both rounds
        return value if main else other

    timings: dict[str, float] = {}
    work.mkdir(parents=True, exist_ok=True)
    _, frames_id = settings_id(info, backend.name, opts.face, opts.size, opts.supersample, opts.center_sigma, opts.xy_sigma)
    fp = fingerprints(info, backend.name, ckpt_id, steps, opts, frames_id, out, stitch_config, masker.kind if masker is not None else None)

    t = time.perf_counter()
    track_tick, align_tick = tick("track", info.frame_count), tick("align", None)
    aligned = first_main(lambda: align_clip(clip, info, backend, work / "aligned", size=opts.size, supersample=opts.supersample, face=opts.face,
                                            center_sigma=opts.center_sigma, xy_sigma=opts.xy_sigma,
                                            on_frame=lambda stage, i: (track_tick if stage == "track" else align_tick)(i)))
    timings["track+align"] = time.perf_counter() - t
    result = VideoEditResult(out, aligned.frames, len(aligned.with_face), aligned.without_face, aligned.stopped, timings=timings)
    if output_is_current(out, work, fp.output):
        result.skipped = True
        return result

    model = ckpt.inverter().to(device).eval()
    generator = model.decoder
    for p in generator.parameters():
        p.requires_grad_(False)
    n = len(aligned.with_face)
    mine = _share(aligned.with_face, dist)
    if dist is not None and dist.world > 1:
        result.shares = [int(k) for k in dist.gather(len(mine))]

    t = time.perf_counter()
    latents, reused = first_main(lambda: stage_folder(work, "latents", fp.latents))
    _together(dist, lambda: invert_frames(aligned, model, ckpt.domain, latents, device, opts.batch_size, on_frame=tick("invert", len(mine)),
                                          frames=mine))
    result.stages["latents"] = "reused" if reused and not timings.get("invert") else "done"
    timings["invert"] = time.perf_counter() - t

    if fp.pti is not None:
        t = time.perf_counter()
        pti_dir, _ = first_main(lambda: stage_folder(work, "pti", fp.pti))

        def tune():
            return tune_on_clip(generator, aligned, latents, pti_dir, epochs=opts.pti_steps, lr=opts.pti_lr, domain=ckpt.domain, nets=nets,
                                latent_avg=model.latent_avg, device=device, batch_size=opts.batch_size, on_epoch=tick("pti", opts.pti_steps))
        generator = first_main(tune)  # rank 0 tunes; the others load its generator.pt
        timings["pti"] = time.perf_counter() - t

    t = time.perf_counter()
    edited, _ = first_main(lambda: stage_folder(work, "edited", fp.edited))
    _together(dist, lambda: edit_frames(aligned, generator, ckpt.domain, latents, edited, steps, aligned.frames, device, opts.batch_size,
                                        stitch=stitch_config, masker=masker, on_frame=tick("stitch" if stitch_config is not None else "edit", len(mine)),
                                        frames=mine))
    timings["edit"] = time.perf_counter() - t

    t = time.perf_counter()

    def encode_and_record():
        writer = encode(clip, info, aligned, edited, out, opts.feather, opts.side_by_side, on_frame=tick("encode", aligned.frames))
        write_text(work / DONE_FILE, json.dumps({"fingerprint": fp.output, "output": os.path.abspath(out), "output_stamp": input_stamp(out),
                                                 "frames": aligned.frames, "edited": n, "without_face": aligned.without_face,
                                                 "stopped": aligned.stopped}) + "\n")
        return writer

    writer = _together(dist, encode_and_record if main else None)
    timings["encode"] = time.perf_counter() - t
    if writer is not None and writer.audio_note:
        result.notes.append(writer.audio_note)
    return result
