"""StyleSpace edits (Wu et al., CVPR 2021) and StyleCLIP's global text directions (Patashnik et al., ICCV 2021).

StyleSpace: the per-layer style vectors s_l = A_l(w_l) that modulate each convolution and toRGB layer, in
rosinality's (= the official StyleGAN2's) order -- `Generator.modulated_layers()`: layer 0 the 4x4 conv,
1 its toRGB, then per resolution conv_up, conv, toRGB (a 1024 px generator has 26 layers, 9088 channels;
the 17 conv layers hold 6048 of them, the layout of StyleCLIP's `fs3.npy`).

  stylespace:LAYER:CHANNEL with strength a   s[LAYER][CHANNEL] += a * std[LAYER][CHANNEL]
  text:TARGET with strength alpha            s += alpha * std * d, where d (conv channels only) is

      t   = normalise(e(TARGET) - e(NEUTRAL)),  e(p) = normalise(mean_k normalise(CLIP_text(template_k(p))))
      r   = R @ t                               (R: the relevance matrix, conv channels x CLIP dims)
      r_c = 0 where |r_c| < beta
      d   = r / max |r|

The per-channel mean and std are over the generator's style distribution (s of w = mapping(z), z seeded
standard normal; `style_stats`). The relevance matrix R is what `e4e directions styleclip` computes
(`relevance_rows`): for every conv channel c and N sampled style codes, the channel set to its mean and moved
by -/+ ALPHA std (StyleCLIP's alpha 5), the two renders' CLIP image embeddings normalised, their difference
normalised, averaged over the N codes and normalised.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from e4ecli.edits.prompts import (CONTEXT_LENGTH, DEFAULT_BETA, MAX_PROMPT_CHARS, NEUTRAL, TEXT_RANGE, TEXT_STRENGTH,  # noqa: F401
                                   TextOptions, check_text_options, clean_prompt, neutral_for)
from e4ecli.hub.directions import DirectionError, Relevance

RELEVANCE_ALPHA = 5.0  # StyleCLIP's single-channel move: -/+ 5 std
STATS_SAMPLES = 4096  # seeded z for the per-channel mean and std (the std to about 1%)

# the 80 prompt templates of CLIP's ImageNet zero-shot classifier, as StyleCLIP averages the text embeddings over
IMAGENET_TEMPLATES = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.", "a cropped photo of a {}.",
    "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.",
    "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.", "a {} in a video game.",
    "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.", "a photo of a {}.",
    "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.",
    "a sketch of the {}.", "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.",
    "a jpeg corrupted photo of the {}.", "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.",
    "a photo of the small {}.", "a photo of the weird {}.", "the cartoon {}.", "art of the {}.",
    "a drawing of the {}.", "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.",
    "a dark photo of a {}.", "itap of a {}.", "graffiti of the {}.", "a toy {}.",
    "itap of my {}.", "a photo of a cool {}.", "a photo of a small {}.", "a tattoo of the {}.",
)


def check_token_length(text: str, encode: Callable[[str], list], setting: str | None = None) -> None:
    """Refuse a prompt that does not fit CLIP's context in every template (it would be cut silently). `setting`:
    as for clean_prompt ('neutral'; None: the direction's text)."""
    longest = max(len(encode(t.format(text))) for t in IMAGENET_TEMPLATES) + 2  # start and end tokens
    if longest > CONTEXT_LENGTH:
        own = len(encode(text))
        room = CONTEXT_LENGTH - 2 - (longest - 2 - own)
        what = "text" if setting is None else "{" + setting + "}"
        raise DirectionError(what + ": the description is {own} CLIP tokens; with the prompt templates CLIP reads at most {room}: shorten it",
                             own=own, room=room)


# -- the StyleSpace layout ------------------------------------------------------------------------
def conv_layers(generator) -> list[int]:
    """Indices (into the StyleSpace list) of the convolution layers, toRGB layers left out: StyleCLIP's channel set."""
    from e4ecli.models.stylegan2 import ToRGB

    return [k for k, (layer, _) in enumerate(generator.modulated_layers()) if not isinstance(layer, ToRGB)]


@dataclass(frozen=True)
class StyleStats:
    mean: tuple[torch.Tensor, ...]  # one (C_l,) per layer
    std: tuple[torch.Tensor, ...]


@torch.no_grad()
def style_stats(generator, samples: int = STATS_SAMPLES, seed: int = 0, chunk: int = 2048) -> StyleStats:
    """Per-channel mean and std of every StyleSpace vector over s(mapping(z)), z ~ N(0, I) seeded (float64 sums)."""
    gen = torch.Generator().manual_seed(seed)
    device = generator.input.input.device
    layers = generator.modulated_layers()
    sums = [torch.zeros(layer.conv.in_channel, dtype=torch.float64) for layer, _ in layers]
    sq = [torch.zeros_like(s) for s in sums]
    done = 0
    while done < samples:
        n = min(chunk, samples - done)
        w = generator.mapping(torch.randn(n, generator.style_dim, generator=gen).to(device))
        for k, (layer, _) in enumerate(layers):
            s = layer.conv.modulation(w).double().cpu()
            sums[k] += s.sum(0)
            sq[k] += (s * s).sum(0)
        done += n
    mean = [s / samples for s in sums]
    std = [(q / samples - m * m).clamp_min(0).mul(samples / max(samples - 1, 1)).sqrt() for q, m in zip(sq, mean)]
    return StyleStats(tuple(m.float() for m in mean), tuple(s.float() for s in std))


def channel_direction(channels: Sequence[int], layer: int, channel: int, std: Sequence[torch.Tensor], spec: str) -> tuple[torch.Tensor, ...]:
    """Per-layer offsets moving one channel by one std."""
    if layer >= len(channels):
        raise DirectionError(f"direction {spec!r}: the generator has StyleSpace layers 0..{len(channels) - 1}")
    if channel >= channels[layer]:
        raise DirectionError(f"direction {spec!r}: layer {layer} has channels 0..{channels[layer] - 1}")
    out = [torch.zeros(c) for c in channels]
    out[layer][channel] = float(std[layer][channel])
    return tuple(out)


# -- text directions -------------------------------------------------------------------------------
class BetaTooHigh(DirectionError):
    def __init__(self, beta: float, largest: float, what: str):
        self.beta, self.largest = beta, largest
        super().__init__("{what}: {beta} {value:g} leaves no channel (every |relevance| is below it); the largest usable "
                         "value for this prompt is {largest:.4f} -- use a smaller {beta} (StyleCLIP's default is {default})",
                         what=what, value=beta, largest=largest, default=DEFAULT_BETA)


@torch.no_grad()
def prompt_embedding(encode_text: Callable[[list[str]], torch.Tensor], text: str) -> torch.Tensor:
    """CLIP text embedding of `text` averaged over the 80 templates: each normalised, the mean normalised (float64)."""
    e = encode_text([t.format(text) for t in IMAGENET_TEMPLATES]).double()
    e = e / e.norm(dim=-1, keepdim=True)
    e = e.mean(0)
    return e / e.norm()


def text_delta(target: torch.Tensor, neutral: torch.Tensor, what: str = "text") -> torch.Tensor:
    """normalise(e(target) - e(neutral))."""
    d = target.double() - neutral.double()
    norm = d.norm()
    if not torch.isfinite(norm) or norm <= 1e-12:
        raise DirectionError("{what}: the target and {neutral} descriptions have the same CLIP embedding; describe a change", what=what)
    return d / norm


def global_direction(relevance: torch.Tensor, delta: torch.Tensor, beta: float, what: str = "text") -> torch.Tensor:
    """StyleCLIP's global direction over the relevance matrix's channels (C,): R @ t, |values| < beta zeroed,
    divided by the largest |value|. BetaTooHigh when nothing is left."""
    r = relevance.double() @ delta.double()
    kept = torch.where(r.abs() < beta, torch.zeros_like(r), r)
    largest = kept.abs().max() if kept.numel() else torch.tensor(0.0)
    if largest <= 0:
        raise BetaTooHigh(beta, float(r.abs().max()) if r.numel() else 0.0, what)
    return kept / largest


def split_conv(flat: torch.Tensor, channels: Sequence[int], convs: Sequence[int], std: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """A flat (sum of conv channels,) direction -> per-layer offsets (zeros for toRGB layers), scaled by the std."""
    out = [torch.zeros(c) for c in channels]
    start = 0
    for k in convs:
        out[k] = flat[start:start + channels[k]].float() * std[k]
        start += channels[k]
    return tuple(out)


# -- relevance matrices (files: hub.directions.read_relevance) ------------------------------------------
def conv_layout(generator) -> tuple[int, ...]:
    channels = generator.style_channels()
    return tuple(channels[k] for k in conv_layers(generator))


def check_relevance(rel: Relevance, generator, clip_dim: int, domain_short: str | None, force: bool = False) -> None:
    """Refuse a relevance matrix made for another generator layout (or domain, unless `force`), naming its file."""
    layout = conv_layout(generator)
    name = rel.path if rel.path is not None else "relevance matrix"
    rows = sum(layout)
    if len(rel.channels) > 1 and rel.channels != layout:
        raise DirectionError(f"relevance file {name}: made for a generator whose conv layers have {list(rel.channels)} channels; "
                             f"this one's have {list(layout)} (compute one for it: e4e directions styleclip)")
    if rel.matrix.shape[0] != rows:
        raise DirectionError(f"relevance file {name}: has {rel.matrix.shape[0]} channel rows; this generator's conv layers have "
                             f"{rows} channels (it was made for another generator; compute one: e4e directions styleclip)")
    if rel.matrix.shape[1] != clip_dim:
        raise DirectionError(f"relevance file {name}: rows of {rel.matrix.shape[1]} CLIP dims; this CLIP model embeds in {clip_dim}")
    if rel.domain and domain_short and rel.domain != domain_short and not force:
        raise DirectionError("relevance file {name}: made for {domain} models; this model's domain is {model} "
                             "({force} uses it anyway)", name=name, domain=rel.domain, model=domain_short)


# -- relevance computation -----------------------------------------------------------------------------
def sample_styles(generator, n: int, seed: int) -> list[torch.Tensor]:
    """N seeded style codes s(mapping(z)) (one (N, C_l) per layer)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, generator.style_dim, generator=gen).to(generator.input.input.device)
    with torch.no_grad():
        w = generator.mapping(z)
        return [layer.conv.modulation(w) for layer, _ in generator.modulated_layers()]


def channel_rows(generator, styles: Sequence[torch.Tensor], stats: StyleStats, targets: Sequence[tuple[int, int]],
                 embed_images: Callable[[torch.Tensor], torch.Tensor], alpha: float = RELEVANCE_ALPHA,
                 batch_size: int = 8) -> torch.Tensor:
    """Relevance rows (len(targets), D) for (layer, channel) pairs: per sampled code, the channel set to its mean and
    moved by -alpha and +alpha std; each render's CLIP image embedding normalised, (plus - minus) normalised,
    averaged over the codes and normalised. `embed_images`: generator images (M, 3, H, W) in [-1, 1] -> (M, D)."""
    n = styles[0].shape[0]
    rows = []
    for layer, channel in targets:
        codes = [s.repeat(2, 1) for s in styles]  # first n: minus, last n: plus
        mean, std = float(stats.mean[layer][channel]), float(stats.std[layer][channel])
        codes[layer] = codes[layer].clone()
        codes[layer][:n, channel] = mean - alpha * std
        codes[layer][n:, channel] = mean + alpha * std
        feats = []
        with torch.no_grad():
            for start in range(0, 2 * n, batch_size):
                images = generator.synthesis_s([c[start:start + batch_size] for c in codes])
                feats.append(embed_images(images).double())
        f = torch.cat(feats)
        f = f / f.norm(dim=-1, keepdim=True)
        d = f[n:] - f[:n]
        d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        m = d.mean(0)
        rows.append(m / m.norm().clamp_min(1e-12))
    return torch.stack(rows).float()


def all_channels(generator) -> list[tuple[int, int]]:
    """Every (layer, channel) of the conv layers, in the relevance matrix's row order."""
    channels = generator.style_channels()
    return [(k, c) for k in conv_layers(generator) for c in range(channels[k])]
