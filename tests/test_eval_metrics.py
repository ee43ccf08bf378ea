"""The set metrics of `e4e eval` on known distributions (no models): Fréchet distance, FID wiring with a
small fixed feature network, SWD on Laplacian-pyramid patches, the reservoir, LEC's formula, --metrics parsing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from e4ecli.metrics.fid import FID, FeatureStats, frechet_distance
from e4ecli.metrics.lec import lec_per_image, percentile_filtered_mean
from e4ecli.metrics.swd import PatchSet, Reservoir, _pyr_up, laplacian_pyramid, swd
from e4ecli.pipelines.eval import NeedsEdit, parse_metrics


# -- Fréchet distance -------------------------------------------------------------------------------
def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    """Commuting (diagonal) covariances: d = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2."""
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 0.25])
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, -1.0])
    expected = float((mu1 - mu2).pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum())
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_scipy_sqrtm_for_general_covariances():
    g = torch.Generator().manual_seed(0)
    m1, m2 = torch.randn(6, 6, generator=g, dtype=torch.float64), torch.randn(6, 6, generator=g, dtype=torch.float64)
    c1, c2 = m1 @ m1.T + 0.1 * torch.eye(6, dtype=torch.float64), m2 @ m2.T
    mu1, mu2 = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    covmean = linalg.sqrtm(c1.numpy() @ c2.numpy()).real
    expected = float(((mu1 - mu2) ** 2).sum()) + np.trace(c1.numpy() + c2.numpy() - 2 * covmean)
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-7)
    assert frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-9)


def test_feature_stats_stream_equals_numpy_mean_and_cov():
    """Batches accumulated one by one give the statistics of the whole set (memory flat in N)."""
    x = np.random.default_rng(1).normal(size=(50, 5)) * [1, 2, 3, 4, 5] + 10
    stats = FeatureStats()
    for chunk in np.array_split(x, 7):
        stats.update(torch.from_numpy(chunk))
    mu, cov = stats.mean_cov()
    np.testing.assert_allclose(mu.numpy(), x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov.numpy(), np.cov(x, rowvar=False), rtol=1e-9)
    with pytest.raises(ValueError, match="at least 2"):
        FeatureStats().mean_cov()


def _small_extractor():
    """A small fixed network (seeded conv + global pooling) standing in for InceptionV3: uint8 -> (N, 8)."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    torch.manual_seed(0)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return lambda images: net(images.float() / 127.5 - 1).double()


def _images(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    """n random uint8 images (N, 3, 32, 32); `shift` brightens them (in grey levels)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 32, 32, generator=g) * 120 + 40
    return (base + shift).clamp(0, 255).to(torch.uint8)


def test_fid_wiring_with_small_extractor_identical_zero_and_monotone_in_shift():
    extractor = _small_extractor()
    real = _images(64, 0)
    dists = []
    for shift in (0.0, 20.0, 40.0, 80.0):
        fid = FID(extractor, ("recon",))
        for k in range(0, 64, 16):  # batches, as the pipeline streams them
            fid.update("real", real[k:k + 16])
            fid.update("recon", (real[k:k + 16].float() + shift).clamp(0, 255).to(torch.uint8))
        dists.append(fid.distance("recon"))
    assert dists[0] == pytest.approx(0.0, abs=1e-8)
    assert all(b > a for a, b in zip(dists, dists[1:])), dists
    # another sample of the same distribution is close, far closer than a shifted one
    fid = FID(extractor, ("recon",))
    fid.update("real", real)
    fid.update("recon", _images(64, 1))
    assert fid.distance("recon") < dists[1]


# -- SWD --------------------------------------------------------------------------------------------
def test_laplacian_pyramid_levels_and_reconstruction():
    x = torch.rand(2, 3, 256, 256)
    levels = laplacian_pyramid(x)
    assert [lv.shape[-1] for lv in levels] == [256, 128, 64, 32, 16]
    recon = levels[-1]
    for lv in reversed(levels[:-1]):
        recon = _pyr_up(recon) + lv
    torch.testing.assert_close(recon, x, atol=1e-5, rtol=0)


def _textures(n: int, seed: int, noise: float) -> torch.Tensor:
    """Smooth random images (upsampled 8x8 noise) with white noise of amplitude `noise` mixed in: (n, 3, 64, 64)."""
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=64, mode="bicubic", align_corners=False)
    return smooth + noise * torch.randn(n, 3, 64, 64, generator=g)


def _swd(a: torch.Tensor, b: torch.Tensor) -> float:
    pa, pb = PatchSet(seed=1), PatchSet(seed=2)
    for k in range(0, a.shape[0], 8):
        pa.update(a[k:k + 8])
        pb.update(b[k:k + 8])
    return swd(pa, pb)[0]


def test_swd_identical_sets_zero_other_sample_small_and_monotone_in_shift():
    real = _textures(32, 0, 0.0)
    same = PatchSet(seed=3)
    same.update(real)
    assert swd(same, same)[0] == pytest.approx(0.0, abs=1e-9)
    baseline = _swd(real, _textures(32, 1, 0.0))  # another sample of the same distribution
    shifted = [_swd(real, _textures(32, 1, t)) for t in (0.02, 0.1, 0.5)]
    assert baseline < shifted[0] < shifted[1] < shifted[2], (baseline, shifted)
    assert shifted[-1] > 2 * baseline


def test_swd_levels_reported_per_level():
    real = _textures(8, 0, 0.0)
    pa, pb = PatchSet(seed=1), PatchSet(seed=2)
    pa.update(real)
    pb.update(_textures(8, 1, 0.1))
    mean, levels = swd(pa, pb)
    assert len(levels) == 3  # 64, 32, 16
    assert mean == pytest.approx(sum(levels) / 3)


def test_reservoir_is_bounded_and_uniform():
    res = Reservoir(1000, torch.Generator().manual_seed(0))
    for k in range(0, 100_000, 5000):
        res.offer(torch.arange(k, k + 5000, dtype=torch.float32)[:, None])
    assert res.rows.shape == (1000, 1) and res.seen == 100_000
    kept = res.rows[:, 0]
    assert abs(float(kept.mean()) - 50_000) < 3_000  # uniform over everything offered, not the first rows
    assert float((kept >= 90_000).float().mean()) == pytest.approx(0.1, abs=0.03)


# -- LEC, metric names ------------------------------------------------------------------------------
def test_lec_is_the_norm_over_all_styles_of_the_undone_edit():
    w = torch.zeros(2, 3, 4)
    d = torch.ones(1, 3, 4)
    edited = w + 2 * d
    reencoded = edited + torch.tensor([0.0, 1.0])[:, None, None]  # image 1 re-encodes 1 off everywhere
    torch.testing.assert_close(lec_per_image(w, edited, reencoded), torch.tensor([0.0, 12 ** 0.5]))
    vals = np.array([1.0] * 98 + [1000.0, -1000.0])
    assert percentile_filtered_mean(vals) == pytest.approx(1.0)


def test_parse_metrics_defaults_and_errors():
    assert parse_metrics("default", have_edit=False) == ["l2", "lpips", "id", "fid", "swd"]
    assert parse_metrics("default", have_edit=True)[-3:] == ["fid_edit", "swd_edit", "lec"]
    assert parse_metrics("lec, l2", have_edit=True) == ["l2", "lec"]
    with pytest.raises(ValueError, match="unknown metric.*psnr"):
        parse_metrics("l2,psnr", have_edit=False)
    with pytest.raises(NeedsEdit, match="lec measure") as info:
        parse_metrics("lec", have_edit=False)
    assert info.value.metrics == ["lec"] and "--" not in str(info.value)  # the CLI adds the flag


def test_fid_unavailable_offline_names_the_weights_file_and_where_it_goes(tmp_path, monkeypatch):
    """Without its InceptionV3 weights (and no download), FID is unavailable with a reason that says what to do."""
    from e4ecli.metrics import MetricUnavailable
    from e4ecli.metrics.fid import inception_extractor

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(MetricUnavailable) as err:
        inception_extractor(torch.device("cpu"), allow_download=False)
    assert "weights-inception-2015-12-05-6726825d.pth" in str(err.value)
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints") in str(err.value)
    bad = tmp_path / "torch_home" / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(MetricUnavailable, match="not a readable InceptionV3"):
        inception_extractor(torch.device("cpu"), allow_download=False)


def test_id_is_unavailable_for_non_face_domains():
    from e4ecli.pipelines.eval import build_metrics

    m = build_metrics(["l2", "id"], torch.device("cpu"), domain_name="cars_encode")
    assert "faces" in m.unavailable["id"] and "l2" in m.pair and "id" not in m.pair


def test_fid_inputs_have_the_saved_images_pixel_values():
    """FID sees exactly the uint8 values `tensor2im` (files.images.to_uint8) writes: truncated, not rounded."""
    from e4ecli.files.images import to_uint8
    from e4ecli.pipelines.eval import _uint8

    x = torch.cat([torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2.2 - 1.1,
                   torch.full((1, 3, 16, 16), 2 * 200.6 / 255 - 1)])  # 200.6 grey: rounding would give 201
    assert np.array_equal(_uint8(x).permute(0, 2, 3, 1).numpy(), to_uint8(x))
    assert int(_uint8(x)[2, 0, 0, 0]) == 200
