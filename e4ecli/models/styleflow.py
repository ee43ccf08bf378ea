"""StyleFlow's conditional continuous normalising flow, in the layout of its published weights.

StyleFlow (Abdal et al., ACM TOG 2021) maps a W+ latent (1, 18, 512) to a base code z under a
condition c = cat(lighting (9 spherical-harmonic coefficients), attributes (8)) and back. The
published `flow_weight/modellarge10k.pt` is the state dict of `cnf(512, '512-512-512-512-512', 17, 1)`:

    chain.0  MovingBatchNorm1d(512)   (eval: running statistics, eps 1e-4, affine with exp(weight))
    chain.1  CNF: dz/dt = ODEnet(t, c, z) integrated from 0 to sqrt_end_time**2 (dopri5, atol =
             rtol = 1e-5); ODEnet = six ConcatSquashLinear layers 512 -> 512 (five tanh between),
             each `layer(z) * sigmoid(gate([t, c])) + hyper_bias([t, c])`
    chain.2  MovingBatchNorm1d(512)

Reverse runs the chain backwards and integrates from the end time to 0.

Differences from StyleFlow's module/ (none changes z or w beyond the solver's tolerance):
  * the log-density state (a Hutchinson trace estimate with fresh random noise on every call) is
    not integrated: editing never uses it. The adaptive solver's error norm therefore sees the
    latent and the condition only, so its steps differ slightly from the original's, whose steps
    depend on that random noise too (the two agree to ~2e-5 on the conformance case);
  * each latent is integrated on its own (as StyleFlow does, one face at a time), so a latent's
    result does not depend on the other latents of a batch;
  * inference only (no training statistics update, no adjoint).

Shapes: latents (N, 18, 512); condition (N, 17), (N, 17, 1) or (N, 17, 1, 1).
"""
from __future__ import annotations

import torch
from torch import nn

N_LIGHTING = 9
N_ATTRIBUTES = 8
CONDITION_DIM = N_LIGHTING + N_ATTRIBUTES


class MovingBatchNorm1d(nn.Module):
    """Batch normalisation with running statistics and a log-scale affine; invertible."""

    def __init__(self, num_features: int, eps: float = 1e-4):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("step", torch.zeros(1))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        log_std = 0.5 * torch.log(self.running_var + self.eps)
        if reverse:
            y = (x - self.bias) * torch.exp(-self.weight)
            return y * torch.exp(log_std) + self.running_mean
        y = (x - self.running_mean) * torch.exp(-log_std)
        return y * torch.exp(self.weight) + self.bias


class ConcatSquashLinear(nn.Module):
    """`linear(x) * sigmoid(gate(ctx)) + hyper_bias(ctx)` with ctx = [t, condition]."""

    def __init__(self, dim_in: int, dim_out: int, dim_ctx: int):
        super().__init__()
        self._layer = nn.Linear(dim_in, dim_out)
        self._hyper_bias = nn.Linear(1 + dim_ctx, dim_out, bias=False)
        self._hyper_gate = nn.Linear(1 + dim_ctx, dim_out)

    def forward(self, ctx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self._hyper_gate(ctx))
        bias = self._hyper_bias(ctx)
        if x.dim() == 3:
            gate, bias = gate.unsqueeze(1), bias.unsqueeze(1)
        return self._layer(x) * gate + bias


class ODEnet(nn.Module):
    """ConcatSquashLinear layers with tanh between them (not after the last)."""

    def __init__(self, hidden_dims: tuple[int, ...], dim: int, dim_ctx: int):
        super().__init__()
        dims = (dim, *hidden_dims, dim)
        self.layers = nn.ModuleList(ConcatSquashLinear(a, b, dim_ctx) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, ctx: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            y = layer(ctx, y)
            if i < len(self.layers) - 1:
                y = torch.tanh(y)
        return y


class ODEfunc(nn.Module):
    """The vector field on the state (z, condition): (ODEnet([t, c], z), 0)."""

    def __init__(self, diffeq: ODEnet):
        super().__init__()
        self.diffeq = diffeq
        self.register_buffer("_num_evals", torch.tensor(0.0))  # kept for the published layout

    def forward(self, t: torch.Tensor, states: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        y, c = states
        tc = torch.cat([t.to(y).expand(y.shape[0], 1), c.reshape(y.shape[0], -1)], dim=1)
        return self.diffeq(tc, y), torch.zeros_like(c)


class CNF(nn.Module):
    """Integrates the ODE from 0 to sqrt_end_time**2 (reverse: back to 0) with dopri5."""

    def __init__(self, odefunc: ODEfunc, atol: float = 1e-5, rtol: float = 1e-5, method: str = "dopri5"):
        super().__init__()
        self.sqrt_end_time = nn.Parameter(torch.tensor(1.0))
        self.odefunc = odefunc
        self.atol, self.rtol, self.method = atol, rtol, method

    def forward(self, x: torch.Tensor, condition: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        from torchdiffeq import odeint

        end = self.sqrt_end_time * self.sqrt_end_time
        times = torch.stack([torch.zeros_like(end), end]).to(x)
        if reverse:
            times = times.flip(0)
        z, _ = odeint(self.odefunc, (x, condition.to(x)), times, atol=self.atol, rtol=self.rtol, method=self.method)
        return z[-1]


class StyleFlow(nn.Module):
    """`forward(latents, condition)` -> z; `forward(z, condition, reverse=True)` -> latents."""

    def __init__(self, dim: int = 512, hidden_dims: tuple[int, ...] = (512,) * 5, condition_dim: int = CONDITION_DIM):
        super().__init__()
        self.dim, self.condition_dim = dim, condition_dim
        self.chain = nn.ModuleList([MovingBatchNorm1d(dim), CNF(ODEfunc(ODEnet(hidden_dims, dim, condition_dim))), MovingBatchNorm1d(dim)])
        self.eval()

    def _one(self, x: torch.Tensor, condition: torch.Tensor, reverse: bool) -> torch.Tensor:
        for i in (reversed(range(len(self.chain))) if reverse else range(len(self.chain))):
            layer = self.chain[i]
            x = layer(x, condition, reverse) if isinstance(layer, CNF) else layer(x, reverse)
        return x

    def forward(self, latents: torch.Tensor, condition: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        if latents.ndim != 3 or latents.shape[-1] != self.dim:
            raise ValueError(f"StyleFlow takes latents (N, n_styles, {self.dim}), got {tuple(latents.shape)}")
        n = latents.shape[0]
        cond = condition.reshape(condition.shape[0], -1)
        if cond.shape != (n, self.condition_dim):
            raise ValueError(f"StyleFlow takes one condition of {self.condition_dim} numbers per latent; got {tuple(condition.shape)} for {n} latents")
        return torch.cat([self._one(latents[i:i + 1], cond[i:i + 1], reverse) for i in range(n)]) if n else latents.clone()
