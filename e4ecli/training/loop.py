"""The e4e training recipe (the original `Coach`), for one process or one of many (torchrun/DDP).

`prepare(opts, overrides)` decides what the run is (fresh, resumed, fine-tuned) and reads nothing
but options and checkpoints; `Trainer(plan, dist).run()` builds everything and yields Events
(it never prints): the CLI turns them into a progress bar and a summary.

Per step s, exactly in the original's order:
  1. discriminator step (with --w-discriminator-lambda > 0): real codes = mapping(z), fake codes =
     the encoder's codes of the batch (+ latent_avg with --start-from-latent-avg: the codes the
     encoder's adversarial loss is computed on, as the original since its commit f0a8223), restricted
     to the unlocked styles, through the W pools, then style 0 -- non-saturating loss, Adam step;
     every --d-reg-every steps an R1 step (r1 / 2 * penalty * d_reg_every).
  2. encoder step: y_hat = pool(G(encoder(x) + latent_avg)) with random noise; loss =
     lambda_D * adversarial + delta_lambda * deltas + id_lambda * id + l2_lambda * l2 + lpips_lambda * lpips.
  3. images every --image-interval (and every 25 steps of the first 1000), train metrics every
     --board-interval, validation every --val-interval (best_model.pt when it improves),
     iteration_s.pt every --save-interval; then s + 1 and the progressive stage of s + 1.
Steps run from the start step to --max-steps inclusive, as in the original.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from e4ecli.domains import domain_for
from e4ecli.hub.checkpoints import (GENERATOR_CONFIG_KEY, CheckpointError, build_generator, load_checkpoint, load_strict,
                                    mean_latent, safe_load, strip_prefix)
from e4ecli.hub.networks import generator_file_config, init_from_ir_se50, load_arcface, load_moco, load_stylegan, resolve_weights
from e4ecli.models.discriminator import LatentCodesDiscriminator
from e4ecli.models.encoders import ENCODERS
from e4ecli.training import checkpoint as ckpts
from e4ecli.training import data as datamod
from e4ecli.training import losses as L
from e4ecli.training import options as optmod
from e4ecli.training import progressive as prog
from e4ecli.runtime import Dist, autocast
from e4ecli.training.logs import RunLog
from e4ecli.training.pool import LatentCodesPool

EARLY_IMAGE_STEPS, EARLY_IMAGE_EVERY = 1000, 25  # the original also logs images every 25 steps of the first 1000
SANITY_VAL_BATCHES = 5  # at step 0 the original validates up to 5 batches; reaching the 5th, it logs nothing


def _f(value: Any) -> float:
    """A loss value for logs: tensors are detached first."""
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


class TrainError(RuntimeError):
    """Training cannot start or go on; the message says why and what to do."""


# -- events ---------------------------------------------------------------------------------------------
@dataclass
class Note:
    message: str
    level: str = "info"  # "info" | "warning"
    per_rank: bool = False  # about this process's own data (other notes are the same on every rank)


@dataclass
class FileSkipped(Note):
    """A training or validation image that could not be read (a Note, so it is shown like one)."""

    path: str = ""


@dataclass
class Started:
    step: int
    max_steps: int
    stage: int | None
    n_styles: int
    n_train: int
    n_val: int
    world: int
    device: str
    resumed_from: str | None


@dataclass
class StepDone:
    step: int
    stage: int | None
    losses: dict[str, float]
    seconds: float


@dataclass
class StageChanged:
    step: int
    stage: int


@dataclass
class Validated:
    step: int
    losses: dict[str, float]
    best: bool


@dataclass
class Saved:
    step: int
    path: Path
    best: bool


@dataclass
class Finished:
    step: int
    best_val_loss: float | None
    steps_run: int
    seconds: float


# -- what the run is ---------------------------------------------------------------------------------
@dataclass
class Plan:
    opts: dict[str, Any]
    resume_path: Path | None = None
    resume_ckpt: dict | None = None
    full_resume: bool = False  # --resume: restore everything; else --resume-training-from-ckpt semantics
    notes: list[str] = field(default_factory=list)
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    purge_logs: bool = False  # a fresh start over the logs of a run killed before its first checkpoint


def prepare(opts: dict[str, Any], overrides: set[str]) -> Plan:
    """Resolve a run from merged options: fresh start, --resume (newest complete checkpoint in
    --exp-dir) or --resume-training-from-ckpt. Reads, never writes. Raises TrainError/OptionsError."""
    resuming = bool(opts.get("resume") or opts.get("resume_training_from_ckpt"))
    problems = optmod.check(opts)
    if resuming:  # the other options may come from the checkpoint: checked once merged
        problems = [p for p in problems if p.startswith(("--exp-dir", "--resume"))]
    if problems:
        raise optmod.OptionsError("; ".join(problems))
    exp_dir = Path(opts["exp_dir"])
    ckpt_dir = exp_dir / "checkpoints"
    if opts.get("resume"):
        path, ckpt, notes = ckpts.newest_resumable(ckpt_dir)
        if path is None:
            if _checkpoint_files(ckpt_dir):
                raise TrainError(f"--resume: {ckpt_dir} has no complete iteration_N.pt checkpoint with training state"
                                 + (f" ({'; '.join(notes)})" if notes else "") + "; start a new run in another --exp-dir")
            return _checked(Plan(dict(opts), notes=[f"--resume: no checkpoint in {exp_dir} yet; starting the run from step 0"],
                                 purge_logs=True))
        merged, changed = optmod.for_resume(_stored_opts(ckpt, path), opts, overrides)
        return _checked(Plan(merged, path, ckpt, True, notes, changed))
    if opts.get("resume_training_from_ckpt"):
        path = Path(opts["resume_training_from_ckpt"])
        ckpt = safe_load(path)
        if not ckpts.has_training_state(ckpt):
            raise TrainError(f"--resume-training-from-ckpt {path}: the file holds no training state (global_step, "
                             "optimizer); fine-tune it with --checkpoint-path instead")
        merged, changed = optmod.for_resume(_stored_opts(ckpt, path), opts, overrides)
        if merged.get("sub_exp_dir"):
            merged["exp_dir"] = str(Path(merged["exp_dir"]) / merged["sub_exp_dir"])
        plan = _checked(Plan(merged, path, ckpt, False, [], changed))
        _refuse_existing_run(Path(plan.opts["exp_dir"]))
        return plan
    _refuse_existing_run(exp_dir)
    if (exp_dir / "metrics.jsonl").exists():  # logs of a run stopped before its first checkpoint: nothing to keep
        return Plan(dict(opts), notes=[f"{exp_dir} holds only the logs of a run stopped before its first checkpoint; starting afresh"],
                    purge_logs=True)
    return Plan(dict(opts))


def _stored_opts(ckpt: dict, path: Path) -> dict:
    stored = ckpt.get("opts")
    if not isinstance(stored, dict):
        raise TrainError(f"{path}: the checkpoint has no 'opts' dict to resume with")
    return stored


def _checked(plan: Plan) -> Plan:
    problems = optmod.check(plan.opts)
    if problems:
        raise optmod.OptionsError("; ".join(problems))
    return plan


def _checkpoint_files(ckpt_dir: Path) -> list[Path]:
    """Checkpoint files of a run; the hidden temp file of a save cut short by a kill does not count."""
    return [p for p in ckpt_dir.glob("*.pt") if not p.name.startswith(".")] if ckpt_dir.is_dir() else []


def _refuse_existing_run(exp_dir: Path) -> None:
    if _checkpoint_files(exp_dir / "checkpoints"):
        raise TrainError(f"{exp_dir} already holds a training run (checkpoints): continue it with "
                         "--resume, or choose a new --exp-dir")


def make_optimizer(name: str, param_groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """'adam' (torch) or 'ranger' (pytorch-optimizer) configured as the original's Ranger 20.4.11:
    RAdam + Lookahead + gradient centralisation, betas (0.95, 0.999), eps 1e-5, alpha 0.5, k 6,
    plain momentum steps while the variance is not yet tractable (N_sma <= 5), GC on conv and fc weights."""
    if name == "adam":
        return torch.optim.Adam(param_groups, lr=lr)
    from pytorch_optimizer import Ranger

    return Ranger(param_groups, lr=lr, betas=(0.95, 0.999), alpha=0.5, k=6, n_sma_threshold=5, degenerated_to_sgd=True,
                  weight_decay=0.0, use_gc=True, gc_conv_only=False, eps=1e-5)


# -- the trainer -------------------------------------------------------------------------------------
class _Synthesis(nn.Module):
    """G.synthesis with fresh noise per call (the original trains with randomize_noise=True): a module for DDP."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.generator.synthesis(latents, noise=[None] * self.generator.num_layers)


class Trainer:
    """One process's trainer. dist: e4ecli.runtime.Dist (a world of one outside torchrun); device: this process's."""

    def __init__(self, plan: Plan, dist: Dist, device: torch.device):
        self.plan = plan
        self.opts = plan.opts
        self.dist = dist
        self.device = torch.device(device)
        self.notes: list[Note] = [Note(n, "warning") for n in plan.notes]

    # -- set-up ------------------------------------------------------------------------------------
    def setup(self) -> None:
        o = self.opts
        if o["amp"] and self.device.type != "cuda":
            raise TrainError(f"--amp needs a CUDA device (this run uses {self.device}); drop --amp")
        self.seed = int(o["seed"])
        torch.manual_seed(self.seed)
        self.py_rng = random.Random(self.seed)
        self._build_models()
        self._build_losses()
        self.domain = domain_for(o["dataset_type"], o["input_size"])
        self._build_data()
        try:
            self.schedule = prog.build_schedule(o["progressive_steps"], o["progressive_start"], o["progressive_step_every"], self.n_styles)
        except prog.ScheduleError as e:
            raise TrainError(str(e)) from None
        if self.schedule is not None:
            o["progressive_steps"] = list(self.schedule)  # the original stores the expanded list too
        self.start_step = 0
        self.best_val_loss: float | None = None
        self._build_optimizers()
        if self.plan.resume_ckpt is not None:
            self._restore(self.plan.resume_ckpt)
        self.encoder.train()
        self.decoder.train()
        # Each rank draws its own z, noise and pool choices from here on; (ranks restored from a checkpoint keep theirs).
        if self.dist.world > 1 and not self._rng_restored:
            torch.manual_seed(self.seed + 1_000_003 * self.dist.rank)
            self.py_rng.seed(self.seed + 1_000_003 * self.dist.rank)
        self._wrap_ddp()
        purge = self.start_step if self.plan.resume_ckpt is not None else (0 if self.plan.purge_logs else None)
        self.log = RunLog(Path(o["exp_dir"]), purge_step=purge) if self.dist.is_main else None
        if self.log is not None and self.log.note:
            self.notes.append(Note(self.log.note, "warning"))

    def _weights(self, spec: str, what: str, flag: str, alternative: str | None = None) -> Path:
        try:
            return resolve_weights(spec, what, flag, alternative)
        except CheckpointError as e:
            raise TrainError(str(e)) from None

    def _build_models(self) -> None:
        o = self.opts
        resume = self.plan.resume_ckpt
        if resume is not None:
            sd = resume["state_dict"]
            where = str(self.plan.resume_path)
            decoder = build_generator(strip_prefix(sd, "decoder."), f"{where} [decoder]", resume.get(GENERATOR_CONFIG_KEY))
            encoder = ENCODERS[o["encoder_type"]](decoder.size, 50)
            load_strict(encoder, strip_prefix(sd, "encoder."), f"{where} [encoder]")
            avg = resume.get("latent_avg")
            if avg is None:
                avg = mean_latent(decoder)
        elif o["checkpoint_path"]:
            path = self._weights(o["checkpoint_path"], "the e4e checkpoint to fine-tune", "--checkpoint-path")
            loaded = load_checkpoint(path)
            if loaded.encoder is None:
                raise TrainError(f"--checkpoint-path {path}: holds only a generator; use it as --stylegan-weights")
            if loaded.kind != o["encoder_type"]:
                self.notes.append(Note(f"--checkpoint-path holds a {loaded.kind}; training that (not {o['encoder_type']})", "warning"))
                o["encoder_type"] = loaded.kind
            encoder, decoder, avg = loaded.encoder, loaded.generator, loaded.latent_avg
        else:
            path = self._weights(o["stylegan_weights"], "the StyleGAN2 generator", "--stylegan-weights")
            decoder, avg, source = load_stylegan(path)
            if source != "file":
                self.notes.append(Note(f"{path} has no latent_avg; using the {source}"))
            encoder = ENCODERS[o["encoder_type"]](decoder.size, 50)
            init = o["encoder_init"]
            if init and init.lower() != "none":
                init_path = self._weights(init, "the IR-SE50 weights that initialise the encoder backbone", "--encoder-init",
                                          "--encoder-init none starts from a random backbone (much worse results)")
                init_from_ir_se50(encoder, init_path)
            else:
                self.notes.append(Note("--encoder-init none: the encoder backbone starts from random weights", "warning"))
        if o["stylegan_size"] and int(o["stylegan_size"]) != decoder.size:
            raise TrainError(f"--stylegan-size {o['stylegan_size']} but the generator weights are for {decoder.size} px; "
                             "omit --stylegan-size to take it from the file")
        o["stylegan_size"] = decoder.size
        self.n_styles = decoder.n_latent
        if getattr(encoder, "style_count", self.n_styles) != self.n_styles:
            raise TrainError(f"the encoder predicts {encoder.style_count} styles but the generator takes {self.n_styles}")
        avg = avg.float().reshape(-1, decoder.style_dim)
        if avg.shape[0] == 1:
            avg = avg.repeat(self.n_styles, 1)
        self.encoder = encoder.to(self.device)
        self.decoder = decoder.to(self.device)
        self.latent_avg = avg.to(self.device)  # (n_styles, 512)
        if not o["train_decoder"]:
            self.decoder.requires_grad_(False)
        self.discriminator = None
        if o["w_discriminator_lambda"] > 0:
            self.discriminator = LatentCodesDiscriminator(decoder.style_dim, 4).to(self.device)
            self.real_w_pool = LatentCodesPool(o["w_pool_size"], self.py_rng)
            self.fake_w_pool = LatentCodesPool(o["w_pool_size"], self.py_rng)

    def _build_losses(self) -> None:
        o = self.opts
        self.lpips = None
        if o["lpips_lambda"] > 0:
            try:
                self.lpips = L.build_lpips(o["lpips_type"]).to(self.device)
            except L.LossWeightsError as e:
                raise TrainError(f"{e}, or train without LPIPS: --lpips-lambda 0.") from None
        self.id_loss = None
        if o["id_lambda"] > 0:
            faces = domain_for(o["dataset_type"]).is_face
            spec = o["id_weights"] or ("ir_se50" if faces else "moco_v2_resnet50")
            what = "the ArcFace network of the identity loss" if faces else "the MoCo v2 network of the similarity loss"
            path = self._weights(spec, what, "--id-weights", "--id-lambda 0 trains without it")
            try:
                net = load_arcface(path) if faces else load_moco(path)
            except CheckpointError as e:
                raise TrainError(str(e)) from None
            self.id_loss = L.IdentityLoss(net, "arcface" if faces else "moco").to(self.device)

    def _build_data(self) -> None:
        o = self.opts
        try:
            train_paths = datamod.find_images(o["data"], "--data")
            val_paths = datamod.find_images(o["val_data"], "--val-data") if o["val_data"] else []
        except datamod.DataError as e:
            raise TrainError(str(e)) from None
        world = self.dist.world
        if datamod.steps_per_epoch(len(train_paths), o["batch_size"], world) == 0:
            raise TrainError(f"--data {o['data']}: {len(train_paths)} image(s), fewer than one batch "
                             f"(--batch-size {o['batch_size']} x {world} process(es)); add images or lower --batch-size")
        if val_paths and len(val_paths) < o["test_batch_size"]:
            raise TrainError(f"--val-data {o['val_data']}: {len(val_paths)} image(s), fewer than --test-batch-size {o['test_batch_size']}")
        if not val_paths:
            self.notes.append(Note("no --val-data: no validation and no best_model.pt", "warning"))
        self.train_set = datamod.ImageDataset(train_paths, self.domain)
        self.val_set = datamod.ImageDataset(val_paths, self.domain) if val_paths else None
        self.reported_bad: set[str] = set()

    def _build_optimizers(self) -> None:
        o = self.opts
        if self.schedule is not None:
            self.groups = prog.encoder_param_groups(self.encoder)
        else:
            self.groups = [("encoder", list(self.encoder.parameters()))]
        if o["train_decoder"]:
            self.groups.insert(1, ("decoder", list(self.decoder.parameters())))
        first_stage = 0
        if self.plan.resume_ckpt is not None and self.schedule is not None:
            first_stage = prog.stage_at(self.schedule, int(self.plan.resume_ckpt["global_step"]))
        n_active = self._n_groups(first_stage)
        active = self.groups[:n_active]
        self.optimizer = make_optimizer(o["optim_name"], [{"params": ps, "name": name} for name, ps in active], o["learning_rate"])
        self.n_active_groups = n_active
        self.d_optimizer = None
        if self.discriminator is not None:
            self.d_optimizer = torch.optim.Adam(list(self.discriminator.parameters()), lr=o["w_discriminator_lr"])
        self.scaler = torch.amp.GradScaler("cuda", enabled=bool(o["amp"]))

    def _n_groups(self, stage: int) -> int:
        """How many optimiser groups train at `stage` (all of them without progressive training)."""
        if self.schedule is None:
            return len(self.groups)
        return stage + 1 + (1 if self.opts["train_decoder"] else 0)

    def _restore(self, ckpt: dict) -> None:
        """Continue from a checkpoint with training state (weights were loaded in _build_models)."""
        o = self.opts
        self._rng_restored = False
        self.start_step = int(ckpt["global_step"]) + 1
        self.best_val_loss = ckpt.get("best_val_loss")
        full = self.plan.full_resume
        if full or o["keep_optimizer"]:
            self._restore_optimizer(ckpt["optimizer"])
        if self.discriminator is not None and "discriminator_state_dict" in ckpt:
            self.discriminator.load_state_dict(ckpt["discriminator_state_dict"])
            self.d_optimizer.load_state_dict(ckpt["discriminator_optimizer_state_dict"])
        elif self.discriminator is not None:
            self.notes.append(Note("the checkpoint has no discriminator state: the discriminator starts afresh", "warning"))
        state = ckpt.get(ckpts.TRAINING_KEY)
        if not full or not isinstance(state, dict):
            return
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        ranks = state.get("ranks") or []
        if len(ranks) != self.dist.world:
            self.notes.append(Note(f"the checkpoint was written by {len(ranks)} process(es), this run has {self.dist.world}: "
                                   "random streams and W pools start afresh (training goes on, not bit-identically)", "warning"))
            return
        mine = ranks[self.dist.rank]
        ckpts.set_rng_state(mine["rng"], self.device, self.py_rng)
        self._rng_restored = True
        if self.discriminator is not None and mine.get("pools"):
            self.real_w_pool.load_state_dict(mine["pools"]["real"], self.device)
            self.fake_w_pool.load_state_dict(mine["pools"]["fake"], self.device)

    _rng_restored = False

    def _flat_params(self) -> list[nn.Parameter]:
        """The parameters in the original's optimiser order: encoder, then decoder with --train-decoder."""
        return list(self.encoder.parameters()) + (list(self.decoder.parameters()) if self.opts["train_decoder"] else [])

    def _restore_optimizer(self, saved: dict) -> None:
        where = self.plan.resume_path
        groups = saved.get("param_groups") if isinstance(saved, dict) else None
        if groups and all("name" in g for g in groups):  # one group per style: written by e4ecli before format 2
            try:
                self.optimizer.load_state_dict(saved)
            except (ValueError, KeyError) as e:
                raise TrainError(f"{where}: the optimiser state does not fit this run ({e}); were --optim-name, "
                                 "--train-decoder or the progressive schedule changed?") from None
            return
        pending = [p for _, ps in self.groups[self.n_active_groups:] for p in ps]
        try:
            ckpts.optimizer_from_original(self.optimizer, saved, self._flat_params(), pending)
        except ckpts.OptimizerLayoutError as e:
            raise TrainError(f"{where}: the optimiser state does not fit this run: {e}") from None

    def _wrap_ddp(self) -> None:
        self.enc_fwd: nn.Module = self.encoder
        self.synth: nn.Module = _Synthesis(self.decoder)
        self.d_fwd: nn.Module | None = self.discriminator
        if self.dist.world <= 1:
            return
        import warnings

        from torch.nn.parallel import DistributedDataParallel as DDP

        # R1's double backward hands DDP the (1, 512) last-layer gradient with other strides: harmless, noisy
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")

        ids = [self.device.index] if self.device.type == "cuda" else None
        self.enc_fwd = DDP(self.encoder, device_ids=ids, find_unused_parameters=self.schedule is not None)
        if self.opts["train_decoder"]:
            # the mapping network takes no part in W+ synthesis; the noise buffers are constants
            self.synth = DDP(self.synth, device_ids=ids, find_unused_parameters=True, broadcast_buffers=False)
        if self.discriminator is not None:
            self.d_fwd = DDP(self.discriminator, device_ids=ids)

    # -- progressive stages -------------------------------------------------------------------------
    @property
    def stage(self) -> int | None:
        return self.encoder.progressive_stage if self.schedule is not None else None

    def _apply_stage(self, step: int) -> bool:
        """Set the encoder's stage for `step`; newly unlocked styles join the optimiser. True if it changed."""
        if self.schedule is None:
            return False
        stage = prog.stage_at(self.schedule, step)
        changed = stage != self.encoder.progressive_stage
        self.encoder.set_progressive_stage(stage)
        want = self._n_groups(stage)
        while self.n_active_groups < want:
            name, ps = self.groups[self.n_active_groups]
            self.optimizer.add_param_group({"params": ps, "name": name})
            self.n_active_groups += 1
        return changed

    # -- the step ------------------------------------------------------------------------------------
    def _autocast(self):
        return autocast(self.device, "fp16" if self.opts["amp"] else "fp32")

    def forward(self, x: torch.Tensor, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, 3, H, W) -> (y_hat (N, 3, H, W) framed like x, latents (N, n_styles, 512))."""
        codes = (self.enc_fwd if train else self.encoder)(x)
        latents = codes + self.latent_avg.to(codes.dtype) if self.opts["start_from_latent_avg"] else codes
        images = (self.synth if train else self.synth_eval)(latents)
        h, w = self.domain.input_size
        y_hat = self.domain.crop(F.adaptive_avg_pool2d(images, (w, w)))
        return y_hat, latents

    def synth_eval(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (N, n_styles, 512) -> images (N, 3, S, S), fresh noise, outside DDP (validation)."""
        return self.decoder.synthesis(latents, noise=[None] * self.decoder.num_layers)

    def dims_to_discriminate(self) -> list[int]:
        if self.schedule is not None:
            return prog.dims_to_discriminate(self.encoder.progressive_stage)
        return list(range(self.n_styles))

    def calc_loss(self, x: torch.Tensor, y: torch.Tensor, y_hat: torch.Tensor, latents: torch.Tensor) -> tuple[torch.Tensor, dict[str, float], list | None]:
        o = self.opts
        loss_dict: dict[str, float] = {}
        loss: Any = 0.0
        id_logs = None
        if self.discriminator is not None:
            loss_disc = L.encoder_discriminator_loss(self.discriminator, latents.float(), self.dims_to_discriminate())
            loss_dict["encoder_discriminator_loss"] = _f(loss_disc)
            loss = loss + o["w_discriminator_lambda"] * loss_disc
        if self.schedule is not None and self.encoder.progressive_stage < self.n_styles:
            total, per = L.delta_losses(latents.float(), self.encoder.progressive_stage, o["delta_norm"])
            for i, d in enumerate(per, start=1):
                loss_dict[f"delta{i}_loss"] = _f(d)
            loss_dict["total_delta_loss"] = _f(total)
            loss = loss + o["delta_norm_lambda"] * total
        if self.id_loss is not None:
            loss_id, improvement, id_logs = self.id_loss(y_hat, y, x)
            loss_dict["loss_id"] = _f(loss_id)
            loss_dict["id_improve"] = _f(improvement)
            loss = loss + loss_id * o["id_lambda"]
        if o["l2_lambda"] > 0:
            loss_l2 = L.l2_loss(y_hat.float(), y)
            loss_dict["loss_l2"] = _f(loss_l2)
            loss = loss + loss_l2 * o["l2_lambda"]
        if self.lpips is not None:
            loss_lpips = self.lpips(y_hat, y)
            loss_dict["loss_lpips"] = _f(loss_lpips)
            loss = loss + loss_lpips * o["lpips_lambda"]
        loss_dict["loss"] = _f(loss)
        return loss, loss_dict, id_logs

    @torch.no_grad()
    def sample_real_and_fake(self, x: torch.Tensor, pools: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(real codes (B, 512) from the mapping network, fake codes (N, 512) from the encoder), as the original.

        pools=False (validation): the W pools are neither queried nor changed, so validating never alters training.
        """
        z = torch.randn(self.opts["batch_size"], self.decoder.style_dim, device=self.device)
        real_w = self.decoder.mapping(z)
        fake_w = self.encoder(x)
        if self.opts["start_from_latent_avg"]:  # the codes the encoder is judged on (the original's fix f0a8223)
            fake_w = fake_w + self.latent_avg.to(fake_w.dtype)
        if self.schedule is not None:
            fake_w = fake_w[:, self.dims_to_discriminate(), :]
        if self.opts["use_w_pool"] and pools:
            real_w = self.real_w_pool.query(real_w)
            fake_w = self.fake_w_pool.query(fake_w)
        if fake_w.ndim == 3:
            fake_w = fake_w[:, 0, :]
        return real_w, fake_w

    def train_discriminator(self, x: torch.Tensor, step: int) -> dict[str, float]:
        o = self.opts
        loss_dict: dict[str, float] = {}
        self.discriminator.requires_grad_(True)
        real_w, fake_w = self.sample_real_and_fake(x)
        pred = self.d_fwd(torch.cat([real_w, fake_w]))  # one pass for both (one DDP forward per backward)
        real_pred, fake_pred = pred[: len(real_w)], pred[len(real_w):]
        real_loss, fake_loss = L.discriminator_losses(real_pred, fake_pred)
        loss = real_loss + fake_loss
        loss_dict["d_real_loss"] = _f(real_loss)
        loss_dict["d_fake_loss"] = _f(fake_loss)
        loss_dict["discriminator_loss"] = _f(loss)
        self.d_optimizer.zero_grad()
        loss.backward()
        self.d_optimizer.step()
        if step % o["d_reg_every"] == 0:
            real_w = real_w.detach().requires_grad_(True)
            real_pred = self.d_fwd(real_w)
            r1_loss = L.r1_penalty(real_pred, real_w)
            self.discriminator.zero_grad()
            r1_final = o["r1"] / 2 * r1_loss * o["d_reg_every"] + 0 * real_pred[0]
            r1_final.backward()
            self.d_optimizer.step()
            loss_dict["discriminator_r1_loss"] = _f(r1_final)
        self.discriminator.requires_grad_(False)
        return loss_dict

    def train_step(self, x: torch.Tensor, step: int) -> tuple[dict[str, float], torch.Tensor]:
        loss_dict: dict[str, float] = {}
        if self.discriminator is not None:
            loss_dict = self.train_discriminator(x, step)
        with self._autocast():
            y_hat, latents = self.forward(x, train=True)
            loss, enc_dict, _ = self.calc_loss(x, x, y_hat, latents)
        loss_dict = {**loss_dict, **enc_dict}
        self.optimizer.zero_grad()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss_dict, y_hat.detach()

    # -- validation ------------------------------------------------------------------------------------
    @torch.no_grad()
    def validate_discriminator(self, x: torch.Tensor) -> dict[str, float]:
        real_w, fake_w = self.sample_real_and_fake(x, pools=False)
        real_loss, fake_loss = L.discriminator_losses(self.discriminator(real_w), self.discriminator(fake_w))
        return {"d_real_loss": _f(real_loss), "d_fake_loss": _f(fake_loss), "discriminator_loss": _f(real_loss + fake_loss)}

    def validate(self, step: int) -> dict[str, float] | None:
        """Mean of each loss over the validation batches of all ranks.

        At step 0 the original validates at most 5 batches as a sanity check and returns None when it
        reached the 5th (so with fewer batches it logs and may write best_model.pt at step 0). Validation
        draws from its own random stream (seeded by seed, step and rank) and leaves the W pools alone: a
        run that stops at --max-steps (validating there) resumes exactly as one that was interrupted.
        """
        if self.dist.world > 1:  # every rank validates with rank 0's BatchNorm statistics, the ones checkpoints keep
            for b in self.encoder.buffers():
                torch.distributed.broadcast(b, 0)
        sanity = step == 0 and len(self.val_set) // self.opts["test_batch_size"] >= SANITY_VAL_BATCHES
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed((self.seed * 1_000_003 + step * 7919 + self.dist.rank + 1) % 2**63)
            sums = self._validation_sums(step, sanity)
        if sanity:
            return None
        merged: dict[str, list[float]] = {}
        for part in self.dist.gather(sums):
            for k, (s, n) in part.items():
                acc = merged.setdefault(k, [0.0, 0])
                acc[0] += s
                acc[1] += n
        return {k: s / n for k, (s, n) in merged.items() if n}

    def _validation_sums(self, step: int, sanity: bool) -> dict[str, list[float]]:
        self.encoder.eval()
        sums: dict[str, list[float]] = {}
        batches = datamod.val_batches(len(self.val_set), self.opts["test_batch_size"], self.dist.rank, self.dist.world)
        if sanity:
            batches = [b for j, b in enumerate(batches) if self.dist.rank + self.dist.world * j < SANITY_VAL_BATCHES]
        for j, (x, bad) in enumerate(datamod.loader(self.val_set, batches, self.opts["test_workers"])):
            self._report_bad(bad)
            x = x.to(self.device, non_blocking=True).float()
            cur: dict[str, float] = {}
            if self.discriminator is not None:
                cur.update(self.validate_discriminator(x))
            with torch.no_grad(), self._autocast():
                y_hat, latents = self.forward(x, train=False)
                _, enc_dict, _ = self.calc_loss(x, x, y_hat, latents)
            cur.update(enc_dict)
            for k, v in cur.items():
                acc = sums.setdefault(k, [0.0, 0])
                acc[0] += v
                acc[1] += 1
            if self.log is not None:
                self.log.images("images/test/faces", step, x, y_hat, subscript=f"{self.dist.rank + self.dist.world * j:04d}")
        self.encoder.train()
        return sums

    # -- checkpoints ------------------------------------------------------------------------------------
    def _rank_state(self) -> dict:
        state: dict[str, Any] = {"rng": ckpts.rng_state(self.device, self.py_rng)}
        if self.discriminator is not None:
            state["pools"] = {"real": self.real_w_pool.state_dict(), "fake": self.fake_w_pool.state_dict()}
        return state

    def _payload(self, step: int, training_state: bool, ranks: list[dict]) -> dict:
        sd = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        sd.update({f"decoder.{k}": v for k, v in self.decoder.state_dict().items()})
        payload: dict[str, Any] = {"state_dict": sd, "opts": dict(self.opts)}
        config = generator_file_config(self.decoder)
        if config is not None:  # a generator rosinality's code cannot express: how to rebuild it
            payload[GENERATOR_CONFIG_KEY] = config
        if self.opts["start_from_latent_avg"]:
            payload["latent_avg"] = self.latent_avg.detach().cpu()
        if training_state:
            payload["global_step"] = step
            payload["optimizer"] = ckpts.optimizer_to_original(self.optimizer, self._flat_params())  # the original's layout
            payload["best_val_loss"] = self.best_val_loss
            if self.discriminator is not None:
                payload["discriminator_state_dict"] = self.discriminator.state_dict()
                payload["discriminator_optimizer_state_dict"] = self.d_optimizer.state_dict()
            payload[ckpts.TRAINING_KEY] = {
                "version": ckpts.FORMAT_VERSION,
                "world_size": self.dist.world,
                "progressive_stage": self.stage,
                "param_groups": [name for name, _ in self.groups[: self.n_active_groups]],
                "ranks": ranks,
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            }
        return payload

    def checkpoint(self, step: int, loss_dict: dict[str, float], best: bool) -> Path | None:
        """Write best_model.pt or iteration_<step>.pt (rank 0; every rank must call: it gathers rank state)."""
        ranks = self.dist.gather(self._rank_state())
        if self.log is None:
            return None
        training_state = (not best) or bool(self.opts["save_training_data"])
        path = Path(self.opts["exp_dir"]) / "checkpoints" / ("best_model.pt" if best else f"iteration_{step}.pt")
        ckpts.save(path, self._payload(step, training_state, ranks))
        if best:
            self.log.timestamp(f"**Best**: Step - {step}, Loss - {self.best_val_loss:.3f} \n{loss_dict}\n")
        else:
            self.log.timestamp(f"Step - {step}, \n{loss_dict}\n")
        return path

    # -- the loop ---------------------------------------------------------------------------------------
    def _report_bad(self, bad: list[tuple[str, str]]) -> None:
        for path, why in bad:
            if path not in self.reported_bad:
                self.reported_bad.add(path)
                self.notes.append(FileSkipped(f"{path}: skipped, {why}", "warning", per_rank=True, path=str(path)))

    def _drain_notes(self) -> Iterator[Note]:
        while self.notes:
            yield self.notes.pop(0)

    def _write_opts(self) -> None:
        from e4ecli.files.batch import write_text

        write_text(Path(self.opts["exp_dir"]) / "opt.json", optmod.to_json(self.opts))

    def run(self) -> Iterator[Any]:
        """Set up, then train from the start step to --max-steps, yielding Events."""
        started = time.perf_counter()
        self.setup()
        o = self.opts
        o["device"] = str(self.device)
        if self.log is not None:
            (Path(o["exp_dir"]) / "checkpoints").mkdir(parents=True, exist_ok=True)
            self._write_opts()
        yield from self._drain_notes()
        step = self.start_step
        self._apply_stage(step)
        max_steps = int(o["max_steps"])
        if step > max_steps:
            self.notes.append(Note(f"nothing to do: the run already reached --max-steps {max_steps} (raise it to train on)"))
            yield from self._drain_notes()
        save_interval = int(o["save_interval"] or max_steps or 1)
        spe = datamod.steps_per_epoch(len(self.train_set), o["batch_size"], self.dist.world)
        yield Started(step, max_steps, self.stage, self.n_styles, len(self.train_set), len(self.val_set) if self.val_set else 0,
                      self.dist.world, str(self.device), str(self.plan.resume_path) if self.plan.resume_path else None)
        steps_run = 0
        try:
            while step <= max_steps:
                epoch, offset = divmod(step, spe)
                batches = datamod.train_batches(len(self.train_set), o["batch_size"], self.dist.rank, self.dist.world,
                                                self.seed, epoch, offset)
                for x, bad in datamod.loader(self.train_set, batches, o["workers"], pin_memory=self.device.type == "cuda"):
                    self._report_bad(bad)
                    x = x.to(self.device, non_blocking=True).float()
                    t0 = time.perf_counter()
                    loss_dict, y_hat = self.train_step(x, step)
                    steps_run += 1
                    if not math.isfinite(loss_dict.get("loss", 0.0)):
                        raise TrainError(f"step {step}: the loss is {loss_dict['loss']} (diverged); lower --learning-rate "
                                         "or resume from an earlier checkpoint")
                    yield from self._drain_notes()
                    yield StepDone(step, self.stage, loss_dict, time.perf_counter() - t0)
                    yield from self._after_step(step, max_steps, save_interval, x, y_hat, loss_dict)
                    if step == max_steps:
                        break
                    step += 1
                    if self._apply_stage(step):
                        yield StageChanged(step, self.encoder.progressive_stage)
                else:
                    continue
                break
        finally:
            if self.log is not None:
                self.log.close()
        yield from self._drain_notes()
        yield Finished(step if steps_run else self.start_step - 1, self.best_val_loss, steps_run, time.perf_counter() - started)

    def _after_step(self, step: int, max_steps: int, save_interval: int, x: torch.Tensor, y_hat: torch.Tensor,
                    loss_dict: dict[str, float]) -> Iterator[Any]:
        o = self.opts
        stage = self.stage if self.stage is not None else self.n_styles
        if self.log is not None:
            if step % o["image_interval"] == 0 or (step < EARLY_IMAGE_STEPS and step % EARLY_IMAGE_EVERY == 0):
                self.log.images("images/train/faces", step, x, y_hat)
            if step % o["board_interval"] == 0:
                self.log.metrics("train", step, stage, loss_dict)
        val_loss_dict = None
        if self.val_set is not None and (step % o["val_interval"] == 0 or step == max_steps):
            val_loss_dict = self.validate(step)
            yield from self._drain_notes()
            if val_loss_dict:
                if self.log is not None:
                    self.log.metrics("val", step, stage, val_loss_dict)
                best = self.best_val_loss is None or val_loss_dict["loss"] < self.best_val_loss
                if best:
                    self.best_val_loss = val_loss_dict["loss"]
                yield Validated(step, val_loss_dict, best)
                if best:
                    path = self.checkpoint(step, val_loss_dict, best=True)
                    if path is not None:
                        yield Saved(step, path, True)
        if step % save_interval == 0 or step == max_steps:
            path = self.checkpoint(step, val_loss_dict if val_loss_dict is not None else loss_dict, best=False)
            if path is not None:
                yield Saved(step, path, False)


def train(plan: Plan, dist: Dist, device: torch.device) -> Iterator[Any]:
    """Run one process's share of training; yields Note/Started/StepDone/StageChanged/Validated/Saved/Finished."""
    return Trainer(plan, dist, device).run()
