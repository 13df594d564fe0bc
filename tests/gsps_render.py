"""A small, independent GSPS annotation renderer for the tests and the README picture.

DCMTK's ``dcmp2pgm`` applies a presentation state to its image (VOI LUT, Presentation LUT) but
does not draw the graphic annotations, so this module reads the GSPS's Graphic Annotation
Sequence with plain pydicom (not with galacto's own readers) and burns the rectangles,
circles, text (fitted into each text object's bounding box, PS3.3 C.10.5.1.1) and anchor
leaders into the PGM that ``dcmp2pgm`` wrote.

Usage: ``python tests/gsps_render.py IMAGE.dcm GSPS.dcm OUT.png [--height PX]``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

Box = tuple[float, float, float, float]


@dataclass
class TextItem:
    layer: str
    text: str
    box: Box | None
    anchor: tuple[float, float] | None
    anchor_visible: bool
    justification: str = "LEFT"


@dataclass
class Drawing:
    """What a GSPS draws on one image."""

    polylines: list[tuple[str, list[tuple[float, float]]]] = field(default_factory=list)
    circles: list[tuple[str, tuple[float, float], float]] = field(default_factory=list)
    texts: list[TextItem] = field(default_factory=list)

    def marked_boxes(self) -> list[tuple[str, Box]]:
        """Bounds of every rectangle and circle, with its layer."""
        out: list[tuple[str, Box]] = []
        for layer, pts in self.polylines:
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            out.append((layer, (min(xs), min(ys), max(xs), max(ys))))
        for layer, (cx, cy), r in self.circles:
            out.append((layer, (cx - r, cy - r, cx + r, cy + r)))
        return out


def read_drawings(ps: Dataset) -> dict[str, Drawing]:
    """SOP Instance UID -> what the GSPS draws on it (PIXEL units only)."""
    out: dict[str, Drawing] = {}
    for ann in ps.get("GraphicAnnotationSequence", []):
        layer = str(ann.GraphicLayer)
        targets = [str(r.ReferencedSOPInstanceUID) for r in ann.ReferencedImageSequence]
        for uid in targets:
            d = out.setdefault(uid, Drawing())
            for g in ann.get("GraphicObjectSequence", []):
                assert g.GraphicAnnotationUnits == "PIXEL"
                v = [float(x) for x in g.GraphicData]
                pts = list(zip(v[0::2], v[1::2], strict=True))
                if g.GraphicType == "POLYLINE":
                    d.polylines.append((layer, pts))
                elif g.GraphicType == "CIRCLE":
                    (cx, cy), (rx, ry) = pts
                    d.circles.append((layer, (cx, cy), ((rx - cx) ** 2 + (ry - cy) ** 2) ** 0.5))
            for t in ann.get("TextObjectSequence", []):
                box = None
                if "BoundingBoxTopLeftHandCorner" in t:
                    assert t.BoundingBoxAnnotationUnits == "PIXEL"
                    x1, y1 = (float(v) for v in t.BoundingBoxTopLeftHandCorner)
                    x2, y2 = (float(v) for v in t.BoundingBoxBottomRightHandCorner)
                    box = (x1, y1, x2, y2)
                anchor = None
                if "AnchorPoint" in t:
                    ax, ay = (float(v) for v in t.AnchorPoint)
                    anchor = (ax, ay)
                d.texts.append(TextItem(layer, str(t.UnformattedTextValue), box, anchor,
                                        t.get("AnchorPointVisibility") == "Y",
                                        str(t.get("BoundingBoxTextHorizontalJustification",
                                                  "LEFT"))))
    return out


def layer_colors(ps: Dataset) -> dict[str, tuple[int, int, int]]:
    """Layer -> sRGB from its Graphic Layer Recommended Display CIELab Value (else its
    grayscale value, else white)."""
    out: dict[str, tuple[int, int, int]] = {}
    for layer in ps.get("GraphicLayerSequence", []):
        name = str(layer.GraphicLayer)
        if "GraphicLayerRecommendedDisplayCIELabValue" in layer:
            out[name] = _lab_to_srgb(*(int(v) for v in
                                       layer.GraphicLayerRecommendedDisplayCIELabValue))
        elif "GraphicLayerRecommendedDisplayGrayscaleValue" in layer:
            g = int(layer.GraphicLayerRecommendedDisplayGrayscaleValue) >> 8
            out[name] = (g, g, g)
        else:
            out[name] = (255, 255, 255)
    return out


def _lab_to_srgb(l16: int, a16: int, b16: int) -> tuple[int, int, int]:
    """DICOM-encoded CIELab (PS3.3 C.10.7.1.1: L 0..FFFF = 0..100, a/b 0..FFFF = -128..127)
    to 8-bit sRGB (D65)."""
    lab_l, a, b = l16 * 100.0 / 0xFFFF, a16 * 255.0 / 0xFFFF - 128, b16 * 255.0 / 0xFFFF - 128
    fy = (lab_l + 16) / 116
    fx, fz = fy + a / 500, fy - b / 200

    def inv(t: float) -> float:
        return t ** 3 if t ** 3 > 0.008856 else (t - 16 / 116) / 7.787

    x, y, z = 0.95047 * inv(fx), 1.0 * inv(fy), 1.08883 * inv(fz)
    rgb = (3.2406 * x - 1.5372 * y - 0.4986 * z, -0.9689 * x + 1.8758 * y + 0.0415 * z,
           0.0557 * x - 0.2040 * y + 1.0570 * z)

    def gamma(u: float) -> int:
        u = min(max(u, 0.0), 1.0)
        u = 12.92 * u if u <= 0.0031308 else 1.055 * u ** (1 / 2.4) - 0.055
        return round(u * 255)

    return gamma(rgb[0]), gamma(rgb[1]), gamma(rgb[2])


def fitted_font(text: str, box: Box) -> tuple[ImageFont.FreeTypeFont, float]:
    """The font (Pillow's scalable default) that fits ``text`` into ``box``: 80 % of the box
    height, smaller if the text would be wider than the box; and its size as a fraction of
    the box height (1.0 = not shrunk below 80 %)."""
    height, width = box[3] - box[1], box[2] - box[0]
    size = max(1.0, 0.8 * height)
    font = ImageFont.load_default(size=size)
    text_w = font.getlength(text)
    if text_w > width:
        size = max(1.0, size * width / text_w)
        font = ImageFont.load_default(size=size)
    return font, size / (0.8 * height)


def dcmp2pgm(image: Path, ps: Path, out: Path) -> None:
    """DCMTK renders ``image`` through the presentation state ``ps`` into a PGM."""
    exe = shutil.which("dcmp2pgm")
    assert exe is not None, "dcmp2pgm (DCMTK) not installed"
    r = subprocess.run([exe, "-p", str(ps), str(image), str(out)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and out.exists(), r.stderr


def render(image: Path, ps_path: Path, height: int | None = None) -> Image.Image:
    """``image`` as the GSPS at ``ps_path`` presents it, with its annotations burnt in (RGB),
    optionally scaled to ``height`` pixels."""
    ps = pydicom.dcmread(ps_path)
    uid = str(pydicom.dcmread(image, stop_before_pixels=True).SOPInstanceUID)
    with tempfile.TemporaryDirectory() as tmp:
        pgm = Path(tmp) / "image.pgm"
        dcmp2pgm(image, ps_path, pgm)
        pic = Image.open(pgm).convert("RGB")
        pic.load()
    scale = 1.0 if height is None else height / pic.height
    if height is not None:
        pic = pic.resize((round(pic.width * scale), height), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(pic)
    colors = layer_colors(ps)
    drawing = read_drawings(ps).get(uid, Drawing())
    width = max(1, round(3 * scale / 0.5)) if scale < 0.5 else 3
    for layer, pts in drawing.polylines:
        draw.line([(x * scale, y * scale) for x, y in pts], fill=colors[layer], width=width)
    for layer, (cx, cy), r in drawing.circles:
        draw.ellipse([(cx - r) * scale, (cy - r) * scale, (cx + r) * scale, (cy + r) * scale],
                     outline=colors[layer], width=width)
    for t in drawing.texts:
        if t.box is None:
            continue
        box = (t.box[0] * scale, t.box[1] * scale, t.box[2] * scale, t.box[3] * scale)
        font, _ = fitted_font(t.text, box)
        if t.anchor is not None and t.anchor_visible:
            ax, ay = t.anchor[0] * scale, t.anchor[1] * scale
            ex = min(max(ax, box[0]), box[2])
            ey = min(max(ay, box[1]), box[3])
            draw.line([(ax, ay), (ex, ey)], fill=colors[t.layer], width=1)
        x, where = {"RIGHT": (box[2] - 2, "rm"), "CENTER": ((box[0] + box[2]) / 2, "mm")}.get(
            t.justification, (box[0] + 2, "lm"))
        draw.text((x, (box[1] + box[3]) / 2), t.text, font=font, fill=colors[t.layer],
                  anchor=where, stroke_width=1, stroke_fill=(0, 0, 0))
    return pic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("gsps", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--height", type=int, default=None)
    args = parser.parse_args()
    render(args.image, args.gsps, args.height).save(args.out)


if __name__ == "__main__":
    main()
