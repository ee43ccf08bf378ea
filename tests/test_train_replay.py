"""Replay of the original e4e trainer, step by step (kit cases `cases/train_step*.json`, issue 26).

Each case records K consecutive steps of the original `Coach.train()` with every random draw. The replay
builds e4ecli's own trainer from the case's options (`loop.Trainer`, the `e4e train` code path), feeds it
the recorded draws through the trainer's seam (`training/draws.py`: z, what the W pools returned, the
generator's noise; the batch keys through `data.keyed`) and compares, after every step and within the
json's tolerances: every logged loss by the original's name (and which names are logged), the latents,
y_hat, the encoder's output of the discriminator step, the real codes, digests of every encoder and
discriminator state-dict entry (on a mismatch the first diverging entry is named), the recorded tensors.
The pools are also replayed from their recorded decisions, and e4ecli's Ranger from the Ranger-only record
(`ranger_*`: 7 steps, the rectified update and Lookahead).
"""
from __future__ import annotations

import ast
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from e4ecli.runtime import Dist
from e4ecli.training import data as datamod
from e4ecli.training import loop
from e4ecli.training import options as optmod
from e4ecli.training import progressive as prog
from e4ecli.training.build import make_optimizer
from e4ecli.training.draws import Draws
from e4ecli.training.pool import LatentCodesPool
from train_support import KIT, kit

CASES = sorted(p.name for p in (KIT / "cases").glob("train_step*.json")) if (KIT / "cases").is_dir() else []
# options that only say where the original wrote things: no part of a step
RUN_ONLY = {"exp_dir", "checkpoint_path", "max_steps", "save_training_data", "sub_exp_dir", "resume_training_from_ckpt",
            "keep_optimizer", "test_batch_size", "update_param_list"}


def _case_params():
    return CASES or [pytest.param(None, marks=pytest.mark.skip(reason=f"no cases/train_step*.json in the kit at {KIT}"))]


# -- set-up from the json ----------------------------------------------------------------------------------
def _kit_call(expr: str, path: Path):
    """Evaluate one of the json's 'weights.f(...)' recipes (literals, `path`, nested weights calls): no eval()."""
    w = kit()

    def ev(node):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name) \
                and node.func.value.id == "weights":
            return getattr(w, node.func.attr)(*[ev(a) for a in node.args], **{k.arg: ev(k.value) for k in node.keywords})
        if isinstance(node, ast.Name) and node.id == "path":
            return path
        return ast.literal_eval(node)

    return ev(ast.parse(expr, mode="eval").body)


class Replay(Draws):
    """The recorded draws of a case, returned where e4ecli draws them; it keeps what the pools were given."""

    def __init__(self, arrays):
        self.a = arrays
        self.pool_inputs: dict[tuple[int, str], torch.Tensor] = {}

    def z(self, step, batch, dim, device):
        z = torch.from_numpy(self.a["z"][step]).to(device)
        assert z.shape == (batch, dim), (step, z.shape)
        return z

    def pool(self, step, which, pool, codes):
        self.pool_inputs[step, which] = codes.detach().clone()
        return torch.from_numpy(self.a[f"d_{which}_w"][step]).to(codes.device)

    def noise(self, step, n_layers):
        return [torch.from_numpy(self.a[f"noise_{j}"][step]) for j in range(n_layers)]


def _digest(state: dict) -> dict[str, tuple[float, float]]:
    return {k: (float(v.double().sum()), float(v.double().pow(2).sum())) for k, v in state.items()}


def _run_case(name: str, tmp: Path) -> dict:
    """Build e4ecli's trainer as the case says, replay its K steps; returns what each step computed."""
    kit()
    spec = json.loads((KIT / "cases" / name).read_text())
    a = np.load(KIT / "cases" / name.replace(".json", ".npz"))
    o = spec["opts"]
    unknown = set(o) - set(optmod.defaults())
    assert not unknown, f"{name}: options e4ecli does not have: {sorted(unknown)}"
    ckpt = _kit_call(spec["checkpoint"]["write"], tmp / "checkpoint.pt")
    source = np.load(KIT / "cases" / f"{spec['checkpoint']['case']}.npz")
    x_all = torch.from_numpy(source["x"]).float()
    data = tmp / "data"  # build() wants a training folder; the steps take the case's batches (keys -> x)
    data.mkdir()
    from PIL import Image

    for i in range(max(int(o["batch_size"]), len(x_all))):
        img = ((x_all[i % len(x_all)].permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(data / f"{i}.png")
    given = {k: v for k, v in o.items() if k not in RUN_ONLY}
    given.update(exp_dir=str(tmp / "exp"), checkpoint_path=str(ckpt), data=str(data), device="cpu", workers=0)
    if "identity_network" in spec:
        given["id_weights"] = str(_kit_call(spec["identity_network"]["write"], tmp / "identity.pth"))
    replay = Replay(a)
    trainer = loop.Trainer(loop.prepare(optmod.merge(given), set(given)), Dist(), torch.device("cpu"), draws=replay)
    trainer.setup()
    c = trainer.c
    if "discriminator" in spec and o.get("w_discriminator_lambda", 0) > 0:
        assert c.discriminator is not None, f"{name}: the case trains a discriminator, e4ecli built none"
        c.discriminator.load_state_dict(_kit_call(spec["discriminator"]["write"], tmp / "unused"))
    encoder_calls: list[torch.Tensor] = []
    mapped: list[torch.Tensor] = []
    hooks = [c.encoder.register_forward_hook(lambda _m, _i, out: encoder_calls.append(out.detach().clone())),
             c.decoder.style.register_forward_hook(lambda _m, _i, out: mapped.append(out.detach().clone()))]
    steps = []
    try:
        for t in range(int(spec["K"])):
            trainer._apply_stage(t)
            keys = list(zip(a["batch_index"][t].tolist(), a["batch_flip"][t].tolist()))
            x = torch.stack([datamod.keyed(x_all[i], bool(f)) for i, f in keys])
            encoder_calls.clear()
            mapped.clear()
            stage = trainer.stage
            out = trainer.train_step(x, t)
            steps.append({
                "stage": stage, "losses": out.losses, "latents": out.latents.numpy(), "y_hat": out.y_hat.numpy(),
                "d_encoder_out": encoder_calls[0].numpy() if c.discriminator is not None else None,
                "d_real_codes": mapped[0].numpy() if mapped else None,
                "encoder": {k: v.detach().clone() for k, v in c.encoder.state_dict().items()},
                "discriminator": {k: v.detach().clone() for k, v in c.discriminator.state_dict().items()}
                if c.discriminator is not None else {},
            })
    finally:
        for h in hooks:
            h.remove()
    return {"spec": spec, "a": a, "steps": steps, "latent_avg": c.latent_avg.clone(), "pool_inputs": replay.pool_inputs,
            "dims": [prog.dims_to_discriminate(s["stage"]) if s["stage"] is not None else None for s in steps]}


@pytest.fixture(scope="module", params=_case_params())  # one build and K steps per case, shared by the tests below
def replayed(request, tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the case's tolerances were measured on 1 and 2 threads
    try:
        yield _run_case(request.param, tmp_path_factory.mktemp("replay"))
    finally:
        torch.set_num_threads(threads)


# -- comparisons -----------------------------------------------------------------------------------------
class Report:
    """Max |diff| and its tolerance per quantity; mismatches named by step and quantity."""

    def __init__(self):
        self.worst: dict[str, tuple[float, float]] = {}
        self.problems: list[str] = []

    def check(self, step: int, what: str, got, want, tol: float, per_value: bool = False) -> None:
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        if got.shape != want.shape:
            self.problems.append(f"step {step}: {what}: shape {got.shape}, the original {want.shape}")
            return
        d = np.abs(got - want)
        bound = tol * np.maximum(1.0, np.abs(want)) if per_value else tol
        ratio = float(np.max(d / bound)) if d.size else 0.0
        key = what.split("[")[0]
        prev = self.worst.get(key, (0.0, tol))
        self.worst[key] = max(prev, (float(d.max()) if d.size else 0.0, tol))
        if not ratio <= 1.0:  # NaN fails too
            self.problems.append(f"step {step}: {what}: max |diff| {float(np.nanmax(d)):.3g} > tolerance {tol:g}")

    def digests(self, step: int, what: str, got: dict, want: np.ndarray, keys, numel, tau: float) -> None:
        if list(got) != list(keys):
            self.problems.append(f"step {step}: {what}: state-dict keys differ from the original's: "
                                 f"{sorted(set(got) ^ set(keys))[:5]}")
            return
        mine = _digest(got)
        worst = 0.0
        for k, n, (s, sq) in zip(keys, numel, want):
            ds, dsq = abs(mine[k][0] - s), abs(mine[k][1] - sq)
            if k.endswith("num_batches_tracked"):
                bad = ds != 0
            else:
                bad = not (ds <= n * tau and dsq <= 2 * tau * math.sqrt(n * sq) + n * tau ** 2)
                worst = max(worst, ds / (n * tau))
            if bad:
                self.problems.append(f"step {step}: {what}: first diverging tensor {k} (|d sum| {ds:.3g}, "
                                     f"|d sum of squares| {dsq:.3g}; {int(n)} elements, tau {tau:g})")
                break
        self.worst[what] = max(self.worst.get(what, (0.0, 1.0)), (worst, 1.0))  # in units of the bound

    def fail_if_any(self, name: str) -> None:
        summary = "; ".join(f"{k} {d:.2g}/{t:g}" for k, (d, t) in sorted(self.worst.items()))
        print(f"\n{name}: max |diff| / tolerance: {summary}")
        assert not self.problems, f"{name}: {len(self.problems)} mismatch(es), first: " + "\n  ".join(self.problems[:12])


def _tol(spec: dict, key: str) -> float:
    """A tolerance of the json: a number, or the first number of its sentence ("2e-3 (float16 storage ...)")."""
    value = spec["tolerances"][key]
    return float(value) if isinstance(value, (int, float)) else float(re.search(r"\d[\d.]*e-?\d+", value).group())


@pytest.mark.slow
def test_replayed_steps_match_the_original_trainer(replayed):
    spec, a, steps = replayed["spec"], replayed["a"], replayed["steps"]
    r = Report()
    names = [str(n) for n in a["loss_names"]]
    enc_param_tol, enc_buffer_tol = _tol(spec, "enc.* and enc_final.* (parameters)"), _tol(spec, "enc.*running_mean / running_var")
    disc_tol = _tol(spec, "disc.* and disc_final.*")
    if steps[0]["stage"] is not None:  # progressive training
        assert [s["stage"] for s in steps] == [int(v) for v in a["stage"]], "progressive stages differ from the original's"
    for t, s in enumerate(steps):
        logged = {n for n, v in zip(names, a["losses"][t]) if not np.isnan(v)}
        if set(s["losses"]) != logged:
            r.problems.append(f"step {t}: logged losses differ: only e4ecli {sorted(set(s['losses']) - logged)}, "
                              f"only the original {sorted(logged - set(s['losses']))}")
        for n, v in zip(names, a["losses"][t]):
            if n in s["losses"] and not np.isnan(v):
                r.check(t, f"loss {n}", s["losses"][n], v, _tol(spec, "losses"), per_value=True)
        assert bool(a["r1_applied"][t]) == ("discriminator_r1_loss" in s["losses"]), f"step {t}: R1 applied differs"
        r.check(t, "latents", s["latents"], a["latents"][t], _tol(spec, "latents, d_encoder_out"))
        r.check(t, "y_hat", s["y_hat"], a["y_hat"][t].astype(np.float32), _tol(spec, "y_hat"))
        if s["d_encoder_out"] is not None:
            r.check(t, "d_encoder_out", s["d_encoder_out"], a["d_encoder_out"][t], _tol(spec, "latents, d_encoder_out"))
        if s["d_real_codes"] is not None:
            r.check(t, "d_real_codes", s["d_real_codes"], a["d_real_codes"][t], _tol(spec, "d_real_codes"))
        r.digests(t, "encoder_digest", s["encoder"], a["encoder_digest"][t], [str(k) for k in a["encoder_digest_keys"]],
                  a["encoder_digest_numel"], 1e-6)
        if s["discriminator"] and "discriminator_digest" in a.files:
            r.digests(t, "discriminator_digest", s["discriminator"], a["discriminator_digest"][t],
                      [str(k) for k in a["discriminator_keys"]], [v.numel() for v in s["discriminator"].values()], 2e-6)
        last = t == len(steps) - 1
        for key in a.files:
            prefix, _, tensor = key.partition(".")
            if not tensor:
                continue
            assert prefix in ("enc", "enc_final", "disc", "disc_final"), f"the replay does not know what {key} is after a step"
            if prefix.endswith("_final") and not last:
                continue
            state = s["encoder"] if prefix.startswith("enc") else s["discriminator"]
            want = a[key] if prefix.endswith("_final") else a[key][t]
            bound = disc_tol if prefix.startswith("disc") else (enc_buffer_tol if "running_" in tensor else enc_param_tol)
            r.check(t, f"{prefix}.{tensor}", state[tensor].numpy(), want, bound)
    r.fail_if_any(spec.get("case", "train_step"))


class ScriptedRandom:
    """random.Random's randint/uniform answering with a pool's recorded decisions, in the order they were made."""

    def __init__(self, answers: list[tuple[str, tuple, float]], where: str):
        self.answers, self.where = answers, where

    def _next(self, kind: str, args: tuple):
        assert self.answers, f"{self.where}: the pool drew {kind}{args}, the original drew nothing more"
        want_kind, want_args, value = self.answers.pop(0)
        assert (kind, args) == (want_kind, want_args), f"{self.where}: the pool drew {kind}{args}, the original {want_kind}{want_args}"
        return value

    def randint(self, lo, hi):
        return self._next("randint", (lo, hi))

    def uniform(self, lo, hi):
        return self._next("uniform", (lo, hi))


@pytest.mark.slow
def test_w_pools_replay_the_recorded_decisions(replayed):
    """e4ecli's LatentCodesPool, given the codes of each step and the original's random answers, returns what the
    original's pools returned (and keeps as many codes)."""
    spec, a = replayed["spec"], replayed["a"]
    if not spec["opts"].get("use_w_pool") or "pool_real_source" not in a.files:
        pytest.skip("this case trains without W pools")
    size = int(spec["opts"]["w_pool_size"])
    pools = {}
    for t in range(len(replayed["steps"])):
        for which in ("real", "fake"):
            answers = []
            codes = replayed["pool_inputs"][t, which]
            for b in range(codes.shape[0]):
                if codes.ndim == 3:
                    answers.append(("randint", (0, codes.shape[1] - 1), int(a["pool_fake_dim"][t, b])))
                u, src = float(a[f"pool_{which}_uniform"][t, b]), int(a[f"pool_{which}_source"][t, b])
                if not np.isnan(u):
                    answers.append(("uniform", (0, 1), u))
                if src >= 0:
                    answers.append(("randint", (0, size - 1), src))
            where = f"step {t}, {which} pool"
            pool = pools.setdefault(which, LatentCodesPool(size, ScriptedRandom([], where)))
            pool.rng = ScriptedRandom(answers, where)
            got = pool.query(codes)
            assert not pool.rng.answers, f"{where}: the pool left recorded draws unused: {pool.rng.answers}"
            # the codes given are e4ecli's own (the replay's), within the json's tolerance of the original's
            tol = _tol(spec, "d_real_codes" if which == "real" else "latents, d_encoder_out")
            assert np.abs(got.numpy() - a[f"d_{which}_w"][t]).max() <= tol, f"{where}: returned other codes"
            assert pool.num_ws == int(a[f"pool_{which}_size_after"][t]), where


def test_ranger_replays_the_original_ranger_with_rectification_and_lookahead():
    """e4ecli's Ranger (pytorch-optimizer, configured by build.make_optimizer) against the original's on the
    kit's Ranger-only record. As in training, parameters join the optimiser in groups at their first gradient
    (the original keeps a step count per parameter; e4ecli's progressive groups give each group its own)."""
    if not CASES:
        pytest.skip(f"no cases/train_step*.json in the kit at {KIT}")
    for name in CASES:
        a = np.load(KIT / "cases" / name.replace(".json", ".npz"))
        ids = sorted({k.split("_")[1] for k in a.files if k.startswith("ranger_p")})
        if not ids:
            continue
        tol = float(json.loads((KIT / "cases" / name).read_text())["tolerances"]["ranger_*"])
        params = [torch.nn.Parameter(torch.from_numpy(a[f"ranger_{j}_init"]).clone()) for j in ids]
        grads = [a[f"ranger_{j}_grads"] for j in ids]
        first = [int(np.flatnonzero([np.any(g != 0) for g in gs])[0]) for gs in grads]
        joined: set[int] = set()
        opt = None
        worst = 0.0
        for t in range(len(grads[0])):
            starting = [i for i in range(len(ids)) if first[i] == t]
            if starting:
                group = {"params": [params[i] for i in starting], "name": f"from_step_{t + 1}"}
                if opt is None:
                    opt = make_optimizer("ranger", [group], float(a["ranger_lr"]))
                else:
                    opt.add_param_group(group)
                joined.update(starting)
            for i, p in enumerate(params):
                p.grad = torch.from_numpy(grads[i][t]).clone() if i in joined else None
            opt.step()
            for i, j in enumerate(ids):
                d = float(np.abs(params[i].detach().numpy() - a[f"ranger_{j}_after"][t]).max())
                worst = max(worst, d)
                assert d <= tol, f"{name}: Ranger step {t + 1}, {j}: max |diff| {d:.3g} > {tol:g}"
        print(f"\n{name}: ranger max |diff| {worst:.3g} / {tol:g}")
