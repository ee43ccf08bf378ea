"""Conformance: the published checkpoint layouts load through the public loader and reproduce
what the original implementation computed (CPU fp32, max |diff| <= 1e-3)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from e4ecli.hub.checkpoints import build_generator, generator_config, load_checkpoint, load_strict
from e4ecli.models.encoders import ENCODERS

TOL = 1e-3
ENCODER_CASES = ["e4e_256", "psp_256", "single_256", "e4e_cars_512"]
GENERATOR_CASES = ["stylegan2_256_cm2", "stylegan2_64_cm1"]


def maxdiff(a, b) -> float:
    a = a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a)
    assert a.shape == np.asarray(b).shape, (a.shape, np.asarray(b).shape)
    return float(np.abs(a - b).max())


@pytest.mark.parametrize("case", ENCODER_CASES)
def test_encoder_case_reproduces_original(case, case_checkpoint, case_arrays):
    z = case_arrays(case)
    ckpt = load_checkpoint(case_checkpoint(case))
    x = torch.stack([ckpt.domain.preprocess(Image.fromarray(z[f"input_{i}"])) for i in range(2)])
    assert maxdiff(x, z["x"]) <= 1e-6, "preprocessing (PIL bilinear resize, [-1, 1]) differs"
    model = ckpt.inverter()
    with torch.inference_mode():
        latents = model.encode(x)
        assert maxdiff(latents, z["latents"]) <= TOL
        images = ckpt.domain.crop(model.decode(latents))
    key = "images_cropped" if "images_cropped" in z else "images"
    assert maxdiff(images, z[key]) <= TOL
    assert maxdiff(ckpt.latent_avg, z["latent_avg"].reshape(ckpt.latent_avg.shape)) == 0


def test_folded_inference_path_matches_the_original_and_follows_parameter_changes(case_checkpoint, case_arrays):
    """Inference runs the encoder with batch norms folded and (CPU fp32, from the second call of a shape on)
    oneDNN's reordered weights: both calls reproduce the kit, equal the unfolded graph (run with autograd on),
    and a parameter changed in place afterwards is seen by the next inference call."""
    from e4ecli.models import encoders

    z = case_arrays("e4e_256")
    ckpt = load_checkpoint(case_checkpoint("e4e_256"))
    model = ckpt.inverter()
    x = torch.from_numpy(z["x"][:1])  # one image: five encoder passes
    with torch.inference_mode():
        first, second = model.encode(x), model.encode(x)
    assert maxdiff(first, z["latents"][:1]) <= TOL and maxdiff(second, z["latents"][:1]) <= TOL
    if encoders._onednn():
        convs = [c for m in ckpt.encoder.modules() if getattr(m, "_folded", None) is not None
                 for c in (m._folded.value if isinstance(m._folded.value, (list, tuple)) else [m._folded.value])
                 if isinstance(c, encoders._Conv)]
        assert convs and all(c.packed is not None for c in convs), "the second call did not use the reordered weights"
    with torch.enable_grad():
        unfolded = model.encode(x)
    assert unfolded.requires_grad and (unfolded.detach() - second).abs().max() <= 1e-4

    bn = ckpt.encoder.body[5].res_layer[4]  # a batch norm folded into its convolution
    with torch.no_grad():
        bn.running_var.mul_(4)
    with torch.inference_mode():
        changed = model.encode(x)
    with torch.enable_grad():
        expected = model.encode(x).detach()
    assert (changed - second).abs().max() > 1e-3, "the in-place change did not reach the inference path"
    assert (changed - expected).abs().max() <= 1e-4


def test_building_and_running_the_inverter_on_cpu_keeps_the_files_encoder_weights(case_checkpoint, case_arrays):
    """A loaded encoder's weights are the checkpoint's (memory-mapped) tensors: building the inverter copies none
    of them, and the inference path runs the style blocks' convolutions on them as they are."""
    ckpt = load_checkpoint(case_checkpoint("e4e_256"))
    before = {name: p.data_ptr() for name, p in ckpt.encoder.named_parameters()}
    model = ckpt.inverter()
    assert {name: p.data_ptr() for name, p in model.encoder.named_parameters()} == before
    x = torch.from_numpy(case_arrays("e4e_256")["x"][:1])
    with torch.inference_mode():
        model.encode(x)
    block = ckpt.encoder.styles[0]
    convs = block._folded.value
    assert [c.weight.data_ptr() for c in convs] == [conv.weight.data_ptr() for conv in block.convs[::2]]


def test_e4e_progressive_stages_reproduce_original(case_checkpoint, case_arrays):
    z = case_arrays("e4e_256")
    ckpt = load_checkpoint(case_checkpoint("e4e_256"))
    model = ckpt.inverter()
    x = torch.from_numpy(z["x"])
    for stage in (0, 3, 8):
        ckpt.encoder.set_progressive_stage(stage)
        with torch.inference_mode():
            assert maxdiff(model.encode(x), z[f"latents_stage{stage}"]) <= TOL, f"stage {stage}"
    # stage 0 trains one W: every style equals style 0
    ckpt.encoder.set_progressive_stage(0)
    with torch.inference_mode():
        codes = ckpt.encoder(x)
    assert torch.equal(codes, codes[:, :1].expand_as(codes))


@pytest.mark.parametrize("case", GENERATOR_CASES)
def test_generator_case_reproduces_original(case, case_checkpoint, case_arrays, kit):
    z = case_arrays(case)
    meta = json.loads((kit / "cases" / f"{case}.json").read_text())
    ckpt = load_checkpoint(case_checkpoint(case))
    gen = ckpt.generator
    assert gen.size == meta["size"]
    with torch.inference_mode():
        assert maxdiff(gen.mapping(torch.from_numpy(z["z"])), z["w"]) <= TOL
        img, _ = gen([torch.from_numpy(z["z"])], truncation=0.7, truncation_latent=ckpt.latent_avg, randomize_noise=False)
        assert maxdiff(img, z["images_z_trunc07"]) <= TOL
        assert maxdiff(gen.synthesis(torch.from_numpy(z["wplus"])), z["images_wplus"]) <= TOL


def _meta_state_dict(entries: list) -> dict:
    return {k: torch.empty(shape, dtype=getattr(torch, dtype), device="meta") for k, shape, dtype, *_ in entries}


@pytest.mark.parametrize("manifest", ["stylegan2_512_cm2", "stylegan2_256_cm2", "stylegan2_64_cm1"])
def test_published_generator_layouts_load_strictly(manifest, kit_weights):
    entries = kit_weights.load_manifest(manifest)["parts"]["g_ema"]
    sd = _meta_state_dict(entries)
    cfg = generator_config(sd)
    with torch.device("meta"):
        gen = build_generator_meta(cfg)
    own = gen.state_dict()
    assert list(own) == [e[0] for e in entries], "keys must be registered in the original order"
    assert all(tuple(own[k].shape) == tuple(s) for k, s, *_ in entries)
    load_strict(gen, sd, manifest)  # raises on any missing/unexpected key or shape


def build_generator_meta(cfg):
    from e4ecli.models.stylegan2 import Generator

    return Generator(**cfg)


@pytest.mark.parametrize("manifest,size", [("Encoder4Editing_1024", 1024), ("Encoder4Editing_256", 256),
                                           ("GradualStyleEncoder_256", 256), ("SingleStyleCodeEncoder_256", 256)])
def test_published_encoder_layouts_load_strictly(manifest, size, kit_weights):
    parts = kit_weights.load_manifest(manifest)["parts"]
    with torch.device("meta"):
        enc = ENCODERS[manifest.rsplit("_", 1)[0]](size)
    own = enc.state_dict()
    assert list(own) == [e[0] for e in parts["encoder"]]
    load_strict(enc, _meta_state_dict(parts["encoder"]), manifest)
    dec_sd = _meta_state_dict(parts["decoder"])
    cfg = generator_config(dec_sd)
    assert cfg["size"] == size
    assert enc.style_count == 2 * int(np.log2(size)) - 2


def test_full_size_e4e_checkpoint_style_count():
    # the published FFHQ e4e predicts 18 styles for a 1024 generator
    from e4ecli.models.encoders import style_count

    assert style_count(1024) == 18 and style_count(512) == 16 and style_count(256) == 14


def test_generator_from_real_tensors_matches_meta_build(case_checkpoint):
    ckpt = torch.load(case_checkpoint("stylegan2_64_cm1"), weights_only=True)
    gen = build_generator(ckpt["g_ema"])
    assert gen.channels == {4: 512, 8: 512, 16: 512, 32: 512, 64: 256}


def test_both_modulated_conv_paths_reproduce_original(case_checkpoint, case_arrays):
    """Image-by-image weight modulation (CPU inference) and batched activation scaling (training,
    GPU) are the same linear map: both reproduce the case, and channels_last changes nothing."""
    z = case_arrays("stylegan2_64_cm1")
    gen = load_checkpoint(case_checkpoint("stylegan2_64_cm1")).generator
    wplus = torch.from_numpy(z["wplus"])
    with torch.no_grad():
        per_image = gen.synthesis(wplus)
    with torch.enable_grad():
        batched = gen.synthesis(wplus.clone().requires_grad_(True))  # grad enabled -> batched path
    gen.channels_last = False
    with torch.no_grad():
        nchw = gen.synthesis(wplus)
    for out in (per_image, batched.detach(), nchw):
        assert maxdiff(out, z["images_wplus"]) <= TOL


def test_cpu_batch_renders_image_by_image_with_its_own_noise(case_checkpoint):
    """A CPU batch is rendered image by image: each image gets its own slice of per-image noise, and
    shared (1, 1, H, W) noise is shared; the result is the batch the batched path computes."""
    gen = load_checkpoint(case_checkpoint("stylegan2_64_cm1")).generator
    g = torch.Generator().manual_seed(3)
    wplus = torch.randn(3, gen.n_latent, gen.style_dim, generator=g) * 0.5
    noise = [torch.randn(3 if i % 2 else 1, 1, *t.shape[2:], generator=g) for i, t in enumerate(gen.stored_noise())]
    with torch.no_grad():
        split = gen.synthesis(wplus, noise)
        singles = torch.cat([gen.synthesis(wplus[k : k + 1], [t if t.shape[0] == 1 else t[k : k + 1] for t in noise]) for k in range(3)])
    with torch.enable_grad():
        batched = gen.synthesis(wplus.clone().requires_grad_(True), noise).detach()  # grad enabled -> the batched path
    assert torch.equal(split, singles)
    assert (split - batched).abs().max() < 1e-4
    with torch.no_grad():  # random noise (None) still renders the whole batch
        assert gen.synthesis(wplus, [None] * gen.num_layers).shape == (3, 3, 64, 64)
