"""PNG overlays a person can look at: the image windowed for display, boxes, scores, location
labels and the nipple.

Findings (lesions) are solid red boxes; probable mimics (air bubbles, cysts, extravasation:
not lesions) are dashed violet boxes labelled "<text> <score>" over "mimic, not a lesion",
e.g. "probable air bubble 0.91". Labels are white text on a dark panel, sized to the picture
(:func:`serving.outputs.gsps_labels.line_height`), placed outside every box and clear of each
other by the same placement as the GSPS labels, with a leader line to their box. Boxes come
from :class:`serving.pipeline.findings.ImageOut` (stored-image pixels); the picture is scaled
to at most ``max_height`` rows, and every coordinate with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from serving.outputs.gsps_labels import PlacedLabel, line_height, place_labels
from serving.pipeline.dicom_in import Image
from serving.pipeline.findings import FindingOut, ImageOut, MimicOut

#: RGB colours: a finding's box and its label; a mimic's box and label; nipple; title
LESION_COLOR = (255, 60, 60)
LESION_TEXT_COLOR = (255, 120, 120)
MIMIC_COLOR = (190, 130, 255)
NIPPLE_COLOR = (60, 255, 60)
TITLE_COLOR = (120, 200, 255)
#: label text, and the panels behind a finding's label, a mimic's label and the title
LABEL_TEXT = (255, 255, 255)
LESION_PANEL = (120, 0, 0)
MIMIC_PANEL = (55, 25, 90)
TITLE_PANEL = (0, 0, 0)
SIDE_NAMES = {"L": "Left", "R": "Right"}
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


def _finding_lines(f: FindingOut) -> list[str]:
    first = f"Finding {f.id}  score {f.score:.2f}"
    if f.location is None:
        return [first]
    where = f"{f.location.distance_from_nipple_cm} cm from nipple, {f.location.depth} depth"
    if f.location.half:
        where += f", {f.location.half} half"
    return [first, where]


def _mimic_lines(m: MimicOut) -> list[str]:
    return [f"{m.text} {m.score:.2f}", "mimic, not a lesion"]


def _draw_label(draw: ImageDraw.ImageDraw, label: PlacedLabel,
                font: ImageFont.ImageFont | ImageFont.FreeTypeFont, panel: tuple[int, int, int]
                ) -> None:
    """A label's panel, its lines and a leader from the panel to its box."""
    bx1, by1, bx2, by2 = label.box
    ax, ay = label.anchor
    cx, cy = min(max(ax, bx1), bx2), min(max(ay, by1), by2)
    if not (bx1 <= ax <= bx2 and by1 <= ay <= by2):
        draw.line([(ax, ay), (cx, cy)], fill=LABEL_TEXT, width=1)
    draw.rectangle([bx1, by1, bx2, by2], fill=panel)
    for line, (lx1, ly1, lx2, _) in zip(label.lines, label.line_boxes, strict=True):
        width = draw.textlength(line, font=font)
        x = lx2 - width - 2 if label.justification == "RIGHT" else \
            (lx1 + lx2 - width) / 2 if label.justification == "CENTER" else lx1 + 2
        draw.text((x, ly1), line, fill=LABEL_TEXT, font=font)


def render_overlay(image: Image, result: ImageOut, max_height: int = 1600) -> PILImage.Image:
    """The annotated picture of one image."""
    arr = np.asarray(image.pixels)  # may be a reduced-resolution decode (decode_scale)
    step = max(int(np.ceil(arr.shape[0] / max_height)), 1)
    small = display_window(arr[::step, ::step])
    pic = PILImage.fromarray(small).convert("RGB")
    draw = ImageDraw.Draw(pic)
    s = 1.0 / (step * image.decode_scale)  # stored pixels -> picture pixels
    pad = PAD
    rows, cols = small.shape
    lh = line_height(rows, cols)
    font = ImageFont.load_default(size=max(int(lh * 0.75), 10))
    mimic_boxes = [tuple(v * s for v in m.box_px) for m in result.mimics]
    finding_boxes = [tuple(v * s for v in f.box_px) for f in result.findings]
    for x1, y1, x2, y2 in mimic_boxes:  # first: a finding at the same place stays on top
        _dashed_rectangle(draw, (x1 - pad, y1 - pad, x2 + pad, y2 + pad), MIMIC_COLOR)
    for x1, y1, x2, y2 in finding_boxes:
        draw.rectangle([x1 - pad, y1 - pad, x2 + pad, y2 + pad], outline=LESION_COLOR, width=2)
    targets = [(x1 - pad, y1 - pad, x2 + pad, y2 + pad)
               for x1, y1, x2, y2 in (*finding_boxes, *mimic_boxes)]
    lines = [_finding_lines(f) for f in result.findings] + \
        [_mimic_lines(m) for m in result.mimics]
    placed = place_labels(targets, lines, rows, cols) if targets else []
    for k, label in enumerate(placed):
        panel = LESION_PANEL if k < len(result.findings) else MIMIC_PANEL
        _draw_label(draw, label, font, panel)
    if result.nipple_px is not None:
        nx, ny = (v * s for v in result.nipple_px)
        draw.ellipse([nx - 5, ny - 5, nx + 5, ny + 5], outline=NIPPLE_COLOR, width=2)
    side = SIDE_NAMES.get(result.laterality, "Unknown side")
    title = f"{side} {result.view or 'view unknown'}: {len(result.findings)} finding(s)"
    if result.mimics:
        title += f", {len(result.mimics)} probable mimic(s), not lesions"
    title += f"  {result.source or result.sop_instance_uid or ''}"
    tx1, ty1, tx2, ty2 = draw.textbbox((6, 6), title, font=font)
    draw.rectangle([tx1 - 3, ty1 - 3, tx2 + 3, ty2 + 3], fill=TITLE_PANEL)
    draw.text((6, 6), title, fill=TITLE_COLOR, font=font)
    return pic


def write_overlay(image: Image, result: ImageOut, folder: Path) -> Path:
    """Write ``<folder>/<index>_<laterality>_<view>.png`` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{result.index:03d}_{result.laterality}_{result.view or 'NA'}.png"
    render_overlay(image, result).save(path)
    return path
