"""PNG overlays a person can look at: the image windowed for display, boxes, scores, location
labels and the nipple.

Boxes come from :class:`serving.pipeline.findings.ImageOut` (stored-image pixels); the picture
is scaled to at most ``max_height`` rows, and every coordinate with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw

from serving.pipeline.dicom_in import Image
from serving.pipeline.findings import ImageOut


def display_window(pixels: np.ndarray) -> np.ndarray:
    """uint8 rendering of a float image (larger = brighter) between its 0.5th and 99.9th
    percentiles (sampled), which keeps bright contrast visible without washing out tissue."""
    sample = pixels[::4, ::4]
    lo, hi = (float(v) for v in np.percentile(sample, [0.5, 99.9]))
    scaled = np.clip((pixels - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return (scaled * 255.0 + 0.5).astype(np.uint8)


def render_overlay(image: Image, result: ImageOut, max_height: int = 1600) -> PILImage.Image:
    """The annotated picture of one image."""
    arr = np.asarray(image.pixels)  # may be a reduced-resolution decode (decode_scale)
    step = max(int(np.ceil(arr.shape[0] / max_height)), 1)
    small = display_window(arr[::step, ::step])
    pic = PILImage.fromarray(small).convert("RGB")
    draw = ImageDraw.Draw(pic)
    s = 1.0 / (step * image.decode_scale)  # stored pixels -> picture pixels
    for f in result.findings:
        x1, y1, x2, y2 = (v * s for v in f.box_px)
        pad = 4
        draw.rectangle([x1 - pad, y1 - pad, x2 + pad, y2 + pad], outline=(255, 60, 60), width=2)
        label = f"{f.score:.2f}"
        if f.location is not None:
            label += f"  {f.location.distance_from_nipple_cm} cm, {f.location.depth}"
            if f.location.half:
                label += f", {f.location.half}"
        draw.text((x2 + pad + 3, y1), label, fill=(255, 120, 120))
    if result.nipple_px is not None:
        nx, ny = (v * s for v in result.nipple_px)
        draw.ellipse([nx - 5, ny - 5, nx + 5, ny + 5], outline=(60, 255, 60), width=2)
    title = (f"{result.laterality} {result.view or '?'}  {len(result.findings)} finding(s)"
             f"  {result.source or result.sop_instance_uid or ''}")
    draw.text((6, 6), title, fill=(120, 200, 255))
    return pic


def write_overlay(image: Image, result: ImageOut, folder: Path) -> Path:
    """Write ``<folder>/<index>_<laterality>_<view>.png`` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{result.index:03d}_{result.laterality}_{result.view or 'NA'}.png"
    render_overlay(image, result).save(path)
    return path
