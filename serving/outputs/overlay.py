"""PNG overlays a person can look at: the image windowed for display, boxes, scores, location
labels and the nipple.

Findings (lesions) are solid red boxes; probable mimics (air bubbles, cysts, extravasation:
not lesions) are dashed violet boxes labelled "<text> <score> (mimic, not a lesion)", e.g.
"probable air bubble 0.91 (mimic, not a lesion)". Boxes come from
:class:`serving.pipeline.findings.ImageOut` (stored-image pixels); the picture is scaled to at
most ``max_height`` rows, and every coordinate with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw

from serving.pipeline.dicom_in import Image
from serving.pipeline.findings import ImageOut

#: RGB colours: a finding's box and its label; a mimic's box and label; nipple; title
LESION_COLOR = (255, 60, 60)
LESION_TEXT_COLOR = (255, 120, 120)
MIMIC_COLOR = (190, 130, 255)
NIPPLE_COLOR = (60, 255, 60)
TITLE_COLOR = (120, 200, 255)
#: box padding in picture pixels (the outline is drawn this far outside the box)
PAD = 4


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box: tuple[float, float, float, float],
                      fill: tuple[int, int, int], width: int = 2, dash: int = 6,
                      gap: int = 4) -> None:
    """A rectangle outline drawn as dashes of ``dash`` pixels with ``gap`` between them."""
    x1, y1, x2, y2 = box
    for (ax, ay), (bx, by) in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)),
                               ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = float(np.hypot(bx - ax, by - ay))
        if length == 0:
            continue
        ux, uy = (bx - ax) / length, (by - ay) / length
        t = 0.0
        while t < length:
            e = min(t + dash, length)
            draw.line([(ax + ux * t, ay + uy * t), (ax + ux * e, ay + uy * e)], fill=fill,
                      width=width)
            t += dash + gap


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
    pad = PAD
    for m in result.mimics:  # first, so that a finding at the same place stays on top
        x1, y1, x2, y2 = (v * s for v in m.box_px)
        _dashed_rectangle(draw, (x1 - pad, y1 - pad, x2 + pad, y2 + pad), MIMIC_COLOR)
        at = (x1 - pad, y2 + pad + 4)
        text = f"{m.text} {m.score:.2f} (mimic, not a lesion)"
        bx1, by1, bx2, by2 = draw.textbbox(at, text)
        draw.rectangle([bx1 - 2, by1 - 2, bx2 + 2, by2 + 2], fill=(0, 0, 0))
        draw.text(at, text, fill=MIMIC_COLOR)
    for f in result.findings:
        x1, y1, x2, y2 = (v * s for v in f.box_px)
        draw.rectangle([x1 - pad, y1 - pad, x2 + pad, y2 + pad], outline=LESION_COLOR, width=2)
        label = f"{f.score:.2f}"
        if f.location is not None:
            label += f"  {f.location.distance_from_nipple_cm} cm, {f.location.depth}"
            if f.location.half:
                label += f", {f.location.half}"
        draw.text((x2 + pad + 3, y1), label, fill=LESION_TEXT_COLOR)
    if result.nipple_px is not None:
        nx, ny = (v * s for v in result.nipple_px)
        draw.ellipse([nx - 5, ny - 5, nx + 5, ny + 5], outline=NIPPLE_COLOR, width=2)
    title = f"{result.laterality} {result.view or '?'}  {len(result.findings)} finding(s)"
    if result.mimics:
        title += f", {len(result.mimics)} probable mimic(s), not lesions"
    title += f"  {result.source or result.sop_instance_uid or ''}"
    draw.text((6, 6), title, fill=TITLE_COLOR)
    return pic


def write_overlay(image: Image, result: ImageOut, folder: Path) -> Path:
    """Write ``<folder>/<index>_<laterality>_<view>.png`` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{result.index:03d}_{result.laterality}_{result.view or 'NA'}.png"
    render_overlay(image, result).save(path)
    return path
