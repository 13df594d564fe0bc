"""Grayscale Softcopy Presentation States: the graphic objects of every Graphic Annotation
(rectangles drawn as closed POLYLINEs, POLYGONs, CIRCLEs, ELLIPSEs, INTERPOLATED curves)
become boxes on each image the annotation references (its Referenced Image Sequence, or
every image of the presentation state's Referenced Series Sequence when it has none).

The label is the annotation's Graphic Layer name (galacto's own layers: ``FINDINGS`` ->
filling_defect; ``MIMICS`` and ``NIPPLE`` -> ignore). Only PIXEL units are read: DISPLAY
units depend on the displayed area and are skipped with the reason, as are POINTs and text.
"""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset

from training.datasets.annotations import Annotation, Annotations, Skipped
from training.datasets.formats.dicom_files import read_dicom_annotations
from training.datasets.formats.graphics import graphic_box

GSPS_STORAGE = "1.2.840.10008.5.1.4.1.1.11.1"


def _series_images(ds: Dataset) -> list[str]:
    """SOP Instance UIDs of every image the presentation state references."""
    return [str(ref.ReferencedSOPInstanceUID)
            for series in ds.get("ReferencedSeriesSequence", [])
            for ref in series.get("ReferencedImageSequence", [])]


def _annotation(name: str, k: int, ann: Dataset, images: list[str]) -> Annotations:
    """The boxes of one Graphic Annotation item, on each image it applies to."""
    out = Annotations()
    refs = [str(r.ReferencedSOPInstanceUID) for r in ann.get("ReferencedImageSequence", [])]
    layer = str(ann.get("GraphicLayer", "")) or "(no layer)"
    for j, obj in enumerate(ann.get("GraphicObjectSequence", []), start=1):
        origin = f"{name} annotation {k} object {j} (layer {layer})"
        units = str(obj.get("GraphicAnnotationUnits", ""))
        if units != "PIXEL":
            out.skipped.append(Skipped(origin, f"GraphicAnnotationUnits {units or 'absent'}; "
                                               f"expected PIXEL"))
            continue
        try:
            box = graphic_box(str(obj.get("GraphicType", "")), obj.get("GraphicData", []))
        except ValueError as exc:
            out.skipped.append(Skipped(origin, str(exc)))
            continue
        out.boxes += [Annotation(uid, box, layer, f"{origin} on {uid}") for uid in refs or images]
    return out


def read_gsps(src: Path) -> Annotations:
    """Read every GSPS at ``src`` (a file or a folder, searched recursively); other objects are
    listed as skipped.

    Raises:
        FileNotFoundError: ``src`` does not exist.
    """
    return read_dicom_annotations(src, _presentation_state)


def _presentation_state(name: str, ds: Dataset) -> Annotations:
    """The boxes of every Graphic Annotation of one GSPS, or why ``ds`` is skipped."""
    if str(ds.get("SOPClassUID", "")) != GSPS_STORAGE:
        return Annotations(skipped=[Skipped(name, f"SOP Class {ds.get('SOPClassUID', 'none')} "
                                                  f"is not a Grayscale Softcopy Presentation "
                                                  f"State")])
    out = Annotations()
    images = _series_images(ds)
    for k, ann in enumerate(ds.get("GraphicAnnotationSequence", []), start=1):
        out.extend(_annotation(name, k, ann, images))
    return out
