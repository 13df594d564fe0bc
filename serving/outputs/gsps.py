"""Grayscale Softcopy Presentation State (GSPS, highdicom) with the findings drawn as graphic
annotations: what any PACS viewer can show on top of the original images.

Layers:

- ``FINDINGS``: per finding a rectangle (closed POLYLINE, 5 points, PIXEL units) and a text
  label anchored at the box's top-left corner: score and location, e.g.
  ``"0.97 L 2 o'clock 3 cm anterior"`` (matched across views) or ``"0.80 L outer 6 cm middle"``
  (one view).
- ``NIPPLE``: a circle of radius :data:`NIPPLE_RADIUS_MM` around ``ImageOut.nipple_px`` and the
  text ``"nipple"``, where the nipple was found.

Coordinates: GRAPHIC data in PIXEL units are (column, row) pairs in stored-image pixels with
the origin at the top-left corner of the top-left pixel (PS3.3 C.10.5.1.2), the ``box_px``
frame, so boxes go in unchanged (stored as 32-bit floats).

Display: each image gets its own Softcopy VOI LUT item, the image's first Window Center/Width
(with its explanation and VOI LUT Function) when present, else a linear window over the full
range of stored values after the Modality LUT. The Presentation LUT is IDENTITY for
MONOCHROME2 and INVERSE for MONOCHROME1, so the images look as the modality intended.

Grouping: highdicom needs all images of one presentation state to share Rows/Columns (one
Displayed Area) and the Modality LUT; this module makes one GSPS per group of sources that
share Rows, Columns, Photometric Interpretation and Rescale Slope/Intercept/Type, normally one
per study, all in one new series.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from highdicom.color import CIELabColor
from pydicom.dataset import Dataset

from serving.outputs.common import (
    MANUFACTURER,
    SERIES_DESCRIPTION,
    SERIES_NUMBER,
    ResultInput,
    ResultKind,
    box_polyline,
    evidence_header,
    fused_by_finding,
    new_uid,
    now,
    polyline_box,
    software_versions,
    stamp_result,
)
from serving.pipeline.findings import FindingOut, FusedFindingOut, ImageOut

GSPS_STORAGE = "1.2.840.10008.5.1.4.1.1.11.1"
"""SOP Class UID of Grayscale Softcopy Presentation State Storage."""

FINDINGS_LAYER = "FINDINGS"
NIPPLE_LAYER = "NIPPLE"
CONTENT_LABEL = "GALACTO_CAD"
#: Radius of the nipple marker, mm (converted with the image's spacing).
NIPPLE_RADIUS_MM = 3.0
#: Radius of the nipple marker, pixels, when the image has no usable spacing.
NIPPLE_RADIUS_PX_FALLBACK = 30.0

_FINDINGS_COLOR = CIELabColor(97.0, -21.0, 94.0)  # yellow
_NIPPLE_COLOR = CIELabColor(91.0, -48.0, -14.0)  # cyan


# --------------------------------------------------------------------------------------------
# Labels and graphics
# --------------------------------------------------------------------------------------------


def finding_label(finding: FindingOut, laterality: str, lesion: FusedFindingOut | None) -> str:
    """Score (2 decimals) and location: laterality, where (clock face, region or quadrant when
    matched across views; the half this view tells otherwise), whole cm from the nipple and
    depth, e.g. ``"0.97 L 2 o'clock 3 cm anterior"``; just the score without a location."""
    parts = [f"{finding.score:.2f}"]
    if lesion is not None:
        where = lesion.quadrant if lesion.quadrant in ("retroareolar", "central") else None
        if where is None and lesion.clock_hour is not None:
            where = f"{lesion.clock_hour} o'clock"
        parts += [lesion.laterality, where or lesion.quadrant or "",
                  f"{lesion.distance_from_nipple_cm} cm", lesion.depth]
    elif finding.location is not None:
        loc = finding.location
        parts += [laterality, loc.half or "", f"{loc.distance_from_nipple_cm} cm", loc.depth]
    return " ".join(p for p in parts if p)


def _finding_objects(image: ImageOut, fused: dict[str, tuple[int, FusedFindingOut]],
                     rows: int, cols: int,
                     ) -> tuple[list[hd.pr.GraphicObject], list[hd.pr.TextObject]]:
    """Rectangle and label of each finding of ``image``."""
    graphics: list[hd.pr.GraphicObject] = []
    texts: list[hd.pr.TextObject] = []
    for f in image.findings:
        polyline = box_polyline(f.box_px, rows, cols, f"finding {f.id} box_px")
        graphics.append(hd.pr.GraphicObject(
            graphic_type=hd.pr.GraphicTypeValues.POLYLINE, graphic_data=polyline,
            units=hd.pr.AnnotationUnitsValues.PIXEL))
        lesion = fused[f.id][1] if f.id in fused else None
        texts.append(hd.pr.TextObject(
            text_value=finding_label(f, image.laterality, lesion),
            units=hd.pr.AnnotationUnitsValues.PIXEL,
            anchor_point=(float(f.box_px[0]), float(f.box_px[1])), anchor_point_visible=False))
    return graphics, texts


def _nipple_objects(image: ImageOut, rows: int, cols: int,
                    ) -> tuple[list[hd.pr.GraphicObject], list[hd.pr.TextObject]]:
    """Circle and text at the nipple (none when it was not found or lies off the image)."""
    if image.nipple_px is None:
        return [], []
    x, y = (float(v) for v in image.nipple_px)
    if not (0.0 <= x <= cols and 0.0 <= y <= rows):
        return [], []
    spacing = float(image.spacing_mm[1]) if len(image.spacing_mm) > 1 else 0.0  # [row, col]
    radius = NIPPLE_RADIUS_MM / spacing if spacing > 0 else NIPPLE_RADIUS_PX_FALLBACK
    text = hd.pr.TextObject(text_value="nipple", units=hd.pr.AnnotationUnitsValues.PIXEL,
                            anchor_point=(x, y), anchor_point_visible=False)
    rim = _rim_point(x, y, radius, rows, cols)
    if rim is None:  # the nipple sits on the image border: the label alone
        return [], [text]
    circle = hd.pr.GraphicObject(
        graphic_type=hd.pr.GraphicTypeValues.CIRCLE,
        graphic_data=np.array([[x, y], rim], dtype=np.float64),
        units=hd.pr.AnnotationUnitsValues.PIXEL)
    return [circle], [text]


def _rim_point(x: float, y: float, radius: float, rows: int, cols: int
               ) -> tuple[float, float] | None:
    """A point at ``radius`` pixels from ``(x, y)`` inside the image (GRAPHIC data outside it
    is refused), shrinking the radius to the room there is near an edge; None without room."""
    r = min(radius, max(cols - x, x, rows - y, y))
    if r < 1.0:
        return None
    for dx, dy in ((1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0)):
        px, py = x + dx * r, y + dy * r
        if 0.0 <= px <= cols and 0.0 <= py <= rows:
            return px, py
    return None


def _annotations(sources: Sequence[Dataset], images: Sequence[ImageOut],
                 fused: dict[str, tuple[int, FusedFindingOut]],
                 ) -> tuple[list[hd.pr.GraphicLayer], list[hd.pr.GraphicAnnotation]]:
    """The layers in use and one annotation per image and layer that has something to show."""
    findings_layer = hd.pr.GraphicLayer(FINDINGS_LAYER, order=1, display_color=_FINDINGS_COLOR,
                                        description="Filling defects: box, score, location")
    nipple_layer = hd.pr.GraphicLayer(NIPPLE_LAYER, order=2, display_color=_NIPPLE_COLOR,
                                      description="Nipple as located by galacto")
    annotations: list[hd.pr.GraphicAnnotation] = []
    used: dict[str, hd.pr.GraphicLayer] = {}
    for src, image in zip(sources, images, strict=True):
        rows, cols = int(src.Rows), int(src.Columns)
        for layer, (graphics, texts) in (
            (findings_layer, _finding_objects(image, fused, rows, cols)),
            (nipple_layer, _nipple_objects(image, rows, cols)),
        ):
            if graphics or texts:
                annotations.append(hd.pr.GraphicAnnotation(
                    referenced_images=[src], graphic_layer=layer,
                    graphic_objects=graphics or None, text_objects=texts or None))
                used[layer.GraphicLayer] = layer
    layers = [lay for lay in (findings_layer, nipple_layer) if lay.GraphicLayer in used]
    return layers, annotations


# --------------------------------------------------------------------------------------------
# Display transformations
# --------------------------------------------------------------------------------------------


def _first_value(source: Dataset, keyword: str) -> str | None:
    """The first value of ``keyword`` in ``source`` as text, ``None`` when absent or empty."""
    value = source.get(keyword)
    if isinstance(value, Sequence) and not isinstance(value, str):
        value = value[0] if len(value) else None
    return None if value is None or str(value).strip() == "" else str(value).strip()


def full_range_window(source: Dataset) -> tuple[float, float]:
    """``(center, width)`` of a linear window spanning every stored value after the Modality
    LUT (Rescale Slope/Intercept, default 1/0): BitsStored (default BitsAllocated, 16),
    signed when PixelRepresentation is 1."""
    bits = int(source.get("BitsStored") or source.get("BitsAllocated") or 16)
    if int(source.get("PixelRepresentation") or 0) == 1:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        lo, hi = 0, 2**bits - 1
    slope = float(source.get("RescaleSlope") or 1.0)
    intercept = float(source.get("RescaleIntercept") or 0.0)
    a, b = sorted((lo * slope + intercept, hi * slope + intercept))
    width = b - a + 1.0
    return a + width / 2.0, width


def voi_lut(source: Dataset) -> hd.pr.SoftcopyVOILUTTransformation:
    """The source's first Window Center/Width (with explanation and VOI LUT Function), or a
    full-range linear window (:func:`full_range_window`) when it has none or an unusable one;
    it references ``source`` only."""
    center_text, width_text = (_first_value(source, k) for k in ("WindowCenter", "WindowWidth"))
    function = str(source.get("VOILUTFunction") or "LINEAR").strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"
    explanation = _first_value(source, "WindowCenterWidthExplanation")
    minimum = 1.0 if function == "LINEAR" else math.nextafter(0.0, 1.0)  # PS3.3 C.11.2.1.2
    if center_text is None or width_text is None or float(width_text) < minimum:
        (center, width), function, explanation = full_range_window(source), "LINEAR", "FULL RANGE"
    else:
        center, width = float(center_text), float(width_text)
    # One-element lists: highdicom 0.28 splits a plain-string explanation into characters.
    return hd.pr.SoftcopyVOILUTTransformation(
        window_center=[center], window_width=[width],
        window_explanation=[explanation] if explanation else None,
        voi_lut_function=function,
        referenced_images=hd.ReferencedImageSequence(referenced_images=[source]),
    )


def presentation_lut(source: Dataset) -> hd.PresentationLUTTransformation:
    """INVERSE for a MONOCHROME1 source, IDENTITY otherwise."""
    inverse = str(source.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    shape = (hd.PresentationLUTShapeValues.INVERSE if inverse
             else hd.PresentationLUTShapeValues.IDENTITY)
    return hd.PresentationLUTTransformation(presentation_lut_shape=shape)


def common_laterality(images: Sequence[ImageOut]) -> str:
    """General Series Laterality (Type 2C, breasts are paired): ``"L"`` or ``"R"`` when every
    image shows that breast, else empty."""
    sides = {img.laterality for img in images}
    return sides.pop() if len(sides) == 1 and sides <= {"L", "R"} else ""


def _group_key(source: Dataset) -> tuple[str, ...]:
    """What the images of one presentation state must share."""
    return tuple(str(source.get(k, "")) for k in (
        "Rows", "Columns", "PhotometricInterpretation", "RescaleSlope", "RescaleIntercept",
        "RescaleType"))


def group_sources(sources: Sequence[Dataset]) -> list[list[int]]:
    """Indices of ``sources`` grouped by :func:`_group_key`, groups and members in input
    order."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, src in enumerate(sources):
        groups.setdefault(_group_key(src), []).append(i)
    return list(groups.values())


# --------------------------------------------------------------------------------------------
# Objects
# --------------------------------------------------------------------------------------------


def _presentation_state(result: ResultInput, sources: Sequence[Dataset],
                        images: Sequence[ImageOut],
                        fused: dict[str, tuple[int, FusedFindingOut]], series_uid: str,
                        instance_number: int, when: dt.datetime) -> Dataset:
    """One GSPS for ``sources`` (which share size and Modality LUT)."""
    layers, annotations = _annotations(sources, images, fused)
    description = f"Filling defects found by {result.algorithm_name} {result.algorithm_version}"
    ps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=sources,
        series_instance_uid=series_uid,
        series_number=SERIES_NUMBER[ResultKind.GSPS],
        sop_instance_uid=new_uid(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=result.algorithm_name,
        software_versions=software_versions(result.model),
        device_serial_number="",
        content_label=CONTENT_LABEL,
        content_description=description[:64],
        graphic_annotations=annotations or None,
        graphic_layers=layers or None,
        voi_lut_transformations=[voi_lut(s) for s in sources],
        presentation_lut_transformation=presentation_lut(sources[0]),
        series_description=SERIES_DESCRIPTION[ResultKind.GSPS],
        series_date=when.date(),
        series_time=when.time(),
    )
    stamp_result(ps, result, when)
    ps.Laterality = common_laterality(images)
    ps.PresentationCreationDate = when.strftime("%Y%m%d")
    ps.PresentationCreationTime = when.strftime("%H%M%S")
    return ps


def build_gsps(result: ResultInput, *, when: dt.datetime | None = None) -> list[Dataset]:
    """Grayscale Softcopy Presentation States that draw ``result``'s findings (and nipples) on
    its source images: one per group of same-sized, same-Modality-LUT sources (normally one),
    all in one new series (``SERIES_NUMBER[GSPS]``) of the source study.

    Patient/study attributes are copied verbatim from the first source, the algorithm is named
    in Contributing Equipment; creation, series and contribution dates/times are ``when``
    (default: now). Apart from UIDs and those dates/times the objects are a function of
    ``result`` alone. Sources may be headers without Pixel Data.

    Returns:
        The GSPS datasets (with file meta), in source order of their first image.
    """
    when = now() if when is None else when
    sources = [evidence_header(s) for s in result.sources]
    images = result.study.images
    fused = fused_by_finding(images, result.study.fused)
    series_uid = new_uid()
    return [
        _presentation_state(result, [sources[i] for i in idx], [images[i] for i in idx], fused,
                            series_uid, n, when)
        for n, idx in enumerate(group_sources(sources), start=1)
    ]


# --------------------------------------------------------------------------------------------
# Reading back
# --------------------------------------------------------------------------------------------


def read_gsps_boxes(ds: Dataset) -> dict[str, list[list[float]]]:
    """The finding boxes of a GSPS written by :func:`build_gsps`: SOPInstanceUID -> ``[x1, y1,
    x2, y2]`` (stored-image pixels) per POLYLINE of the ``FINDINGS`` layer, in order.

    Raises:
        ValueError: when ``ds`` is not a GSPS or an annotation uses other than PIXEL units.
    """
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class != GSPS_STORAGE:
        raise ValueError(f"expected a Grayscale Softcopy Presentation State (SOP Class "
                         f"{GSPS_STORAGE}), found SOP Class {sop_class!r}")
    boxes: dict[str, list[list[float]]] = {}
    for ann in ds.get("GraphicAnnotationSequence", []):
        if ann.get("GraphicLayer") != FINDINGS_LAYER:
            continue
        rects = []
        for obj in ann.get("GraphicObjectSequence", []):
            if obj.GraphicType != "POLYLINE":
                continue
            if obj.GraphicAnnotationUnits != "PIXEL":
                raise ValueError(f"expected PIXEL graphic units, found "
                                 f"{obj.GraphicAnnotationUnits!r}")
            rects.append(polyline_box(obj.GraphicData))
        for ref in ann.ReferencedImageSequence:
            boxes.setdefault(str(ref.ReferencedSOPInstanceUID), []).extend(rects)
    return boxes
