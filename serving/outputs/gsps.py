"""Grayscale Softcopy Presentation State (GSPS, highdicom) with the findings drawn as graphic
annotations: what any PACS viewer can show on top of the original images.

Layers (each with a CIELab colour and a Recommended Display Grayscale Value for monochrome
mammography displays, PS3.3 C.10.7):

- ``FINDINGS``: per finding a rectangle (closed POLYLINE, 5 points, PIXEL units) and a label
  of a few lines outside the box (:mod:`serving.outputs.gsps_labels`): which lesion and its
  score, where it is, e.g. "Filling defect 1, score 0.93" / "Left breast, 10 o'clock" /
  "middle depth, 3 cm from nipple" (:mod:`serving.outputs.wording`; the clock face or the
  half of a view is left out, and the label says so, when the image orientation was assumed).
- ``MIMICS``: probable mimics (``ImageOut.mimics``), never as findings: a rectangle and the
  label "Probable air bubble" / "not a lesion, score 0.71".
- ``NIPPLE``: a circle of radius :data:`NIPPLE_RADIUS_MM` around ``ImageOut.nipple_px`` and the
  label "Nipple", where the nipple was found.
- ``EXTENT`` (tomosynthesis only): a finding's rectangle on the other frames it is detected in.

Labels of one image are placed together: outside every marked box and apart from each other.

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

Tomosynthesis (a source in :data:`serving.outputs.common.VOLUME_SOP_CLASSES`): each volume has
a GSPS of its own (a presentation state may reference frames of one multi-frame image only,
and its Modality LUT is the volume's). A mark is drawn on the finding's or mimic's best frame
(``frame.best``): one Graphic Annotation per layer and frame, whose Referenced Image Sequence
item carries Referenced Frame Number (0008,1160) (PS3.3 C.10.5: absent, an annotation applies
to every frame, as the nipple's does). Layer ``EXTENT``: the finding's rectangle, without a
label, on the other frames it is detected in (``frame.first`` to ``frame.last``), so a
reader scrolling through the volume sees where it starts and ends. Displayed Area: the whole
frame (Rows x Columns, every frame). Softcopy VOI LUT: the volume's window from the Frame VOI
LUT functional group, shared (one item for every frame) or per frame (one item per distinct
window, referencing its frames), else the full-range window; Modality LUT: the Pixel Value
Transformation functional group (shared), else the Secondary Capture's Rescale
Slope/Intercept, else identity.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from highdicom.color import CIELabColor
from pydicom.dataset import Dataset

from serving.outputs.common import (
    ResultInput,
    ResultKind,
    box_polyline,
    evidence_header,
    frame_numbers,
    is_volume,
    new_uid,
    now,
    polyline_box,
    referenced_frame,
    series_identity,
    software_versions,
    stamp_result,
)
from serving.outputs.gsps_labels import Box, PlacedLabel, place_labels
from serving.outputs.wording import StudyWords, finding_label, mimic_label
from serving.pipeline.findings import ImageOut

GSPS_STORAGE = "1.2.840.10008.5.1.4.1.1.11.1"
"""SOP Class UID of Grayscale Softcopy Presentation State Storage."""

FINDINGS_LAYER = "FINDINGS"
MIMICS_LAYER = "MIMICS"
NIPPLE_LAYER = "NIPPLE"
EXTENT_LAYER = "EXTENT"
CONTENT_LABEL = "GALACTO_CAD"
#: Radius of the nipple marker, mm (converted with the image's spacing).
NIPPLE_RADIUS_MM = 3.0
#: Radius of the nipple marker, pixels, when the image has no usable spacing.
NIPPLE_RADIUS_PX_FALLBACK = 30.0


@dataclass(frozen=True)
class LayerStyle:
    """A graphic layer's name, order, description and how a display should draw it."""

    name: str
    order: int
    description: str
    color: CIELabColor
    gray: int
    """Recommended Display Grayscale Value, a P-Value from 0 (black) to 0xFFFF (white)."""


LAYERS: tuple[LayerStyle, ...] = (
    LayerStyle(FINDINGS_LAYER, 1, "Filling defects: box, lesion number, score, location",
               CIELabColor(97.0, -21.0, 94.0), 0xFFFF),  # yellow / white
    LayerStyle(MIMICS_LAYER, 2, "Probable mimics (air bubble, cyst, extravasation): not lesions",
               CIELabColor(55.0, 60.0, -60.0), 0x9000),  # violet / mid grey
    LayerStyle(NIPPLE_LAYER, 3, "Nipple as located by galacto",
               CIELabColor(91.0, -48.0, -14.0), 0xC000),  # cyan / light grey
    LayerStyle(EXTENT_LAYER, 4, "Filling defects on the other frames they are detected in",
               CIELabColor(75.0, -15.0, 70.0), 0xB000),  # dull yellow / light grey
)
"""Layers in drawing order; a GSPS lists the ones it uses."""

Layered = dict[tuple[str, tuple[int, ...]], tuple[list[hd.pr.GraphicObject],
                                                  list[hd.pr.TextObject]]]
"""Graphic and text objects by (layer name, frame numbers): frame numbers ``()`` for every
frame (and for a 2D image)."""


# --------------------------------------------------------------------------------------------
# Labels and graphics
# --------------------------------------------------------------------------------------------


def _rectangle(box: Sequence[float], rows: int, cols: int, what: str) -> hd.pr.GraphicObject:
    return hd.pr.GraphicObject(
        graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
        graphic_data=box_polyline(box, rows, cols, what),
        units=hd.pr.AnnotationUnitsValues.PIXEL)


def _nipple_circle(image: ImageOut, rows: int, cols: int
                   ) -> tuple[Box, hd.pr.GraphicObject | None] | None:
    """The nipple's marked area and circle (no circle when the nipple sits on the image
    border); None when it was not found or lies off the image."""
    if image.nipple_px is None:
        return None
    x, y = (float(v) for v in image.nipple_px)
    if not (0.0 <= x <= cols and 0.0 <= y <= rows):
        return None
    spacing = float(image.spacing_mm[1]) if len(image.spacing_mm) > 1 else 0.0  # [row, col]
    radius = NIPPLE_RADIUS_MM / spacing if spacing > 0 else NIPPLE_RADIUS_PX_FALLBACK
    rim = _rim_point(x, y, radius, rows, cols)
    if rim is None:
        return (x, y, x, y), None
    r = math.hypot(rim[0] - x, rim[1] - y)
    circle = hd.pr.GraphicObject(
        graphic_type=hd.pr.GraphicTypeValues.CIRCLE,
        graphic_data=np.array([[x, y], rim], dtype=np.float64),
        units=hd.pr.AnnotationUnitsValues.PIXEL)
    return (x - r, y - r, x + r, y + r), circle


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


def _texts(label: PlacedLabel) -> list[hd.pr.TextObject]:
    """One text object per line, justified towards the mark in its bounding box; the first
    also anchored (visibly) on the marked box."""
    out = []
    for k, (line, box) in enumerate(zip(label.lines, label.line_boxes, strict=True)):
        out.append(hd.pr.TextObject(
            text_value=line, units=hd.pr.AnnotationUnitsValues.PIXEL, bounding_box=box,
            text_justification=hd.pr.TextJustificationValues(label.justification),
            anchor_point=label.anchor if k == 0 else None, anchor_point_visible=True))
    return out


def _frame_key(frame: int | None) -> tuple[int, ...]:
    return () if frame is None else (frame,)


def frame_annotations(image: ImageOut, words: StudyWords, source: Dataset) -> Layered:
    """Graphic and text objects of one image, by layer name and frames (nothing left out):
    on a 2D image every key has frames ``()``; on a tomosynthesis volume a finding's or
    mimic's rectangle and label are keyed by its best frame, the finding's rectangle on the
    other frames it is detected in by those frames (layer ``EXTENT``), the nipple by ``()``.

    Raises:
        ValueError: a box does not fit the image, or a frame does not fit the volume
            (:func:`serving.outputs.common.referenced_frame`).
    """
    rows, cols = int(source.Rows), int(source.Columns)
    layers: Layered = {}
    targets: list[tuple[tuple[str, tuple[int, ...]], Box, list[str]]] = []
    for f in image.findings:
        frame = referenced_frame(source, f.frame, f"finding {f.id}")
        key = (FINDINGS_LAYER, _frame_key(frame))
        layers.setdefault(key, ([], []))[0].append(
            _rectangle(f.box_px, rows, cols, f"finding {f.id} box_px"))
        targets.append((key, tuple(f.box_px),  # type: ignore[arg-type]
                        finding_label(words.lesion_of(f.id), f, image.number_of_frames)))
    for k, m in enumerate(image.mimics):
        key = (MIMICS_LAYER, _frame_key(referenced_frame(source, m.frame, f"mimic {k}")))
        layers.setdefault(key, ([], []))[0].append(
            _rectangle(m.box_px, rows, cols, f"mimic {k} box_px"))
        targets.append((key, tuple(m.box_px),  # type: ignore[arg-type]
                        mimic_label(m, image.number_of_frames)))
    nipple = _nipple_circle(image, rows, cols)
    if nipple is not None:
        area, circle = nipple
        graphics = layers.setdefault((NIPPLE_LAYER, ()), ([], []))[0]
        if circle is not None:
            graphics.append(circle)
        targets.append(((NIPPLE_LAYER, ()), area, ["Nipple"]))
    placed = place_labels([t[1] for t in targets], [t[2] for t in targets], rows, cols)
    for (key, _, _), label in zip(targets, placed, strict=True):
        layers[key][1].extend(_texts(label))
    for f in image.findings:
        if f.frame is None:
            continue
        others = tuple(n for n in range(f.frame.first, f.frame.last + 1) if n != f.frame.best)
        if others:
            layers.setdefault((EXTENT_LAYER, others), ([], []))[0].append(
                _rectangle(f.box_px, rows, cols, f"finding {f.id} box_px"))
    return layers


def _annotations(sources: Sequence[Dataset], images: Sequence[ImageOut], words: StudyWords,
                 ) -> tuple[list[hd.pr.GraphicLayer], list[hd.pr.GraphicAnnotation]]:
    """The layers in use and one annotation per image and layer that has something to show."""
    layers = {style.name: hd.pr.GraphicLayer(style.name, order=style.order,
                                              display_color=style.color,
                                              description=style.description)
              for style in LAYERS}
    annotations: list[hd.pr.GraphicAnnotation] = []
    used: set[str] = set()
    for src, image in zip(sources, images, strict=True):
        by_layer = frame_annotations(image, words, src)
        for style in LAYERS:
            for (name, frames), (graphics, texts) in sorted(by_layer.items(),
                                                            key=lambda kv: kv[0]):
                if name != style.name:
                    continue
                annotations.append(hd.pr.GraphicAnnotation(
                    referenced_images=[src], graphic_layer=layers[style.name],
                    referenced_frame_number=list(frames) or None,
                    graphic_objects=graphics or None, text_objects=texts or None))
                used.add(style.name)
    for style in LAYERS:  # highdicom's GraphicLayer takes no grayscale value
        layers[style.name].GraphicLayerRecommendedDisplayGrayscaleValue = style.gray
    return [layers[s.name] for s in LAYERS if s.name in used], annotations


# --------------------------------------------------------------------------------------------
# Display transformations
# --------------------------------------------------------------------------------------------


def _first_value(source: Dataset, keyword: str) -> str | None:
    """The first value of ``keyword`` in ``source`` as text, ``None`` when absent or empty."""
    value = source.get(keyword)
    if isinstance(value, Sequence) and not isinstance(value, str):
        value = value[0] if len(value) else None
    return None if value is None or str(value).strip() == "" else str(value).strip()


def full_range_window(source: Dataset, rescale: tuple[float, float] | None = None
                      ) -> tuple[float, float]:
    """``(center, width)`` of a linear window spanning every stored value after the Modality
    LUT (``rescale`` = (slope, intercept), default the source's Rescale Slope/Intercept,
    default 1/0): BitsStored (default BitsAllocated, 16), signed when PixelRepresentation
    is 1."""
    bits = int(source.get("BitsStored") or source.get("BitsAllocated") or 16)
    if int(source.get("PixelRepresentation") or 0) == 1:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        lo, hi = 0, 2**bits - 1
    if rescale is None:
        slope = float(source.get("RescaleSlope") or 1.0)
        intercept = float(source.get("RescaleIntercept") or 0.0)
    else:
        slope, intercept = rescale
    a, b = sorted((lo * slope + intercept, hi * slope + intercept))
    width = b - a + 1.0
    return a + width / 2.0, width


Window = tuple[float, float, str, str | None]
"""``(center, width, VOI LUT Function, explanation)`` of a linear or sigmoid window."""


def _window(item: Dataset) -> Window | None:
    """The first Window Center/Width of ``item`` (an image, or a Frame VOI LUT functional
    group item) with its VOI LUT Function (LINEAR unless LINEAR_EXACT or SIGMOID) and
    explanation; ``None`` when absent or when the width is below the function's minimum
    (PS3.3 C.11.2.1.2)."""
    center_text, width_text = (_first_value(item, k) for k in ("WindowCenter", "WindowWidth"))
    function = str(item.get("VOILUTFunction") or "LINEAR").strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"
    explanation = _first_value(item, "WindowCenterWidthExplanation")
    minimum = 1.0 if function == "LINEAR" else math.nextafter(0.0, 1.0)  # PS3.3 C.11.2.1.2
    if center_text is None or width_text is None or float(width_text) < minimum:
        return None
    return float(center_text), float(width_text), function, explanation


def _softcopy_voi(window: Window, source: Dataset, frames: Sequence[int] | None = None
                  ) -> hd.pr.SoftcopyVOILUTTransformation:
    """A Softcopy VOI LUT item with ``window`` for ``source`` (``frames``: those frames of a
    multi-frame source only)."""
    center, width, function, explanation = window
    # One-element lists: highdicom 0.28 splits a plain-string explanation into characters.
    return hd.pr.SoftcopyVOILUTTransformation(
        window_center=[center], window_width=[width],
        window_explanation=[explanation] if explanation else None,
        voi_lut_function=function,
        referenced_images=hd.ReferencedImageSequence(
            referenced_images=[source],
            referenced_frame_number=list(frames) if frames is not None else None),
    )


def voi_lut(source: Dataset) -> hd.pr.SoftcopyVOILUTTransformation:
    """The source's first Window Center/Width (with explanation and VOI LUT Function), or a
    full-range linear window (:func:`full_range_window`) when it has none or an unusable one;
    it references ``source`` only."""
    window = _window(source) or (*full_range_window(source), "LINEAR", "FULL RANGE")
    return _softcopy_voi(window, source)


def _functional_group(source: Dataset, keyword: str, frame: int | None = None
                      ) -> Dataset | None:
    """The first item of functional group ``keyword`` (e.g. ``"FrameVOILUTSequence"``) in the
    Shared Functional Groups (``frame`` None) or in frame ``frame``'s (1-based) Per-frame
    Functional Groups; ``None`` when absent."""
    if frame is None:
        groups = source.get("SharedFunctionalGroupsSequence") or []
        group = groups[0] if groups else None
    else:
        groups = source.get("PerFrameFunctionalGroupsSequence") or []
        group = groups[frame - 1] if len(groups) >= frame else None
    items = (group.get(keyword) or []) if group is not None else []
    return items[0] if items else None


def volume_rescale(source: Dataset) -> tuple[float, float, str]:
    """``(slope, intercept, type)`` of a volume's Modality LUT: the Shared Functional Groups'
    Pixel Value Transformation (enhanced images), else Rescale Slope/Intercept/Type (a
    Secondary Capture), else identity; type "US" (unspecified) when not given."""
    item = _functional_group(source, "PixelValueTransformationSequence")
    where = item if item is not None and "RescaleSlope" in item else source
    slope = float(where.get("RescaleSlope") or 1.0)
    intercept = float(where.get("RescaleIntercept") or 0.0)
    return slope, intercept, str(where.get("RescaleType") or "US")


def voi_luts(source: Dataset) -> list[hd.pr.SoftcopyVOILUTTransformation]:
    """The Softcopy VOI LUT items of one source: :func:`voi_lut` for a 2D image; for a
    tomosynthesis volume the Shared Functional Groups' Frame VOI LUT window, else one item per
    distinct per-frame window referencing its frames (and a full-range item for frames
    without one), else the image's own window, else the full range after
    :func:`volume_rescale`."""
    if not is_volume(source):
        return [voi_lut(source)]
    full: Window = (*full_range_window(source, volume_rescale(source)[:2]), "LINEAR",
                    "FULL RANGE")
    shared = _functional_group(source, "FrameVOILUTSequence")
    window = _window(shared) if shared is not None else None
    if window is not None:
        return [_softcopy_voi(window, source)]
    frames: dict[Window, list[int]] = {}
    missing: list[int] = []
    for n in range(1, len(source.get("PerFrameFunctionalGroupsSequence") or []) + 1):
        item = _functional_group(source, "FrameVOILUTSequence", n)
        own = _window(item) if item is not None else None
        if own is None:
            missing.append(n)
        else:
            frames.setdefault(own, []).append(n)
    if not frames:
        return [_softcopy_voi(_window(source) or full, source)]
    if len(frames) == 1 and not missing:
        return [_softcopy_voi(next(iter(frames)), source)]
    items = [_softcopy_voi(w, source, numbers) for w, numbers in frames.items()]
    if missing:
        items.append(_softcopy_voi(full, source, missing))
    return items


def modality_lut(source: Dataset) -> hd.ModalityLUTTransformation | None:
    """The Modality LUT a volume's presentation state states (:func:`volume_rescale`);
    ``None`` for a 2D image (highdicom copies the image's own)."""
    if not is_volume(source):
        return None
    slope, intercept, kind = volume_rescale(source)
    return hd.ModalityLUTTransformation(rescale_intercept=intercept, rescale_slope=slope,
                                        rescale_type=kind)


def presentation_lut(source: Dataset) -> hd.PresentationLUTTransformation:
    """INVERSE for a MONOCHROME1 source, IDENTITY otherwise."""
    inverse = str(source.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    shape = (hd.PresentationLUTShapeValues.INVERSE if inverse
             else hd.PresentationLUTShapeValues.IDENTITY)
    return hd.PresentationLUTTransformation(presentation_lut_shape=shape)


def common_laterality(images: Sequence[ImageOut]) -> str:
    """General Series Laterality (Type 2C, breasts are paired): ``"L"`` or ``"R"`` when every
    image shows that breast, else empty. A series-level attribute: every presentation state
    of the series gets the value of all images the series references."""
    sides = {img.laterality for img in images}
    return sides.pop() if len(sides) == 1 and sides <= {"L", "R"} else ""


def _group_key(source: Dataset) -> tuple[str, ...]:
    """What the images of one presentation state must share; a volume shares it with no
    other image."""
    key = tuple(str(source.get(k, "")) for k in (
        "Rows", "Columns", "PhotometricInterpretation", "RescaleSlope", "RescaleIntercept",
        "RescaleType"))
    return (*key, str(source.get("SOPInstanceUID", ""))) if is_volume(source) else key


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
                        images: Sequence[ImageOut], words: StudyWords, series_uid: str,
                        instance_number: int, laterality: str, when: dt.datetime) -> Dataset:
    """One GSPS for ``sources`` (which share size and Modality LUT); ``laterality`` is the
    series' (:func:`common_laterality`)."""
    layers, annotations = _annotations(sources, images, words)
    description = f"Filling defects found by {result.algorithm_name} {result.algorithm_version}"
    ps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=sources,
        series_instance_uid=series_uid,
        sop_instance_uid=new_uid(),
        instance_number=instance_number,
        manufacturer_model_name=result.algorithm_name,
        software_versions=software_versions(result.model),
        device_serial_number="",
        content_label=CONTENT_LABEL,
        content_description=description[:64],
        graphic_annotations=annotations or None,
        graphic_layers=layers or None,
        voi_lut_transformations=[item for s in sources for item in voi_luts(s)],
        modality_lut_transformation=modality_lut(sources[0]),
        presentation_lut_transformation=presentation_lut(sources[0]),
        series_date=when.date(),
        series_time=when.time(),
        **series_identity(ResultKind.GSPS),
    )
    stamp_result(ps, result, when)
    ps.Laterality = laterality
    ps.PresentationCreationDate = when.strftime("%Y%m%d")
    ps.PresentationCreationTime = when.strftime("%H%M%S")
    return ps


def build_gsps(result: ResultInput, *, when: dt.datetime | None = None) -> list[Dataset]:
    """Grayscale Softcopy Presentation States that draw ``result``'s findings (and probable
    mimics, as such, and nipples) on its source images: one per group of same-sized,
    same-Modality-LUT 2D sources (normally one) and one per tomosynthesis volume (its marks
    on their frames, see the module docstring), all in one new series
    (``SERIES_NUMBER[GSPS]``) of the source study, with the series' laterality.

    Patient/study attributes are copied verbatim from the first source, the algorithm is named
    in Contributing Equipment; creation, series and contribution dates/times are ``when``
    (default: now). Apart from UIDs and those dates/times the objects are a function of
    ``result`` alone. Sources may be headers without Pixel Data.

    Returns:
        The GSPS datasets (with file meta), in source order of their first image.

    Raises:
        ValueError: a box does not fit its image, or a frame its volume.
    """
    when = now() if when is None else when
    sources = [evidence_header(s) for s in result.sources]
    images = result.study.images
    words = StudyWords(result)
    series_uid = new_uid()
    laterality = common_laterality(images)
    return [
        _presentation_state(result, [sources[i] for i in idx], [images[i] for i in idx], words,
                            series_uid, n, laterality, when)
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


def read_gsps_frames(ds: Dataset) -> dict[str, list[list[int]]]:
    """The frames of the finding boxes of a GSPS written by :func:`build_gsps`:
    SOPInstanceUID -> the Referenced Frame Numbers of each ``FINDINGS`` rectangle's Graphic
    Annotation (1-based; one, the finding's ``FrameOut.best``, on a tomosynthesis volume;
    ``[]`` on a 2D image), in the order of :func:`read_gsps_boxes`' boxes.

    Raises:
        ValueError: as :func:`read_gsps_boxes`.
    """
    read_gsps_boxes(ds)  # the same checks
    frames: dict[str, list[list[int]]] = {}
    for ann in ds.get("GraphicAnnotationSequence", []):
        if ann.get("GraphicLayer") != FINDINGS_LAYER:
            continue
        count = sum(1 for obj in ann.get("GraphicObjectSequence", [])
                    if obj.GraphicType == "POLYLINE")
        for ref in ann.ReferencedImageSequence:
            frames.setdefault(str(ref.ReferencedSOPInstanceUID), []).extend(
                frame_numbers(ref) for _ in range(count))
    return frames
