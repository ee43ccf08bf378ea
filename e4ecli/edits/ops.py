"""Editing operations on W+ latents -- pure functions over tensors, no I/O.

Shapes: latents (N, S, D) with S = n_styles, D = style_dim (512); W codes (N, D).
`strength` is a float or a tensor of per-latent strengths (N,).

* InterFaceGAN: `w + strength * d` on every style (or on the styles a per-style direction has).
* GANSpace, as the e4e repository applies it: the coordinate of style 0 on PCA component c,
  centred on the PCA mean and in units of that component's standard deviation, is moved to
  `strength`; the W-space delta that does this is added to styles [start, end).
* SeFa: eigenvectors of A^T A where A stacks the (column-normalised) modulation weights of the
  chosen layers; layer k is the k-th styled convolution (0: the 4x4 conv, k >= 1: `convs[k-1]`),
  which W+ style k drives, so SeFa directions found on layers L are applied to styles L.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from e4ecli.edits.syntax import EASINGS, parse_layers  # noqa: F401 -- re-exported (torch-free, for option checks)


def _strength(strength: float | torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """float or (N,) -> tensor broadcastable to (N, 1, 1) on the latents' device and dtype."""
    s = torch.as_tensor(strength, dtype=latents.dtype, device=latents.device)
    if s.ndim == 0:
        return s
    if s.shape != (latents.shape[0],):
        raise ValueError(f"per-latent strengths must have shape ({latents.shape[0]},), got {tuple(s.shape)}")
    return s.view(-1, 1, 1)


def _check_latents(latents: torch.Tensor) -> None:
    if latents.ndim != 3:
        raise ValueError(f"latents must be (N, n_styles, style_dim), got shape {tuple(latents.shape)}")


# -- InterFaceGAN -------------------------------------------------------------------------------
def as_wplus_direction(direction: torch.Tensor, n_styles: int, style_dim: int = 512) -> torch.Tensor:
    """A direction shaped (D,), (1, D), (S, D) or (1, S, D) -> (1 or S, D).

    A per-style direction with a different number of styles is accepted only when its rows are
    all equal (the published pose.pt repeats one W direction over 18 styles); else ValueError.
    """
    d = direction.detach()
    if d.ndim == 3 and d.shape[0] == 1:
        d = d[0]
    if d.ndim == 1:
        d = d[None]
    if d.ndim != 2 or d.shape[1] != style_dim:
        raise ValueError(f"a direction must be shaped ({style_dim},), (1, {style_dim}) or (n_styles, {style_dim}); got {tuple(direction.shape)}")
    if d.shape[0] not in (1, n_styles):
        if torch.equal(d, d[:1].expand_as(d)):
            return d[:1]
        raise ValueError(f"the direction has {d.shape[0]} styles but the generator has {n_styles}")
    return d


def interfacegan(latents: torch.Tensor, direction: torch.Tensor, strength: float | torch.Tensor) -> torch.Tensor:
    """latents (N, S, D) + strength * direction ((D,), (1, D), (S, D) or (1, S, D)) -> (N, S, D)."""
    _check_latents(latents)
    d = as_wplus_direction(direction, latents.shape[1], latents.shape[2]).to(latents)
    return latents + _strength(strength, latents) * d


# -- GANSpace -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PCA:
    """A GANSpace PCA of W: mean (D,), components comp (K, D) (rows), std (K,) per component."""

    mean: torch.Tensor
    comp: torch.Tensor
    std: torch.Tensor

    @property
    def n_components(self) -> int:
        return int(self.comp.shape[0])

    @classmethod
    def from_published(cls, data: dict) -> "PCA":
        """The published layout {'mean': (1, D), 'comp': (K, 1, D), 'std': (K,)} (extra keys ignored)."""
        missing = [k for k in ("mean", "comp", "std") if k not in data]
        if missing:
            raise ValueError(f"a GANSpace PCA needs 'mean', 'comp' and 'std'; missing {', '.join(missing)}")
        mean = torch.as_tensor(data["mean"]).float().reshape(-1)
        comp = torch.as_tensor(data["comp"]).float()
        comp = comp.reshape(comp.shape[0], -1)
        std = torch.as_tensor(data["std"]).float().reshape(-1)
        if comp.shape[1] != mean.shape[0] or std.shape[0] != comp.shape[0]:
            raise ValueError(f"inconsistent PCA shapes: mean {tuple(mean.shape)}, comp {tuple(comp.shape)}, std {tuple(std.shape)}")
        return cls(mean, comp, std)

    def to_published(self) -> dict[str, torch.Tensor]:
        """-> {'mean': (1, D), 'comp': (K, 1, D), 'std': (K,)}, the layout of the e4e repository's files."""
        return {"mean": self.mean.reshape(1, -1).clone(), "comp": self.comp.reshape(self.n_components, 1, -1).clone(), "std": self.std.clone()}


def ganspace_coordinate(w: torch.Tensor, pca: PCA, component: int) -> torch.Tensor:
    """w (N, D) -> (N,) coordinate on `component`, centred on the mean, in std units."""
    c = pca.comp[component].to(w)
    return ((w - pca.mean.to(w)) @ c) / pca.std[component].to(w)


def ganspace_delta(latents: torch.Tensor, pca: PCA, component: int, strength: float | torch.Tensor) -> torch.Tensor:
    """The W delta (N, D) that moves style 0's coordinate on `component` to `strength`."""
    _check_latents(latents)
    if not 0 <= component < pca.n_components:
        raise ValueError(f"PCA component {component} out of range (the PCA has {pca.n_components})")
    coord = ganspace_coordinate(latents[:, 0], pca, component)
    target = torch.as_tensor(strength, dtype=latents.dtype, device=latents.device)
    return ((target - coord) * pca.std[component].to(latents))[:, None] * pca.comp[component].to(latents)


def ganspace(latents: torch.Tensor, pca: PCA, component: int, start: int, end: int, strength: float | torch.Tensor) -> torch.Tensor:
    """latents (N, S, D) with the GANSpace delta added to styles [start, end) -> (N, S, D)."""
    n_styles = latents.shape[1]
    if not 0 <= start < end <= n_styles:
        raise ValueError(f"GANSpace styles [{start}, {end}) do not fit latents with {n_styles} styles")
    delta = ganspace_delta(latents, pca, component, strength)
    out = latents.clone()
    out[:, start:end] += delta[:, None]
    return out


@torch.no_grad()
def fit_pca(generator, n_components: int = 80, samples: int = 100_000, seed: int = 0, chunk: int = 10_000) -> PCA:
    """PCA of W = mapping(z), z ~ N(0, I): streamed mean and covariance in float64.

    Components are the covariance's top eigenvectors (rows, unit norm, sign fixed so that the
    largest-magnitude entry is positive); std is the square root of their eigenvalues.
    """
    if samples < 2:
        raise ValueError("a PCA needs at least 2 samples")
    dim = generator.style_dim
    if not 1 <= n_components <= dim:
        raise ValueError(f"n_components must be in 1..{dim}, got {n_components}")
    gen = torch.Generator().manual_seed(seed)
    device = next(generator.parameters()).device
    total = torch.zeros(dim, dtype=torch.float64, device=device)
    outer = torch.zeros(dim, dim, dtype=torch.float64, device=device)
    shift = None  # a first-chunk estimate of the mean, subtracted for numerical stability
    done = 0
    while done < samples:
        n = min(chunk, samples - done)
        w = generator.mapping(torch.randn(n, dim, generator=gen).to(device)).double()
        if shift is None:
            shift = w.mean(0)
        w = w - shift
        total += w.sum(0)
        outer += w.T @ w
        done += n
    mean = total / samples
    cov = (outer - samples * torch.outer(mean, mean)) / (samples - 1)
    values, vectors = torch.linalg.eigh(cov)
    order = torch.argsort(values, descending=True)[:n_components]
    comp = canonical_sign(vectors[:, order].T)
    std = values[order].clamp_min(0).sqrt()
    return PCA((mean + shift).float().cpu(), comp.float().cpu(), std.float().cpu())


# -- SeFa ---------------------------------------------------------------------------------------
def styled_convs(generator) -> list:
    """The generator's styled convolutions in style order: [conv1, convs[0], convs[1], ...]."""
    return [generator.conv1] + list(generator.convs)


def canonical_sign(vectors: torch.Tensor) -> torch.Tensor:
    """rows (K, D) -> the same rows, each flipped so that its largest-magnitude entry is positive."""
    idx = vectors.abs().argmax(dim=1, keepdim=True)
    signs = torch.sign(torch.gather(vectors, 1, idx))
    signs[signs == 0] = 1
    return vectors * signs


@dataclass(frozen=True)
class Sefa:
    """SeFa eigenpairs: eigenvalues (K,) descending, directions (K, D) unit rows, layers used."""

    eigenvalues: torch.Tensor
    directions: torch.Tensor
    layers: tuple[int, ...]


@torch.no_grad()
def sefa(generator, layers: str | Sequence[int] | None = "all") -> Sefa:
    """Closed-form factorisation of the modulation weights of the selected styled convolutions.

    A = [M_l^T for l in layers] concatenated to (D, sum of input channels); each column is
    normalised to unit length; the directions are the eigenvectors of A A^T (float64), sorted by
    eigenvalue, descending, with the sign convention of `canonical_sign`.
    """
    convs = styled_convs(generator)
    chosen = parse_layers(layers, len(convs))
    a = torch.cat([convs[i].conv.modulation.weight.detach().double().T for i in chosen], dim=1)
    a = a / a.norm(dim=0, keepdim=True)
    values, vectors = torch.linalg.eigh(a @ a.T)
    order = torch.argsort(values, descending=True)
    return Sefa(values[order].float().cpu(), canonical_sign(vectors[:, order].T).float().cpu(), tuple(chosen))


def sefa_edit(latents: torch.Tensor, direction: torch.Tensor, styles: Sequence[int], strength: float | torch.Tensor) -> torch.Tensor:
    """latents (N, S, D) + strength * direction (D,) on the given styles -> (N, S, D)."""
    _check_latents(latents)
    styles = list(styles)
    if any(not 0 <= s < latents.shape[1] for s in styles):
        raise ValueError(f"styles {styles} do not fit latents with {latents.shape[1]} styles")
    out = latents.clone()
    out[:, styles] += _strength(strength, latents) * direction.reshape(1, 1, -1).to(latents)
    return out


# -- interpolation ------------------------------------------------------------------------------


def ease(t: torch.Tensor, easing: str = "linear") -> torch.Tensor:
    """t in [0, 1] -> eased t: linear, smooth (smoothstep 3t^2 - 2t^3) or cosine (0.5 - 0.5 cos(pi t))."""
    if easing == "linear":
        return t
    if easing == "smooth":
        return t * t * (3 - 2 * t)
    if easing == "cosine":
        return 0.5 - 0.5 * torch.cos(math.pi * t)
    raise ValueError(f"unknown easing {easing!r}; use one of {', '.join(EASINGS)}")


def interpolate(latents: torch.Tensor, n_frames: int, easing: str = "linear", loop: bool = False) -> torch.Tensor:
    """Keyframes (K, S, D) -> (n_frames, S, D), linear in W+ between consecutive keyframes.

    Without `loop` the first frame is keyframe 0 and the last keyframe K-1; with it the path
    returns to keyframe 0 and stops one step short of it, so the video repeats seamlessly.
    Easing applies within each segment (the motion slows down at every keyframe).
    """
    k = latents.shape[0]
    if k < 1 or n_frames < 1:
        raise ValueError("need at least one keyframe and one frame")
    if k == 1:
        return latents.expand(n_frames, *latents.shape[1:]).clone()
    keys = torch.cat([latents, latents[:1]]) if loop else latents
    segments = keys.shape[0] - 1
    if loop:
        pos = torch.arange(n_frames, dtype=torch.float64) * segments / n_frames
    else:
        pos = torch.linspace(0, segments, n_frames, dtype=torch.float64)
    idx = pos.floor().long().clamp(max=segments - 1)
    t = ease(pos - idx, easing).to(latents.dtype).view(-1, 1, 1)
    return keys[idx] * (1 - t) + keys[idx + 1] * t


def sweep_values(low: float, high: float, n_frames: int, easing: str = "linear", bounce: bool = True) -> torch.Tensor:
    """Strengths for an edit video: low -> high (-> low again with `bounce`) over n_frames -> (n_frames,)."""
    if n_frames < 1:
        raise ValueError("need at least one frame")
    u = torch.linspace(0, 1, n_frames, dtype=torch.float64) if n_frames > 1 else torch.zeros(1, dtype=torch.float64)
    if bounce:
        u = 1 - (2 * u - 1).abs()
    return (low + (high - low) * ease(u, easing)).float()


# -- StyleFlow ----------------------------------------------------------------------------------
def styleflow_edit(wplus: torch.Tensor, source_condition: torch.Tensor, target_condition: torch.Tensor, *, flow) -> torch.Tensor:
    """StyleFlow's edit: W+ (N, 18, 512) -> z under the source conditions (N, 17) -> W+ under the target ones.

    Conditions are cat(lighting (9), attributes (8)) per latent, as (N, 17) or (N, 17, 1).
    `target_condition` may hold F conditions per latent ((N * F, 17), latent-major): each latent
    is pushed forward once and brought back under each of its F targets -> (N * F, 18, 512).
    Rows of `wplus` equal to the previous row under the same source condition reuse its z.
    """
    _check_latents(wplus)
    if wplus.shape[1] != 18:
        raise ValueError(f"StyleFlow edits W+ latents of 18 styles (FFHQ 1024); got {wplus.shape[1]} styles")
    n = wplus.shape[0]
    source = source_condition.reshape(source_condition.shape[0], -1).to(wplus)
    target = target_condition.reshape(target_condition.shape[0], -1).to(wplus)
    if source.shape[0] != n:
        raise ValueError(f"one source condition per latent: got {source.shape[0]} for {n} latents")
    if n == 0 or target.shape[0] % n:
        raise ValueError(f"the target conditions ({target.shape[0]}) must be a multiple of the latents ({n})")
    z = []
    for i in range(n):
        if i and torch.equal(wplus[i], wplus[i - 1]) and torch.equal(source[i], source[i - 1]):
            z.append(z[-1])
        else:
            z.append(flow(wplus[i:i + 1], source[i:i + 1]))
    z = torch.cat(z).repeat_interleave(target.shape[0] // n, dim=0)
    return flow(z, target, reverse=True)
