"""PNG overlays a person can look at: the image windowed for display, boxes, scores, location
labels and the nipple.

Findings (lesions) are solid red boxes; probable mimics (air bubbles, cysts, extravasation:
not lesions) are dashed violet boxes labelled "<text> <score>" over "mimic, not a lesion",
e.g. "probable air bubble 0.91". Labels are white text on a dark panel, sized to the picture
(:func:`serving.outputs.gsps_labels.line_height`), placed outside every box and clear of each
other by the same placement as the GSPS labels, with a leader line to their box. Boxes come
from :class:`serving.pipeline.findings.ImageOut` (stored-image pixels); the picture is scaled
to at most ``max_height`` rows, and every coordinate with it.

Tomosynthesis: :func:`render_frame_overlay` draws one frame of a volume (the caller decodes
it; ``FindingOut.frame`` numbers frames from 1): the findings whose best frame it is as solid
boxes with their label, those detected on it but best seen on another frame as thin dashed
boxes labelled with their best frame, and the mimics detected on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from serving.outputs.gsps_labels import PlacedLabel, line_height, place_labels
from serving.outputs.wording import frame_range_text
from serving.pipeline.dicom_in import Image
from serving.pipeline.findings import FindingOut, FrameOut, ImageOut, MimicOut

#: RGB colours: a finding's box and its label; a mimic's box and label; nipple; title
LESION_COLOR = (255, 60, 60)
LESION_TEXT_COLOR = (255, 120, 120)
MIMIC_COLOR = (190, 130, 255)
NIPPLE_COLOR = (60, 255, 60)
TITLE_COLOR = (120, 200, 255)
#: label text, and the panels behind a finding's label, a mimic's label and the title
LABEL_TEXT = (255, 255, 255)
LESION_PANEL = (120, 0, 0)
#: the panel behind the label of a finding best seen on another frame (tomosynthesis)
NEAR_PANEL = (70, 20, 20)
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


def finding_lines(f: FindingOut) -> list[str]:
    """The label of a finding on an overlay: its id and score, where it is, and on a
    tomosynthesis volume the frames it was detected in. A volume finding's place is the
    location its own view gives (``single_view_location``: clock face, depth, distance
    from the nipple); a 2D finding's is its distance, depth and half of the view."""
    lines = [f"Finding {f.id}  score {f.score:.2f}"]
    if f.single_view_location is not None:
        lines.append(f.single_view_location.phrase)
    elif f.location is not None:
        where = f"{f.location.distance_from_nipple_cm} cm from nipple, {f.location.depth} depth"
        if f.location.half:
            where += f", {f.location.half} half"
        lines.append(where)
    if f.frame is not None:
        lines.append(f"detected in {frame_range_text(f.frame)}")
    return lines


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


def _covers(frame: FrameOut | None, number: int) -> bool:
    """Whether a mark with ``frame`` is detected on frame ``number`` (no frame: every one)."""
    return frame is None or frame.first <= number <= frame.last


def _near_lines(f: FindingOut) -> list[str]:
    best = f.frame.best if f.frame is not None else "?"
    return [f"Finding {f.id}  score {f.score:.2f}", f"best seen on frame {best}"]


def render_overlay(image: Image, result: ImageOut, max_height: int = 1600) -> PILImage.Image:
    """The annotated picture of one image."""
    side = SIDE_NAMES.get(result.laterality, "Unknown side")
    title = f"{side} {result.view or 'view unknown'}: {len(result.findings)} finding(s)"
    if result.mimics:
        title += f", {len(result.mimics)} probable mimic(s), not lesions"
    return _render(image, result, result.findings, [], result.mimics, title, max_height)


def render_frame_overlay(image: Image, result: ImageOut, frame: int,
                         max_height: int = 1600) -> PILImage.Image:
    """The annotated picture of frame ``frame`` (1-based, as ``FindingOut.frame``) of a
    tomosynthesis volume: ``image`` is that frame, decoded; ``result`` the volume's result.

    Findings whose ``frame.best`` is ``frame`` are solid boxes with their usual label; findings
    detected on it (``frame.first <= frame <= frame.last``) but best seen on another frame
    are thin dashed boxes labelled with their best frame; mimics detected on it are dashed
    as usual. Findings and mimics without a frame are drawn on every frame.

    Raises:
        ValueError: ``frame`` is below 1 or above ``result.number_of_frames``.
    """
    count = result.number_of_frames
    if frame < 1 or (count is not None and frame > count):
        raise ValueError(f"frame {frame} is not a frame of the volume: expected 1 to "
                         f"{count if count is not None else 'its number of frames'}")
    best = [f for f in result.findings if f.frame is None or f.frame.best == frame]
    near = [f for f in result.findings
            if f.frame is not None and f.frame.best != frame and _covers(f.frame, frame)]
    mimics = [m for m in result.mimics if _covers(m.frame, frame)]
    side = SIDE_NAMES.get(result.laterality, "Unknown side")
    of = f" of {count}" if count is not None else ""
    title = (f"{side} {result.view or 'view unknown'}, frame {frame}{of}: "
             f"{len(best)} finding(s)")
    if near:
        title += f", {len(near)} best seen on another frame"
    if mimics:
        title += f", {len(mimics)} probable mimic(s), not lesions"
    return _render(image, result, best, near, mimics, title, max_height)


def _render(image: Image, result: ImageOut, findings: list[FindingOut], near: list[FindingOut],
            mimics: list[MimicOut], title: str, max_height: int) -> PILImage.Image:
    """The picture of ``image`` with ``findings`` (solid), ``near`` (thin dashed), ``mimics``
    (dashed), their labels, the nipple of ``result`` and ``title`` (then the source's name)."""
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
    mimic_boxes = [tuple(v * s for v in m.box_px) for m in mimics]
    near_boxes = [tuple(v * s for v in f.box_px) for f in near]
    finding_boxes = [tuple(v * s for v in f.box_px) for f in findings]
    for x1, y1, x2, y2 in mimic_boxes:  # first: a finding at the same place stays on top
        _dashed_rectangle(draw, (x1 - pad, y1 - pad, x2 + pad, y2 + pad), MIMIC_COLOR)
    for x1, y1, x2, y2 in near_boxes:
        _dashed_rectangle(draw, (x1 - pad, y1 - pad, x2 + pad, y2 + pad), LESION_COLOR, width=1)
    for x1, y1, x2, y2 in finding_boxes:
        draw.rectangle([x1 - pad, y1 - pad, x2 + pad, y2 + pad], outline=LESION_COLOR, width=2)
    targets = [(x1 - pad, y1 - pad, x2 + pad, y2 + pad)
               for x1, y1, x2, y2 in (*finding_boxes, *near_boxes, *mimic_boxes)]
    lines = [finding_lines(f) for f in findings] + [_near_lines(f) for f in near] + \
        [_mimic_lines(m) for m in mimics]
    placed = place_labels(targets, lines, rows, cols) if targets else []
    for k, label in enumerate(placed):
        panel = (LESION_PANEL if k < len(findings) else
                 NEAR_PANEL if k < len(findings) + len(near) else MIMIC_PANEL)
        _draw_label(draw, label, font, panel)
    if result.nipple_px is not None:
        nx, ny = (v * s for v in result.nipple_px)
        draw.ellipse([nx - 5, ny - 5, nx + 5, ny + 5], outline=NIPPLE_COLOR, width=2)
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


def write_frame_overlay(image: Image, result: ImageOut, frame: int, folder: Path) -> Path:
    """Write ``<folder>/<index>_<laterality>_<view>_f<frame>.png`` (frame 3 digits) with
    :func:`render_frame_overlay` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (f"{result.index:03d}_{result.laterality}_{result.view or 'NA'}"
                     f"_f{frame:03d}.png")
    render_frame_overlay(image, result, frame).save(path)
    return path
