"""The e4e training loop (the original `Coach`), for one process or one of many (torchrun/DDP).

`plan.prepare(options, overrides)` decides what the run is; `build.build` makes its components;
`Trainer(plan, dist, device).run()` keeps the schedule, validation and checkpoints and yields Events
(it never prints): the CLI turns them into a progress bar and a summary.

Per step s, exactly in the original's order:
  1. discriminator step (with --w-discriminator-lambda > 0): real codes = mapping(z), fake codes =
     the encoder's codes of the batch (+ latent_avg with --start-from-latent-avg: the codes the
     encoder's adversarial loss is computed on, as the original since its commit f0a8223), restricted
     to the unlocked styles, through the W pools, then style 0 -- non-saturating loss, Adam step;
     every --d-reg-every steps an R1 step (r1 / 2 * penalty * d_reg_every)
     [discriminator_step: the steps; loss.DiscriminatorLoss: the losses, accumulated]
  2. encoder step: y_hat = pool(G(encoder(x) + latent_avg)) with random noise; loss =
     lambda_D * adversarial + delta_lambda * deltas + id_lambda * id + l2_lambda * l2 + lpips_lambda * lpips
     [loss.EncoderLoss; Trainer.train_step: backward (through the AMP scaler) and the step]
  3. images every --image-interval (and every 25 steps of the first 1000), train metrics every
     --board-interval, validation every --val-interval and at --max-steps (best_model.pt when it
     improves), iteration_s.pt every --save-interval and at --max-steps; then s + 1 and its stage.
Steps run from the start step to --max-steps inclusive, as in the original.

Every random draw inside a step (z, the W pools' choices, the generator's noise) goes through
`self.draws` (`draws.Draws`), the seam through which tests/test_train_replay.py replays the original's
recorded draws; runs use the default, which draws from the RNGs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from e4ecli.runtime import Dist, autocast
from e4ecli.training import checkpoint as ckpts
from e4ecli.training import data as datamod
from e4ecli.training import loss as lossmod
from e4ecli.training import options as optmod
from e4ecli.training import progressive as prog
from e4ecli.training.build import Components, build, make_optimizer  # noqa: F401  (make_optimizer: public here too)
from e4ecli.training.draws import Draws
from e4ecli.training.logs import RunLog
from e4ecli.training.plan import Plan, TrainError, prepare  # noqa: F401  (the CLI's entry points)

EARLY_IMAGE_STEPS, EARLY_IMAGE_EVERY = 1000, 25  # the original also logs images every 25 steps of the first 1000
SANITY_VAL_BATCHES = 5  # at step 0 the original validates up to 5 batches; reaching the 5th, it logs nothing


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
class StepOutput:
    """What one training step computed: the logged losses, y_hat (N, 3, H, W) and the latents fed to the generator."""

    losses: dict[str, float]
    y_hat: torch.Tensor
    latents: torch.Tensor


@dataclass
class Finished:
    step: int
    best_val_loss: float | None
    steps_run: int
    seconds: float


class _Synthesis(nn.Module):
    """G.synthesis with fresh noise per call (the original trains with randomize_noise=True): a module for DDP."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, latents: torch.Tensor, noise: list[torch.Tensor | None]) -> torch.Tensor:
        return self.generator.synthesis(latents, noise=noise)


def uses_every_parameter(encoder: nn.Module) -> bool:
    """Whether the encoder's forward at its full stage gives every parameter a gradient (DDP must otherwise look
    for unused ones). e4e feeds its fine lateral layer (latlayer2) to styles from `middle_ind` (7) on only: a
    generator of <= 16 px (<= 6 styles) never uses it."""
    from e4ecli.models.encoders import Encoder4Editing

    return not isinstance(encoder, Encoder4Editing) or encoder.style_count > encoder.middle_ind


def discriminator_step(d_forward: nn.Module, discriminator: nn.Module, optimizer: torch.optim.Optimizer,
                       loss: lossmod.DiscriminatorLoss, real_w: torch.Tensor, fake_w: torch.Tensor, r1_step: bool) -> dict[str, float]:
    """The latent discriminator's step (d_forward: it, or its DDP wrapper), as the original: an optimiser
    step on the non-saturating loss; with r1_step, a second one on the lazy R1 term. The discriminator
    takes gradients only here (frozen again for the encoder's step). Returns the logged values."""
    discriminator.requires_grad_(True)
    optimizer.zero_grad()
    values = loss.accumulate(d_forward, real_w, fake_w)
    optimizer.step()
    if r1_step:
        optimizer.zero_grad()
        values.update(loss.accumulate_r1(d_forward, real_w))
        optimizer.step()
    discriminator.requires_grad_(False)
    return values


class Trainer:
    """One process's trainer. dist: e4ecli.runtime.Dist (a world of one outside torchrun); device: this process's.

    `setup()` builds the components (`self.c`, frozen) and restores a resumed run; `run()` calls it.
    draws: where a step's random draws come from (default `Draws()`: the RNGs; a replay passes recorded ones).
    """

    def __init__(self, plan: Plan, dist: Dist, device: torch.device, draws: Draws | None = None):
        self.plan = plan
        self.draws = draws if draws is not None else Draws()
        self.dist = dist
        self.device = torch.device(device)
        self.notes: list[Note] = []
        self.c: Components | None = None
        self.log: RunLog | None = None
        self.start_step = 0
        self.best_val_loss: float | None = None
        self.n_active_groups = 0
        self.reported_bad: set[str] = set()
        self.last_iteration: Path | None = None  # the newest iteration checkpoint, the only one keeping training state

    # -- set-up ------------------------------------------------------------------------------------
    def setup(self) -> None:
        self.c = c = build(self.plan, self.dist, self.device)
        self.notes += [Note(m, level) for m, level in c.notes]
        self.n_active_groups = c.first_groups
        rng_restored = False
        if self.plan.resume_ckpt is not None:
            try:
                restored = ckpts.restore(c, self.plan.resume_ckpt, self.plan.resume_path, self.plan.full_resume,
                                         bool(c.config.keep_optimizer), self.dist)
            except ckpts.OptimizerLayoutError as e:
                raise TrainError(f"{self.plan.resume_path}: the optimiser state does not fit this run: {e}") from None
            self.start_step, self.best_val_loss, rng_restored = restored.start_step, restored.best_val_loss, restored.rng_restored
            self.notes += [Note(m, "warning") for m in restored.notes]
            if self.plan.full_resume:
                self.last_iteration = self.plan.resume_path
        c.encoder.train()
        c.decoder.train()
        # Each rank draws its own z, noise and pool choices from here on (ranks restored from a checkpoint keep theirs).
        if self.dist.world > 1 and not rng_restored:
            torch.manual_seed(c.seed + 1_000_003 * self.dist.rank)
            c.py_rng.seed(c.seed + 1_000_003 * self.dist.rank)
        self._wrap_ddp()
        purge = self.start_step if self.plan.resume_ckpt is not None else (0 if self.plan.purge_logs else None)
        self.log = RunLog(Path(c.config.exp_dir), purge_step=purge) if self.dist.is_main else None
        if self.log is not None and self.log.note:
            self.notes.append(Note(self.log.note, "warning"))

    def _wrap_ddp(self) -> None:
        c = self.c
        self.enc_fwd: nn.Module = c.encoder
        self.synth: nn.Module = _Synthesis(c.decoder)
        self.d_fwd: nn.Module | None = c.discriminator
        if self.dist.world <= 1:
            return
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        # progressive stages leave later styles unused; so does a generator of <= 16 px (e4e's fine lateral layer)
        self.enc_fwd = DDP(c.encoder, device_ids=ids, find_unused_parameters=c.schedule is not None or not uses_every_parameter(c.encoder))
        if c.config.train_decoder:
            # the mapping network takes no part in W+ synthesis; the noise buffers are constants
            self.synth = DDP(self.synth, device_ids=ids, find_unused_parameters=True, broadcast_buffers=False)
        if c.discriminator is not None:
            self.d_fwd = DDP(c.discriminator, device_ids=ids)

    # -- progressive stages -------------------------------------------------------------------------
    @property
    def stage(self) -> int | None:
        return self.c.encoder.progressive_stage if self.c.schedule is not None else None

    def _apply_stage(self, step: int) -> bool:
        """Set the encoder's stage for `step`; newly unlocked styles join the optimiser. True if it changed."""
        c = self.c
        if c.schedule is None:
            return False
        stage = prog.stage_at(c.schedule, step)
        changed = stage != c.encoder.progressive_stage
        c.encoder.set_progressive_stage(stage)
        want = c.n_groups(stage)
        while self.n_active_groups < want:
            name, ps = c.groups[self.n_active_groups]
            c.optimizer.add_param_group({"params": ps, "name": name})
            self.n_active_groups += 1
        return changed

    def dims_to_discriminate(self) -> list[int]:
        if self.c.schedule is not None:
            return prog.dims_to_discriminate(self.c.encoder.progressive_stage)
        return list(range(self.c.n_styles))

    # -- the step ------------------------------------------------------------------------------------
    def _autocast(self):
        return autocast(self.device, "fp16" if self.c.config.amp else "fp32")

    def forward(self, x: torch.Tensor, train: bool, step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, 3, H, W) -> (y_hat (N, 3, H, W) framed like x, latents (N, n_styles, 512))."""
        c = self.c
        codes = (self.enc_fwd if train else c.encoder)(x)
        latents = codes + c.latent_avg.to(codes.dtype) if c.config.start_from_latent_avg else codes
        if train:
            images = self.synth(latents, self.draws.noise(step, c.decoder.num_layers))
        else:
            images = self._synth_eval(latents)
        return c.domain.encoder_frame(images), latents

    def _synth_eval(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (N, n_styles, 512) -> images (N, 3, S, S), fresh noise, outside DDP (validation)."""
        return self.c.decoder.synthesis(latents, noise=[None] * self.c.decoder.num_layers)

    def encoder_loss(self, x: torch.Tensor, y_hat: torch.Tensor, latents: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.c
        stage = c.encoder.progressive_stage
        delta_stage = stage if c.schedule is not None and stage < c.n_styles else None
        return c.encoder_loss(x, y_hat, latents, c.discriminator, self.dims_to_discriminate(), delta_stage)

    def sample_codes(self, x: torch.Tensor, pools: bool = True, step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(real codes, fake codes) for the discriminator; pools=False (validation) leaves the W pools alone
        and draws z from the RNG (validation's own stream), not from `self.draws`."""
        c = self.c
        return lossmod.sample_codes(c.decoder, c.encoder, x, int(c.config.batch_size),
                                    c.latent_avg if c.config.start_from_latent_avg else None,
                                    self.dims_to_discriminate() if c.schedule is not None else None, c.pools if pools else None,
                                    self.draws if pools else None, step)

    def train_step(self, x: torch.Tensor, step: int) -> StepOutput:
        """One training step on batch x (N, 3, H, W): the discriminator's (with R1 when due), then the encoder's."""
        c = self.c
        values: dict[str, float] = {}
        if c.discriminator is not None:
            real_w, fake_w = self.sample_codes(x, step=step)
            values = discriminator_step(self.d_fwd, c.discriminator, c.d_optimizer, c.discriminator_loss, real_w, fake_w,
                                        step % c.discriminator_loss.d_reg_every == 0)
        with self._autocast():
            y_hat, latents = self.forward(x, train=True, step=step)
            loss, enc_values = self.encoder_loss(x, y_hat, latents)
        c.optimizer.zero_grad()
        c.scaler.scale(loss).backward()
        c.scaler.step(c.optimizer)
        c.scaler.update()
        return StepOutput({**values, **enc_values}, y_hat.detach(), latents.detach())

    # -- validation ------------------------------------------------------------------------------------
    def validate(self, step: int) -> dict[str, float] | None:
        """Mean of each loss over the validation batches of all ranks.

        At step 0 the original validates at most 5 batches as a sanity check and returns None when it
        reached the 5th (so with fewer batches it logs and may write best_model.pt at step 0). Validation
        draws from its own random stream (seeded by seed, step and rank) and leaves the W pools alone: a
        run that stops at --max-steps (validating there) resumes exactly as one that was interrupted.
        """
        c = self.c
        if self.dist.world > 1:  # every rank validates with rank 0's BatchNorm statistics, the ones checkpoints keep
            for b in c.encoder.buffers():
                torch.distributed.broadcast(b, 0)
        sanity = step == 0 and len(c.val_set) // c.config.test_batch_size >= SANITY_VAL_BATCHES
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed((c.seed * 1_000_003 + step * 7919 + self.dist.rank + 1) % 2**63)
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

    @torch.no_grad()
    def _validation_sums(self, step: int, sanity: bool) -> dict[str, list[float]]:
        c = self.c
        c.encoder.eval()
        sums: dict[str, list[float]] = {}
        batches = datamod.val_batches(len(c.val_set), c.config.test_batch_size, self.dist.rank, self.dist.world)
        if sanity:
            batches = [b for j, b in enumerate(batches) if self.dist.rank + self.dist.world * j < SANITY_VAL_BATCHES]
        for j, (x, bad) in enumerate(datamod.loader(c.val_set, batches, c.config.test_workers)):
            self._report_bad(bad)
            x = x.to(self.device, non_blocking=True).float()
            values: dict[str, float] = {}
            if c.discriminator is not None:
                values.update(lossmod.discriminator_losses_of(c.discriminator, *self.sample_codes(x, pools=False)))
            with self._autocast():
                y_hat, latents = self.forward(x, train=False)
                values.update(self.encoder_loss(x, y_hat, latents)[1])
            for k, v in values.items():
                acc = sums.setdefault(k, [0.0, 0])
                acc[0] += v
                acc[1] += 1
            if self.log is not None:
                self.log.images("images/test/faces", step, x, y_hat, subscript=f"{self.dist.rank + self.dist.world * j:04d}")
        c.encoder.train()
        return sums

    # -- checkpoints ------------------------------------------------------------------------------------
    def checkpoint(self, step: int, loss_dict: dict[str, float], best: bool) -> Path | None:
        """Write best_model.pt or iteration_<step>.pt (rank 0; every rank must call: it gathers rank state).

        Only the newest iteration checkpoint keeps the training state; --keep-last K deletes older ones.
        """
        c = self.c
        ranks = self.dist.gather(ckpts.rank_state(c))
        if self.log is None:
            return None
        training_state = (not best) or bool(c.config.save_training_data)
        ckpt_dir = Path(c.config.exp_dir) / "checkpoints"
        path = ckpt_dir / ("best_model.pt" if best else f"iteration_{step}.pt")
        ckpts.save(path, ckpts.payload(c, step, self.best_val_loss, self.stage, self.n_active_groups, ranks if training_state else None))
        if best:
            self.log.timestamp(f"**Best**: Step - {step}, Loss - {self.best_val_loss:.3f} \n{loss_dict}\n")
            return path
        self.log.timestamp(f"Step - {step}, \n{loss_dict}\n")
        if self.last_iteration is not None and self.last_iteration != path and self.last_iteration.parent == ckpt_dir:
            ckpts.drop_training_state(self.last_iteration)
        self.last_iteration = path
        ckpts.prune(ckpt_dir, c.config.keep_last)
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

    def run(self) -> Iterator[Any]:
        """Set up, then train from the start step to --max-steps, yielding Events."""
        started = time.perf_counter()
        self.setup()
        c = self.c
        o = c.config
        if self.log is not None:
            from e4ecli.files.batch import write_text

            (Path(o.exp_dir) / "checkpoints").mkdir(parents=True, exist_ok=True)
            write_text(Path(o.exp_dir) / "opt.json", optmod.to_json(o.to_opts()))
        yield from self._drain_notes()
        step = self.start_step
        self._apply_stage(step)
        max_steps = int(o.max_steps)
        if step > max_steps:
            self.notes.append(Note(f"nothing to do: the run already reached {optmod.named('max_steps')} {max_steps} (raise it to train on)"))
            yield from self._drain_notes()
        spe = datamod.steps_per_epoch(len(c.train_set), o.batch_size, self.dist.world)
        yield Started(step, max_steps, self.stage, c.n_styles, len(c.train_set), len(c.val_set) if c.val_set else 0,
                      self.dist.world, str(self.device), str(self.plan.resume_path) if self.plan.resume_path else None)
        steps_run = 0
        try:
            while step <= max_steps:
                epoch, offset = divmod(step, spe)
                batches = datamod.train_batches(len(c.train_set), o.batch_size, self.dist.rank, self.dist.world, c.seed, epoch, offset)
                for x, bad in datamod.loader(c.train_set, batches, o.workers, pin_memory=self.device.type == "cuda"):
                    self._report_bad(bad)
                    x = x.to(self.device, non_blocking=True).float()
                    t0 = time.perf_counter()
                    out = self.train_step(x, step)
                    loss_dict, y_hat = out.losses, out.y_hat
                    steps_run += 1
                    if not math.isfinite(loss_dict.get("loss", 0.0)):
                        raise TrainError(f"step {step}: the loss is {loss_dict['loss']} (diverged); lower {optmod.named('learning_rate')} "
                                         "or resume from an earlier checkpoint")
                    yield from self._drain_notes()
                    yield StepDone(step, self.stage, loss_dict, time.perf_counter() - t0)
                    yield from self._after_step(step, max_steps, x, y_hat, loss_dict)
                    if step == max_steps:
                        break
                    step += 1
                    if self._apply_stage(step):
                        yield StageChanged(step, c.encoder.progressive_stage)
                else:
                    continue
                break
        finally:
            if self.log is not None:
                self.log.close()
        yield from self._drain_notes()
        yield Finished(step if steps_run else self.start_step - 1, self.best_val_loss, steps_run, time.perf_counter() - started)

    def _after_step(self, step: int, max_steps: int, x: torch.Tensor, y_hat: torch.Tensor, loss_dict: dict[str, float]) -> Iterator[Any]:
        c = self.c
        o = c.config
        stage = self.stage if self.stage is not None else c.n_styles
        if self.log is not None:
            if step % o.image_interval == 0 or (step < EARLY_IMAGE_STEPS and step % EARLY_IMAGE_EVERY == 0):
                self.log.images("images/train/faces", step, x, y_hat)
            if step % o.board_interval == 0:
                self.log.metrics("train", step, stage, loss_dict)
        val_loss_dict = None
        if c.val_set is not None and (step % o.val_interval == 0 or step == max_steps):
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
        # without --save-interval: only at --max-steps (no iteration_0.pt), as --help says
        on_interval = o.save_interval is not None and step % o.save_interval == 0
        if on_interval or step == max_steps:
            path = self.checkpoint(step, val_loss_dict if val_loss_dict is not None else loss_dict, best=False)
            if path is not None:
                yield Saved(step, path, False)


def train(plan: Plan, dist: Dist, device: torch.device) -> Iterator[Any]:
    """Run one process's share of training; yields Note/Started/StepDone/StageChanged/Validated/Saved/Finished."""
    return Trainer(plan, dist, device).run()
