"""Everything a run trains with, built once from a Plan: `build(plan, dist, device) -> Components`.

Every weights file the run needs is located first and all missing ones are reported together;
then, in this order (the random draws of a seeded run depend on it): seed, generator and encoder,
discriminator, loss networks, data, progressive schedule, optimisers (the groups of the first stage).
The bundle is frozen: the trainer keeps the run's changing state (step, stage, best loss) itself,
and `config` is the resolved TrainConfig as the run uses and stores it (frozen).
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from e4ecli.domains import Domain, domain_for
from e4ecli.hub.fetch import FetchError, Remote, fetch
from e4ecli.hub.checkpoints import (GENERATOR_CONFIG_KEY, CheckpointError, build_generator, load_checkpoint, load_strict,
                                    mean_latent, strip_prefix)
from e4ecli.hub.networks import NotAGenerator, init_from_ir_se50, load_arcface, load_moco, load_stylegan, resolve_weights
from e4ecli.models.discriminator import LatentCodesDiscriminator
from e4ecli.models.encoders import ENCODERS
from e4ecli.runtime import Dist
from e4ecli.training import data as datamod
from e4ecli.training import losses as L
from e4ecli.training import progressive as prog
from e4ecli.training.loss import DiscriminatorLoss, EncoderLoss
from e4ecli.training.options import TrainConfig, named
from e4ecli.training.plan import Plan, TrainError
from e4ecli.training.pool import LatentCodesPool


def default_workers() -> int:
    """DataLoader workers when --workers is not given: the original's 4, at most the CPUs this process may use."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(0, min(4, cpus))


def make_optimizer(name: str, param_groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """'adam' (torch) or 'ranger' (pytorch-optimizer) configured as the original's Ranger 20.4.11:
    RAdam + Lookahead + gradient centralisation, betas (0.95, 0.999), eps 1e-5, alpha 0.5, k 6,
    plain momentum steps while the variance is not yet tractable (N_sma <= 5), GC on conv and fc weights."""
    if name == "adam":
        return torch.optim.Adam(param_groups, lr=lr)
    from pytorch_optimizer import Ranger

    return Ranger(param_groups, lr=lr, betas=(0.95, 0.999), alpha=0.5, k=6, n_sma_threshold=5, degenerated_to_sgd=True,
                  weight_decay=0.0, use_gc=True, gc_conv_only=False, eps=1e-5)


@dataclass(frozen=True)
class Components:
    config: TrainConfig  # resolved: stylegan_size, encoder_type, progressive_steps, workers, device as used
    device: torch.device
    seed: int
    py_rng: random.Random  # the W pools' draws
    encoder: nn.Module
    decoder: nn.Module
    latent_avg: torch.Tensor  # (n_styles, 512)
    n_styles: int
    domain: Domain
    discriminator: LatentCodesDiscriminator | None
    pools: tuple[LatentCodesPool, LatentCodesPool] | None  # (real, fake) with --use-w-pool
    encoder_loss: EncoderLoss
    discriminator_loss: DiscriminatorLoss
    schedule: list[int] | None
    train_set: datamod.ImageDataset
    val_set: datamod.ImageDataset | None
    groups: tuple[tuple[str, list[nn.Parameter]], ...]  # in the order they join the optimiser
    first_groups: int  # how many are in the optimiser at the start step
    optimizer: torch.optim.Optimizer
    d_optimizer: torch.optim.Optimizer | None
    scaler: torch.amp.GradScaler
    notes: tuple[tuple[str, str], ...]  # (message, level)

    def n_groups(self, stage: int) -> int:
        """How many optimiser groups train at `stage` (all of them without progressive training)."""
        if self.schedule is None:
            return len(self.groups)
        return stage + 1 + (1 if self.config.train_decoder else 0)

    def flat_params(self) -> list[nn.Parameter]:
        """The parameters in the original's optimiser order: encoder, then decoder with --train-decoder."""
        return list(self.encoder.parameters()) + (list(self.decoder.parameters()) if self.config.train_decoder else [])


def _faces(config: TrainConfig) -> bool:
    return domain_for(config.dataset_type).is_face


def locate_weights(plan: Plan) -> dict[str, Path]:
    """Every weights file the run needs -> its path; all missing ones are reported in ONE TrainError."""
    o = plan.config
    wanted: list[tuple[str, str, str, str, str | None]] = []  # key, spec, what, flag, alternative
    if plan.resume_ckpt is None:
        if o.checkpoint_path:
            wanted.append(("checkpoint", o.checkpoint_path, "the e4e checkpoint to fine-tune", named("checkpoint_path"), None))
        else:
            wanted.append(("stylegan", o.stylegan_weights, "the StyleGAN2 generator", named("stylegan_weights"), None))
            init = o.encoder_init
            if init and init.lower() != "none":
                wanted.append(("encoder_init", init, "the IR-SE50 weights that initialise the encoder backbone",
                               named("encoder_init"), f"{named('encoder_init')} none starts from a random backbone (much worse results)"))
    if o.id_lambda > 0:
        faces = _faces(o)
        wanted.append(("identity", o.id_weights or ("ir_se50" if faces else "moco_v2_resnet50"),
                       "the ArcFace network of the identity loss" if faces else "the MoCo v2 network of the similarity loss",
                       named("id_weights"), f"{named('id_lambda')} 0 trains without it"))
    found: dict[str, Path] = {}
    problems: list[str] = []
    for key, spec, what, flag, alternative in wanted:
        try:
            found[key] = resolve_weights(spec, what)
        except CheckpointError as e:
            problems.append(f"{e} Set another file with {flag}" + (f", or {alternative}." if alternative else "."))
    if o.lpips_lambda > 0:  # fetched now (when online) so that a missing backbone is reported with the others
        path, url = L.lpips_backbone_file(o.lpips_type)
        try:
            fetch(Remote(f"{path.name} (LPIPS {o.lpips_type} backbone)", path.name, (url,)), path, download=True, progress=False)
        except FetchError as e:
            reason = e.failures[0].strip() if e.failures else "not downloaded"
            what = f"LPIPS ({o.lpips_type}) needs torchvision's ImageNet weights {path.name}"
            problems.append(f"{L.WeightsUnavailable(what, path, url, reason)}, or train without LPIPS: {named('lpips_lambda')} 0.")
    if problems:
        raise TrainError([f"{len(problems)} weights file(s) missing:", *(f"  {p}" for p in problems)] if len(problems) > 1 else problems)
    return found


def build(plan: Plan, dist: Dist, device: torch.device) -> Components:
    """Build the run's components (raises TrainError with what to do when something is missing)."""
    o = plan.config
    if o.amp and device.type != "cuda":
        raise TrainError(f"{named('amp')} needs a CUDA device (this run uses {device}); drop {named('amp')}")
    files = locate_weights(plan)
    notes: list[tuple[str, str]] = [(n, "warning") for n in plan.notes]
    seed = int(o.seed)
    torch.manual_seed(seed)
    py_rng = random.Random(seed)
    encoder, decoder, avg, encoder_type = _models(plan, o, files, notes)
    if o.stylegan_size and int(o.stylegan_size) != decoder.size:
        raise TrainError(f"{named('stylegan_size')} {o.stylegan_size} but the generator weights are for {decoder.size} px; "
                         f"omit {named('stylegan_size')} to take it from the file")
    o = o.replace(encoder_type=encoder_type, stylegan_size=decoder.size, device=str(device))
    n_styles = decoder.n_latent
    if getattr(encoder, "style_count", n_styles) != n_styles:
        raise TrainError(f"the encoder predicts {encoder.style_count} styles but the generator takes {n_styles}")
    avg = avg.float().reshape(-1, decoder.style_dim)
    if avg.shape[0] == 1:
        avg = avg.repeat(n_styles, 1)
    encoder, decoder = encoder.to(device), decoder.to(device)
    if not o.train_decoder:
        decoder.requires_grad_(False)
    discriminator = pools = None
    if o.w_discriminator_lambda > 0:
        discriminator = LatentCodesDiscriminator(decoder.style_dim, 4).to(device)
        if o.use_w_pool:
            pools = (LatentCodesPool(o.w_pool_size, py_rng), LatentCodesPool(o.w_pool_size, py_rng))
    encoder_loss = _encoder_loss(o, files, device)
    domain = domain_for(o.dataset_type, o.input_size)
    train_set, val_set = _data(o, dist, domain, notes)
    if o.workers is None:
        o = o.replace(workers=default_workers())
    try:
        schedule = prog.build_schedule(o.progressive_steps, o.progressive_start, o.progressive_step_every, n_styles)
    except prog.ScheduleError as e:
        raise TrainError(str(e)) from None
    if schedule is not None:
        o = o.replace(progressive_steps=tuple(schedule))  # the original stores the expanded list too
    groups = prog.encoder_param_groups(encoder) if schedule is not None else [("encoder", list(encoder.parameters()))]
    if o.train_decoder:
        groups.insert(1, ("decoder", list(decoder.parameters())))
    first_stage = 0
    if plan.resume_ckpt is not None and schedule is not None:
        first_stage = prog.stage_at(schedule, int(plan.resume_ckpt["global_step"]))
    first = len(groups) if schedule is None else first_stage + 1 + (1 if o.train_decoder else 0)
    optimizer = make_optimizer(o.optim_name, [{"params": ps, "name": name} for name, ps in groups[:first]], o.learning_rate)
    d_optimizer = torch.optim.Adam(list(discriminator.parameters()), lr=o.w_discriminator_lr) if discriminator is not None else None
    return Components(
        config=o, device=device, seed=seed, py_rng=py_rng, encoder=encoder, decoder=decoder,
        latent_avg=avg.to(device), n_styles=n_styles, domain=domain, discriminator=discriminator, pools=pools,
        encoder_loss=encoder_loss, discriminator_loss=DiscriminatorLoss(float(o.r1), int(o.d_reg_every)),
        schedule=schedule, train_set=train_set, val_set=val_set, groups=tuple(groups),
        first_groups=first, optimizer=optimizer, d_optimizer=d_optimizer,
        scaler=torch.amp.GradScaler("cuda", enabled=bool(o.amp)), notes=tuple(notes))


def _models(plan: Plan, o: TrainConfig, files: dict[str, Path], notes: list) -> tuple[nn.Module, nn.Module, torch.Tensor, str]:
    """(encoder, decoder, latent_avg, the encoder's type: a fine-tuned checkpoint's own)."""
    resume = plan.resume_ckpt
    if resume is not None:
        sd = resume["state_dict"]
        where = str(plan.resume_path)
        decoder = build_generator(strip_prefix(sd, "decoder."), f"{where} [decoder]", resume.get(GENERATOR_CONFIG_KEY))
        encoder = ENCODERS[o.encoder_type](decoder.size, 50)
        load_strict(encoder, strip_prefix(sd, "encoder."), f"{where} [encoder]")
        avg = resume.get("latent_avg")
        return encoder, decoder, (avg if avg is not None else mean_latent(decoder)), o.encoder_type
    if "checkpoint" in files:
        path = files["checkpoint"]
        loaded = load_checkpoint(path)
        if loaded.encoder is None:
            raise TrainError(f"{named('checkpoint_path')} {path}: holds only a generator; use it as {named('stylegan_weights')}")
        if loaded.kind != o.encoder_type:
            notes.append((f"{named('checkpoint_path')} holds a {loaded.kind}; training that (not {o.encoder_type})", "warning"))
        return loaded.encoder, loaded.generator, loaded.latent_avg, loaded.kind
    path = files["stylegan"]
    try:
        decoder, avg, source = load_stylegan(path)
    except NotAGenerator as e:
        raise TrainError(f"{e}; to fine-tune it, pass it as {named('checkpoint_path')}") from None
    if source != "file":
        notes.append((f"{path} has no latent_avg; using the {source}", "info"))
    encoder = ENCODERS[o.encoder_type](decoder.size, 50)
    if "encoder_init" in files:
        init_from_ir_se50(encoder, files["encoder_init"])
    else:
        notes.append((f"{named('encoder_init')} none: the encoder backbone starts from random weights", "warning"))
    return encoder, decoder, avg, o.encoder_type


def _encoder_loss(o: TrainConfig, files: dict[str, Path], device: torch.device) -> EncoderLoss:
    lpips = identity = None
    if o.lpips_lambda > 0:
        try:
            lpips = L.build_lpips(o.lpips_type).to(device)
        except L.LossWeightsError as e:
            raise TrainError(f"{e}, or train without LPIPS: {named('lpips_lambda')} 0.") from None
    if o.id_lambda > 0:
        faces = _faces(o)
        try:
            net = load_arcface(files["identity"]) if faces else load_moco(files["identity"])
        except CheckpointError as e:
            raise TrainError(str(e)) from None
        identity = L.IdentityLoss(net, "arcface" if faces else "moco").to(device)
    return EncoderLoss(float(o.l2_lambda), float(o.lpips_lambda), float(o.id_lambda), int(o.delta_norm),
                       float(o.delta_norm_lambda), float(o.w_discriminator_lambda), lpips, identity)


def _data(o: TrainConfig, dist: Dist, domain: Domain, notes: list) -> tuple[datamod.ImageDataset, datamod.ImageDataset | None]:
    try:
        train_paths = datamod.find_images(o.data, named("data"))
        val_paths = datamod.find_images(o.val_data, named("val_data")) if o.val_data else []
    except datamod.DataError as e:
        raise TrainError(str(e)) from None
    if datamod.steps_per_epoch(len(train_paths), o.batch_size, dist.world) == 0:
        raise TrainError(f"{named('data')} {o.data}: {len(train_paths)} image(s), fewer than one batch ({named('batch_size')} "
                         f"{o.batch_size} x {dist.world} process(es)); add images or lower {named('batch_size')}")
    if val_paths and len(val_paths) < o.test_batch_size:
        raise TrainError(f"{named('val_data')} {o.val_data}: {len(val_paths)} image(s), fewer than {named('test_batch_size')} "
                         f"{o.test_batch_size}")
    if not val_paths:
        notes.append((f"no {named('val_data')}: no validation and no best_model.pt", "warning"))
    return datamod.ImageDataset(train_paths, domain), (datamod.ImageDataset(val_paths, domain) if val_paths else None)
