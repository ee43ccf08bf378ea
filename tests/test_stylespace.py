"""StyleSpace rendering, StyleSpace/text directions (StyleCLIP global directions), relevance files, CLIP weights."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from e4ecli.edits import stylespace as ss
from e4ecli.hub.directions import DirectionError, read_relevance
from e4ecli.pipelines.directions import clip_cached, style_stats_cached

from conftest import run
from editing_kit import g64_path, vitb32_file, wplus64, write_relevance  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def gen64(case_checkpoint):
    from e4ecli.hub.checkpoints import load_checkpoint

    return load_checkpoint(case_checkpoint("stylegan2_64_cm1")).generator.eval()


@pytest.mark.parametrize("case", ["stylegan2_64_cm1", "stylegan2_256_cm2"])
def test_stylespace_path_equals_wplus_path(case, case_checkpoint, case_arrays):
    from e4ecli.hub.checkpoints import load_checkpoint

    gen = load_checkpoint(case_checkpoint(case)).generator.eval()
    w = torch.from_numpy(case_arrays(case)["wplus"][: 2 if gen.size == 64 else 1]).float()
    with torch.no_grad():
        direct = gen.synthesis(w)
        styles = gen.style_vectors(w)
        via_s = gen.synthesis_s(styles)
    assert [s.shape[1] for s in styles] == gen.style_channels() and len(styles) == 3 * (gen.log_size - 2) + 2
    assert (via_s - direct).abs().max().item() <= 1e-6
    if gen.size > 64:
        return
    # offsets compose after the W+ code: synthesis(w, offsets) == synthesis_s(A(w) + offsets)
    g = torch.Generator().manual_seed(1)
    offsets = [0.3 * torch.randn(s.shape, generator=g) for s in styles]
    with torch.no_grad():
        a = gen.synthesis(w, style_offsets=offsets)
        b = gen.synthesis_s([s + o for s, o in zip(styles, offsets)])
    assert (a - b).abs().max().item() <= 1e-6 and (a - direct).abs().max().item() > 1e-3


def test_style_vectors_refuse_wrong_shapes(gen64):
    w = torch.zeros(1, gen64.n_latent, 512)
    styles = gen64.style_vectors(w)
    with pytest.raises(ValueError, match="StyleSpace codes"):
        gen64.synthesis_s(styles[:-1])


def test_global_direction_matches_numpy():
    rng = np.random.RandomState(0)
    emb = {p: rng.randn(len(ss.IMAGENET_TEMPLATES), 16) for p in ("target", "neutral")}
    rel = rng.randn(40, 16)
    rel /= np.linalg.norm(rel, axis=1, keepdims=True)

    def encode(prompts):  # the same rows for a prompt's 80 template texts, looked up by the prompt in them
        key = "target" if "target" in prompts[0] else "neutral"
        assert len(prompts) == len(ss.IMAGENET_TEMPLATES) and all(key in p for p in prompts)
        return torch.from_numpy(emb[key])

    def np_embed(e):
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        m = e.mean(0)
        return m / np.linalg.norm(m)

    t = np_embed(emb["target"]) - np_embed(emb["neutral"])
    t /= np.linalg.norm(t)
    r = rel @ t
    beta = np.sort(np.abs(r))[-7:-5].mean()  # keeps the six largest
    expected = np.where(np.abs(r) < beta, 0.0, r)
    expected /= np.abs(expected).max()

    delta = ss.text_delta(ss.prompt_embedding(encode, "target"), ss.prompt_embedding(encode, "neutral"))
    got = ss.global_direction(torch.from_numpy(rel), delta, float(beta)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-9)
    assert (got != 0).sum() == 6 and np.abs(got).max() == 1.0
    with pytest.raises(ss.BetaTooHigh, match=f"largest usable value for this prompt is {np.abs(r).max():.4f}"):
        ss.global_direction(torch.from_numpy(rel), delta, float(np.abs(r).max()) + 1e-3)


def test_split_conv_scales_by_std_and_skips_torgb(gen64):
    stats = ss.style_stats(gen64, samples=256)
    channels, convs = gen64.style_channels(), ss.conv_layers(gen64)
    assert 1 not in convs and 4 not in convs and 0 in convs
    flat = torch.arange(sum(channels[k] for k in convs), dtype=torch.float64)
    parts = ss.split_conv(flat, channels, convs, stats.std)
    assert torch.equal(parts[1], torch.zeros(channels[1]))
    assert torch.allclose(parts[2], flat[channels[0]:channels[0] + channels[2]].float() * stats.std[2])


def test_stylespace_channel_edit_moves_one_channel_by_its_std(gen64):
    from e4ecli.pipelines.directions import resolve

    edit = resolve("stylespace:2:7", gen64, sefa_cache_key="gen64")
    std = style_stats_cached(gen64, "gen64").std
    nonzero = [(k, int(i)) for k, d in enumerate(edit.s_direction) for i in torch.nonzero(d).flatten()]
    assert nonzero == [(2, 7)] and edit.s_direction[2][7].item() == pytest.approx(std[2][7].item())
    offs = edit.style_offsets(torch.tensor([1.0, -2.0]), 2)
    assert offs[2][1, 7].item() == pytest.approx(-2 * std[2][7].item())
    for bad, why in (("stylespace:99:0", "layers 0..13"), ("stylespace:2:9999", "channels 0..511"), ("stylespace:2", "LAYER:CHANNEL")):
        with pytest.raises(DirectionError, match=why):
            resolve(bad, gen64)


@pytest.mark.parametrize("prompt,why", [
    ("", "empty"), ("  ''  ", "empty"), ("a face\nwith a smile", "control character U\\+000A"), ("smile\x1b[2J", "U\\+001B"),
    ("x" * 10_000, "10000 characters"),
])
def test_hostile_prompts_are_refused(prompt, why):
    with pytest.raises(DirectionError, match=why):
        ss.clean_prompt(prompt)


def test_quotes_and_unicode_are_kept():
    assert ss.clean_prompt('"a face with \'lipstick\'"') == "a face with 'lipstick'"
    assert ss.clean_prompt("ein Gesicht mit Lächeln 😀") == "ein Gesicht mit Lächeln 😀"


def test_relevance_file_of_another_layout_is_refused_naming_it(gen64, tmp_path):
    rows = sum(ss.conv_layout(gen64))
    wrong = tmp_path / "fs3_other.npy"
    np.save(wrong, np.zeros((rows + 3, 512), np.float32))
    with pytest.raises(DirectionError, match=f"{wrong}.*{rows + 3} channel rows.*{rows}"):
        ss.check_relevance(read_relevance(wrong), gen64, 512, "ffhq")
    other = tmp_path / "other.npz"
    np.savez(other, fs3=np.zeros((rows, 512), np.float32), channels=np.array([rows // 2, rows - rows // 2]))
    with pytest.raises(DirectionError, match=f"{other}.*made for a generator"):
        ss.check_relevance(read_relevance(other), gen64, 512, "ffhq")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DirectionError, match=str(bad)):
        read_relevance(bad)


@pytest.fixture(scope="module")
def small64():
    """A seeded 64 px generator with few channels (cheap renders)."""
    from e4ecli.models.stylegan2 import Generator

    torch.manual_seed(11)
    return Generator(64, n_mlp=2, channels={4: 32, 8: 32, 16: 32, 32: 16, 64: 8}).eval()


def test_relevance_rows_match_a_direct_finite_difference(small64, tmp_path):
    from e4ecli.pipelines.styleclip import compute_relevance, parse_rows

    gen64 = small64
    proj = torch.randn(3 * 16 * 16, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def embed(images):  # a fixed random projection of the 16 px thumbnails: any image embedding will do
        return torch.nn.functional.adaptive_avg_pool2d(images.double(), 16).flatten(1) @ proj

    class Embedder:
        identity, dim = "proj8", 8
        embed_images = staticmethod(embed)

    out = tmp_path / "rel.npz"
    rows = parse_rows("0-1,100", sum(ss.conv_layout(gen64)))
    done, missing = compute_relevance(gen64, Embedder(), out, samples=3, seed=5, rows=rows, stats_key="small64", chunk=2)
    assert done == 3 and missing == sum(ss.conv_layout(gen64)) - 3
    with np.load(out) as z:
        fs3, flags = z["fs3"], z["done"]
    assert flags[rows].all() and flags.sum() == 3

    stats = style_stats_cached(gen64, "small64")
    z = torch.randn(3, gen64.style_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        w = gen64.mapping(z)[:, None].repeat(1, gen64.n_latent, 1)
        base = gen64.style_vectors(w)
    targets = ss.all_channels(gen64)
    for r in rows:
        layer, ch = targets[r]
        feats = []
        for sign in (-1, 1):
            offsets = [torch.zeros_like(s) for s in base]
            offsets[layer][:, ch] = stats.mean[layer][ch] + sign * 5 * stats.std[layer][ch] - base[layer][:, ch]
            with torch.no_grad():
                f = embed(gen64.synthesis(w, style_offsets=offsets))
            feats.append(f / f.norm(dim=1, keepdim=True))
        d = feats[1] - feats[0]
        d = (d / d.norm(dim=1, keepdim=True)).mean(0)
        np.testing.assert_allclose(fs3[r], (d / d.norm()).numpy(), atol=2e-4)
    with pytest.raises(DirectionError, match="unfinished"):
        read_relevance(out)
    # a rerun continues; other settings are refused naming the file
    assert compute_relevance(gen64, Embedder(), out, samples=3, seed=5, rows=rows, stats_key="small64")[0] == 0
    with pytest.raises(DirectionError, match=f"{out}.*other settings"):
        compute_relevance(gen64, Embedder(), out, samples=4, seed=5, rows=rows, stats_key="small64")


def test_torchscript_weights_are_read_without_running_code(tmp_path):
    from e4ecli.hub.clip import read_state_dict

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4)).half()
    archive = tmp_path / "ts.pt"
    torch.jit.trace(model.float(), torch.randn(1, 3)).save(str(archive))
    sd = read_state_dict(archive)
    assert sorted(sd) == sorted(model.state_dict()) and all(torch.equal(sd[k], v) for k, v in model.float().state_dict().items())


def test_clip_weights_load_in_the_vitb32_layout_and_others_are_refused(vitb32_file, tmp_path):
    from e4ecli.hub.clip import load_clip
    from e4ecli.hub.types import CheckpointError

    clip = clip_cached(vitb32_file, "cpu")  # what text edits load (kept for the CLI test below)
    assert clip.dim == 512 and clip.encode("a face") and clip.identity
    prompts = ["a photo of a face with lipstick.", "itap of a car."]
    with torch.no_grad():  # the context cut after the end token gives open_clip's own numbers
        full = clip.model.encode_text(clip.tokenizer(prompts)).float()
    assert torch.allclose(clip.encode_text(prompts), full, atol=1e-4 * full.abs().max().item())
    img = clip.embed_images(torch.zeros(1, 3, 64, 64))
    assert img.shape == (1, 512) and torch.isfinite(img).all()
    with pytest.raises(DirectionError, match="shorten it"):
        ss.check_token_length("word " * 70, clip.encode)
    sd = torch.load(vitb32_file, weights_only=True)
    sd.pop("visual.proj")
    other = tmp_path / "not_vitb32.pt"
    torch.save(sd, other)
    with pytest.raises(CheckpointError, match=f"{other}.*missing visual.proj"):
        load_clip(other)


def test_cli_stylespace_edit_sweeps_and_composes_after_a_wplus_edit(e4e_64, tmp_path):
    from e4ecli.pipelines.edit import read_offsets

    lat = tmp_path / "lat"
    lat.mkdir()
    w = 0.5 * np.random.RandomState(0).randn(10, 512).astype(np.float32)
    np.save(lat / "a.npy", w)
    d = np.random.RandomState(1).randn(512).astype(np.float32)
    np.save(tmp_path / "d.npy", d)
    out = tmp_path / "out"
    r = run("edit", lat, "-o", out, "-d", tmp_path / "d.npy", "-s", "1", "-d", "stylespace:3:10", "-s", "-2:2:3", "--checkpoint", e4e_64,
            "--save-latents", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert (out / "a.png").is_file()  # the labelled strip
    values = []
    for k, tag in enumerate(("-2", "+0", "+2")):
        np.testing.assert_allclose(np.load(out / "a" / f"{k:02d}_s{tag}.npy"), w + d, atol=1e-6)  # the W+ edit, then S offsets
        offsets = np.concatenate(read_offsets(out / "a" / f"{k:02d}_s{tag}.s.npz"))
        assert np.count_nonzero(offsets) == (0 if tag == "+0" else 1)
        values.append(read_offsets(out / "a" / f"{k:02d}_s{tag}.s.npz")[3][10])
    assert values[0] == pytest.approx(-values[2]) and values[2] > 0 and values[1] == 0


@pytest.mark.parametrize("args,why", [
    (["-d", "text:", "-s", "1"], "empty"),
    (["-d", "text:a smile"], "--relevance FILE"),
    (["-d", "text:a smile", "--relevance", "missing.npz"], "no such file"),
    (["-d", "text:" + "x" * 10_000, "--relevance", "missing.npz"], "10000 characters"),
    (["-d", "stylespace:a:b", "-s", "1"], "LAYER:CHANNEL"),
])
def test_cli_bad_text_options_fail_fast(args, why, tmp_path):
    (tmp_path / "a.npy").write_bytes(b"")
    t = time.perf_counter()
    r = run("edit", tmp_path / "a.npy", "-o", tmp_path / "o", *args)
    assert r.exit_code == 2 and why in r.output, r.output
    assert time.perf_counter() - t < 5 and not (tmp_path / "o").exists()


def test_help_and_spec_checks_import_neither_clip_nor_torch():
    code = ("import sys; from e4ecli.cli import app; import e4ecli.cli.edit, e4ecli.cli.eval, e4ecli.cli.video\n"
            "from e4ecli.pipelines.directions import check\nfrom e4ecli.edits.prompts import TextOptions\n"
            "for spec in ('text:', 'text:a smile', 'stylespace:1:x'):\n"
            "    try: check(spec, None, TextOptions())\n"
            "    except Exception as e: print(type(e).__name__)\n"
            "print('open_clip' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert out.stdout.split() == ["DirectionError"] * 3 + ["False", "False"], out.stdout + out.stderr


def test_cli_text_edit_end_to_end_with_offline_weights(e4e_64, vitb32_file, tmp_path):
    """e4e edit -d "text:..." with --clip-weights and a relevance file: renders, saves the offsets, and a rerun with
    another --beta redoes the output (the prompt, neutral, beta, CLIP and relevance files are in the fingerprint)."""
    from e4ecli.hub.checkpoints import load_checkpoint
    from e4ecli.pipelines.edit import read_offsets

    rel_file = write_relevance(load_checkpoint(e4e_64).generator, tmp_path / "rel.npz")
    lat = tmp_path / "lat"
    lat.mkdir()
    np.save(lat / "a.npy", 0.5 * np.random.RandomState(0).randn(10, 512).astype(np.float32))
    out = tmp_path / "out"
    args = ["edit", lat, "-o", out, "-d", "text:a face with lipstick", "-s", "4", "--checkpoint", e4e_64, "--clip-weights", vitb32_file,
            "--relevance", rel_file, "--save-latents", "--device", "cpu"]
    r = run(*args, "--beta", "0.05")
    assert r.exit_code == 0, r.output
    offsets = np.concatenate(read_offsets(out / "a.s.npz"))
    assert (out / "a.png").is_file() and np.count_nonzero(offsets) > 0
    first = (out / "a.png").stat().st_mtime_ns
    assert run(*args, "--beta", "0.05").exit_code == 0 and (out / "a.png").stat().st_mtime_ns == first  # same settings: skipped
    assert run(*args, "--beta", "0.1").exit_code == 0 and (out / "a.png").stat().st_mtime_ns != first  # another beta: redone
    assert np.count_nonzero(np.concatenate(read_offsets(out / "a.s.npz"))) < np.count_nonzero(offsets)
    r = run(*args, "--beta", "0.99")
    assert r.exit_code == 2 and "largest usable value" in r.output, r.output


def test_cli_directions_styleclip_computes_resumable_rows(e4e_64, vitb32_file, tmp_path):
    from e4ecli.hub.checkpoints import load_checkpoint

    out = tmp_path / "rel.npz"
    r = run("directions", "styleclip", "-o", tmp_path / "rel.npy", "--checkpoint", e4e_64)
    assert r.exit_code == 2 and "written as .npz" in r.output
    args = ["directions", "styleclip", "-o", out, "--checkpoint", e4e_64, "--clip-weights", vitb32_file, "--samples", "1",
            "--device", "cpu"]
    r = run(*args, "--channels", "5")
    assert r.exit_code == 0 and "unfinished" in r.output, r.output
    with np.load(out) as z:
        assert z["done"].sum() == 1 and z["done"][5] and abs(np.linalg.norm(z["fs3"][5]) - 1) < 1e-5
        assert list(z["channels"]) == list(ss.conv_layout(load_checkpoint(e4e_64).generator))
    r = run(*args, "--samples", "2", "--channels", "5")
    assert r.exit_code == 2 and "other settings" in r.output and str(out) in r.output, r.output


def test_edit_video_ramps_stylespace_offsets_per_frame():
    from e4ecli.edits.specs import Edit
    from e4ecli.pipelines.video_edit import Ramp, edit_codes, edit_offsets

    d = (torch.zeros(4), torch.tensor([0.0, 2.0, 0.0]))
    edit = Edit("stylespace:1:1", "stylespace", s_direction=d)
    w = torch.randn(3, 2, 8)
    steps = [(edit, Ramp(0.0, 2.0))]
    assert torch.equal(edit_codes(w, steps, [0, 5, 10], 11), w)  # W+ untouched
    offsets = edit_offsets(steps, [0, 5, 10], 11)
    assert offsets[0].shape == (3, 4) and not offsets[0].any()
    assert offsets[1][:, 1].tolist() == [0.0, 2.0, 4.0]
    assert edit_offsets([], [0], 1) is None


def test_eval_refuses_lec_for_stylespace_edits_before_loading(tmp_path):
    r = run("eval", tmp_path, "--json", tmp_path / "o.json", "-m", "lec", "-d", "stylespace:1:1", "-s", "1")
    assert r.exit_code == 2 and "defined for W+ edits" in r.output and r.output.count("error:") == 1, r.output
    assert not (tmp_path / "o.json").exists()


def test_cli_stylespace_edit_pastes_back(tmp_path, g64_path, wplus64):
    from PIL import Image

    from e4ecli.files.images import load_rgb
    from editing_kit import KIT, kit_face_quad, write_sidecar

    lat = tmp_path / "lat"
    lat.mkdir()
    np.save(lat / "a.npy", wplus64[0])
    quad = kit_face_quad()
    write_sidecar(lat / "a.json", KIT / "photos" / "face.jpg", quad, 256)
    out = tmp_path / "out"
    r = run("edit", lat, "-o", out, "-d", "stylespace:2:3", "-s", "8", "--paste-back", "-c", g64_path, "--device", "cpu")
    assert r.exit_code == 0, r.output
    photo = np.asarray(load_rgb(KIT / "photos" / "face.jpg"))
    pasted = np.asarray(Image.open(out / "a.pasted.png"))
    changed = np.any(pasted != photo, axis=-1)
    x0, y0 = np.floor(quad.min(axis=0)).astype(int)
    x1, y1 = np.ceil(quad.max(axis=0)).astype(int)
    outside = changed.copy()
    outside[y0:y1 + 1, x0:x1 + 1] = False
    assert pasted.shape == photo.shape and not outside.any() and changed[y0:y1, x0:x1].mean() > 0.5
