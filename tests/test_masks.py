"""Face masks of stitching: the BiSeNet parser in face-parsing.PyTorch's published layout (strict load, seeded
weights), and the landmark hull used without it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from e4ecli.hub.checkpoints import CheckpointError
from e4ecli.hub.networks import load_face_parser
from e4ecli.pasteback import affine_from_quad
from e4ecli.refine.masks import FaceMasker, hull_mask, landmarks_in_crop, parsing_mask


def published_layout(n_classes: int = 19) -> dict[str, tuple]:
    """key -> shape of `79999_iter.pth`, spelled out from face-parsing.PyTorch's model.py / resnet.py."""
    sd: dict[str, tuple] = {}

    def conv(k, cout, cin, ks):
        sd[f"{k}.weight"] = (cout, cin, ks, ks)

    def bn(k, c):
        for s in ("weight", "bias", "running_mean", "running_var"):
            sd[f"{k}.{s}"] = (c,)
        sd[f"{k}.num_batches_tracked"] = ()

    def conv_bn_relu(k, cin, cout, ks):
        conv(f"{k}.conv", cout, cin, ks)
        bn(f"{k}.bn", cout)

    conv("cp.resnet.conv1", 64, 3, 7)
    bn("cp.resnet.bn1", 64)
    cin = 64
    for i, c in enumerate((64, 128, 256, 512), 1):
        for b in range(2):
            k, ci = f"cp.resnet.layer{i}.{b}", (cin if b == 0 else c)
            conv(f"{k}.conv1", c, ci, 3), bn(f"{k}.bn1", c), conv(f"{k}.conv2", c, c, 3), bn(f"{k}.bn2", c)
            if b == 0 and i > 1:
                conv(f"{k}.downsample.0", c, ci, 1), bn(f"{k}.downsample.1", c)
        cin = c
    for name, ci in (("arm16", 256), ("arm32", 512)):
        conv_bn_relu(f"cp.{name}.conv", ci, 128, 3)
        conv(f"cp.{name}.conv_atten", 128, 128, 1)
        bn(f"cp.{name}.bn_atten", 128)
    conv_bn_relu("cp.conv_head32", 128, 128, 3)
    conv_bn_relu("cp.conv_head16", 128, 128, 3)
    conv_bn_relu("cp.conv_avg", 512, 128, 1)
    conv_bn_relu("ffm.convblk", 256, 256, 1)
    conv("ffm.conv1", 64, 256, 1)
    conv("ffm.conv2", 256, 64, 1)
    for name, ci, mid in (("conv_out", 256, 256), ("conv_out16", 128, 64), ("conv_out32", 128, 64)):
        conv_bn_relu(f"{name}.conv", ci, mid, 3)
        conv(f"{name}.conv_out", n_classes, mid, 1)
    return sd


def seeded(layout: dict[str, tuple], seed: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in layout.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(1000, dtype=torch.long)
        elif k.endswith("running_var"):
            out[k] = 0.5 + torch.rand(shape, generator=g)
        elif len(shape) == 4:
            out[k] = torch.randn(shape, generator=g) * (2 / (shape[1] * shape[2] * shape[3])) ** 0.5
        else:
            out[k] = 0.1 * torch.randn(shape, generator=g) + (1.0 if k.endswith(".weight") else 0.0)
    return out


@pytest.fixture(scope="module")
def parser_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("parser") / "79999_iter.pth"
    torch.save(seeded(published_layout()), path)
    return path


def test_the_published_layout_loads_strictly(parser_file):
    net = load_face_parser(parser_file)
    assert set(net.state_dict()) == set(published_layout()) and len(net.state_dict()) == 191
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        main, aux16, aux32 = net(x, aux=True)
    assert main.shape == aux16.shape == aux32.shape == (1, 19, 64, 64)


def test_its_resnet_is_torchvisions_resnet18(parser_file):
    """The context path's trunk computes what torchvision's ResNet-18 does with the same weights."""
    torchvision = pytest.importorskip("torchvision")
    net = load_face_parser(parser_file)
    ref = torchvision.models.resnet18()
    trunk = {k[len("cp.resnet."):]: v for k, v in net.state_dict().items() if k.startswith("cp.resnet.")}
    missing = ref.load_state_dict(trunk, strict=False).missing_keys
    assert sorted(missing) == ["fc.bias", "fc.weight"]
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref.eval()
        expected = ref.layer4(ref.layer3(ref.layer2(ref.layer1(ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))))))
        assert torch.allclose(net.cp.resnet(x)[2], expected, atol=1e-5)


def test_a_file_of_another_layout_is_refused(tmp_path):
    sd = seeded(published_layout())
    del sd["ffm.conv1.weight"]
    sd["ffm.extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="ffm.conv1.weight"):
        load_face_parser(tmp_path / "bad.pth")
    # a file without the batch-norm counters (older torch) still loads
    sd = {k: v for k, v in seeded(published_layout()).items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "old.pth")
    load_face_parser(tmp_path / "old.pth")


def test_parsing_mask_and_masker(parser_file):
    crop = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    masker = FaceMasker("parsing", parser=str(parser_file))
    fm = masker(crop)
    assert fm.kind == "parsing" and masker.note is None
    assert fm.mask.shape == (64, 64) and set(np.unique(fm.mask)) <= {0.0, 1.0}
    assert np.array_equal(fm.mask, parsing_mask(masker.net, crop))


def square_landmarks(c=(32.0, 30.0), r=10.0) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    return np.stack([c[0] + r * np.cos(t), c[1] + r * np.sin(t)], 1)


def test_landmark_hull_without_the_parser(tmp_path):
    masker = FaceMasker("auto", parser=str(tmp_path / "absent" / "79999_iter.pth"))
    assert masker.kind == "landmarks" and "landmark hull" in masker.note and "absent" in masker.note
    fm = masker(np.zeros((64, 64, 3), np.uint8), square_landmarks())
    assert fm.kind == "landmarks"
    assert fm.mask[30, 32] == 1 and fm.mask[30, 32 + 10 + 2] == 1  # inside, and within the 40/1024*64 = 2.5 px dilation
    assert fm.mask[30, 32 + 10 + 4] == 0 and fm.mask[0, 0] == 0
    with pytest.raises(CheckpointError):
        FaceMasker("parsing", parser=str(tmp_path / "absent" / "79999_iter.pth"))
    undilated = hull_mask(square_landmarks(), 64, dilation=0)
    assert np.pi * 9 ** 2 < undilated.sum() < np.pi * 11 ** 2  # the disc of radius 10 the points lie on


def test_landmarks_map_into_the_crop():
    """A 64 px crop of the photo square with corners (100, 50)..(228, 178): photo = 2 * crop + offset."""
    quad = [[100, 50], [100, 178], [228, 178], [228, 50]]
    a = affine_from_quad(quad, 64)
    crop_pts = landmarks_in_crop(np.array([[100.0, 50.0], [227.0, 177.0]]), a)
    # the quad's corners are pixel centres (+0.5 as handed to PIL): photo pixel (100, 50) sits on the crop's
    # corner, half a crop pixel before the centre of crop pixel 0
    assert np.allclose(crop_pts, [[-0.5, -0.5], [63.0, 63.0]])
