"""Domain facts -- the one place that decides them: preprocessing, output framing, whether the
images are faces, the short name directions and the zoo use, and the identity network.

`Domain.encoder_frame` is the one place a render is framed as the encoder's input (training, refinement, eval).

The original e4e code chooses them from `opts.dataset_type`: faces, horses and churches take
256x256 inputs; cars take 192x256 (height x width) and their square renders are cropped to the
car area (rows size/8 .. 7*size/8, i.e. 64:448 at 512). Its coach treats a dataset type containing
"ffhq" or "celeb" as faces (ArcFace identity loss) and every other one with MoCo v2; so does this
module, for known and custom dataset types alike, and every command asks it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Domain:
    name: str
    input_size: tuple[int, int]  # (height, width) the encoder sees
    crop_rows: tuple[float, float] | None = None  # fraction of the render's height kept, (top, bottom)
    is_face: bool = True  # human faces: ArcFace identity, face alignment, the face metrics

    @property
    def short(self) -> str:
        """The name directions and the weights zoo use: 'ffhq_encode' -> 'ffhq'."""
        return self.name.removesuffix("_encode")

    @property
    def identity(self) -> str:
        """The identity network of the training loss: 'arcface' for faces, 'moco' (MoCo v2) otherwise."""
        return "arcface" if self.is_face else "moco"

    def preprocess(self, image):
        """PIL RGB image -> float32 tensor (3, H, W) in [-1, 1], exactly as the original's transforms:
        PIL bilinear resize to `input_size`, ToTensor, Normalize(0.5, 0.5)."""
        import numpy as np
        import torch
        from PIL import Image

        h, w = self.input_size
        arr = np.asarray(image.convert("RGB").resize((w, h), Image.BILINEAR), dtype=np.float32)
        x = torch.from_numpy(arr / 255.0).permute(2, 0, 1)
        return (x - 0.5) / 0.5

    def crop(self, images):
        """images: (N, C, S, S) renders -> (N, C, h, S) framed like the original's outputs."""
        if self.crop_rows is None:
            return images
        size = images.shape[-2]
        top, bottom = int(round(self.crop_rows[0] * size)), int(round(self.crop_rows[1] * size))
        return images[..., top:bottom, :]

    def encoder_frame(self, images, size: tuple[int, int] | None = None):
        """Renders (N, C, S, S) -> the encoder's input frame (N, C, h, w): the domain's crop, then area averaging
        (adaptive average pooling, e4e's face_pool) to `size` (default `input_size`) -- what losses and metrics
        compare with an input image. Cars at 512: rows 64:448, then 192x256."""
        import torch.nn.functional as F

        images = self.crop(images)
        size = tuple(size or self.input_size)
        return images if tuple(images.shape[-2:]) == size else F.adaptive_avg_pool2d(images, size)


DOMAINS = {
    "ffhq_encode": Domain("ffhq_encode", (256, 256)),
    "cars_encode": Domain("cars_encode", (192, 256), crop_rows=(0.125, 0.875), is_face=False),
    "horse_encode": Domain("horse_encode", (256, 256), is_face=False),
    "church_encode": Domain("church_encode", (256, 256), is_face=False),
}


def is_face_type(dataset_type: str) -> bool:
    """The original coach's rule for dataset types it does not list: faces when the name says ffhq or celeb."""
    return "ffhq" in dataset_type or "celeb" in dataset_type


def domain_for(dataset_type: str | None, input_size: int | None = None) -> Domain:
    """Unknown dataset types fall back to square 256 inputs, faces only by `is_face_type`. `input_size`
    (a width, e.g. a checkpoint's `opts.input_size`) replaces the input width; the height keeps the aspect."""
    import dataclasses

    name = dataset_type or "ffhq_encode"
    domain = DOMAINS.get(name) or Domain(name, (256, 256), is_face=is_face_type(name))
    if input_size:
        h, w = domain.input_size
        domain = dataclasses.replace(domain, input_size=(max(1, round(input_size * h / w)), int(input_size)))
    return domain
