"""A small scatter-and-line plot drawn with Pillow (matplotlib is not a dependency): one labelled point
per setting, distortion on x, editability on y, written atomically as PNG."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

W, H, MARGIN = 720, 520, 80


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def _fmt(v: float, span: float) -> str:
    """Enough decimals that neighbouring ticks (span / 4 apart) read differently."""
    decimals = max(0, math.ceil(-math.log10(span / 4)) + 1) if span > 0 else 3
    return f"{v:.{min(decimals, 8)}f}"


def save_curve(path: Path, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str], x_label: str, y_label: str, title: str) -> None:
    from PIL import Image, ImageDraw

    from e4ecli.files.batch import atomic_output

    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    pad_x, pad_y = (x1 - x0) * 0.08 or abs(x0) * 0.1 or 1.0, (y1 - y0) * 0.08 or abs(y0) * 0.1 or 1.0
    x0, x1, y0, y1 = x0 - pad_x, x1 + pad_x, y0 - pad_y, y1 + pad_y

    def px(x: float, y: float) -> tuple[float, float]:
        return MARGIN + (x - x0) / (x1 - x0) * (W - 2 * MARGIN), H - MARGIN - (y - y0) / (y1 - y0) * (H - 2 * MARGIN)

    d.rectangle([MARGIN, MARGIN, W - MARGIN, H - MARGIN], outline="black")
    for t in _ticks(x0, x1):
        u, _ = px(t, y0)
        d.line([u, H - MARGIN, u, H - MARGIN + 5], fill="black")
        d.text((u - 15, H - MARGIN + 8), _fmt(t, x1 - x0), fill="black")
    for t in _ticks(y0, y1):
        _, v = px(x0, t)
        d.line([MARGIN - 5, v, MARGIN, v], fill="black")
        d.text((8, v - 6), _fmt(t, y1 - y0), fill="black")
    d.text((W / 2 - 60, H - MARGIN + 30), f"distortion: {x_label} (lower is better)", fill="black")
    d.text((8, MARGIN - 30), f"editability: {y_label} (lower is better)", fill="black")
    d.text((MARGIN, 20), title, fill="black")
    points = [px(x, y) for x, y in zip(xs, ys)]
    if len(points) > 1:
        d.line(points, fill=(120, 120, 200), width=2)
    for (u, v), label in zip(points, labels):
        d.ellipse([u - 5, v - 5, u + 5, v + 5], fill=(200, 40, 40))
        d.text((u + 8, v - 14), label, fill="black")
    with atomic_output(path) as tmp:
        img.save(tmp, format="PNG")
