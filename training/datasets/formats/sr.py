"""DICOM Structured Reports: TID 1500 Measurement Reports with planar ROIs (what OHIF and most
viewers export), read with highdicom, and Mammography CAD SRs (galacto's own or another
CAD's), read with :func:`serving.outputs.cad_sr_reader.read_cad_sr`.

Each planar ROI (TID 1410 Image Region) or CAD Single Image Finding outline becomes a box
bounding its graphic (:func:`training.datasets.formats.graphics.graphic_box`), attached to
the image it is SELECTED FROM (by SOP Instance UID). Labels for ``--map``: a TID 1410 group's
Finding code meaning, then its code value, then its Tracking Identifier; a CAD finding's code
value. 3D regions, segmentation references and points are skipped with the reason.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
from pydicom.dataset import Dataset

from serving.outputs.cad_sr_reader import MAMMOGRAPHY_CAD_SR_STORAGE, read_cad_sr
from training.datasets.annotations import Annotation, Annotations, Skipped
from training.datasets.formats.dicom_files import read_dicom_annotations
from training.datasets.formats.graphics import graphic_box

#: SR SOP classes that can carry TID 1500, and their highdicom classes.
SrClass = type[hd.sr.ComprehensiveSR | hd.sr.Comprehensive3DSR | hd.sr.EnhancedSR]
TID1500_CLASSES: dict[str, SrClass] = {
    "1.2.840.10008.5.1.4.1.1.88.34": hd.sr.Comprehensive3DSR,
    "1.2.840.10008.5.1.4.1.1.88.33": hd.sr.ComprehensiveSR,
    "1.2.840.10008.5.1.4.1.1.88.22": hd.sr.EnhancedSR,
}


def _group_labels(group: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
                  ) -> tuple[str, ...]:
    """Names ``--map`` tries for a TID 1410 group, most specific first."""
    names: list[str] = []
    finding = group.finding_type
    if finding is not None:
        names += [str(finding.meaning), str(finding.value)]
    if group.tracking_identifier:
        names.append(str(group.tracking_identifier))
    return tuple(names) or ("(no finding type)",)


def _tid1500(name: str, ds: Dataset) -> Annotations:
    """The planar ROIs of a TID 1500 report."""
    out = Annotations()
    try:
        report = TID1500_CLASSES[str(ds.SOPClassUID)].from_dataset(ds).content
        groups = report.get_planar_roi_measurement_groups()
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        return Annotations(skipped=[Skipped(name, f"not a TID 1500 measurement report "
                                                  f"highdicom can read ({exc})")])
    for k, group in enumerate(groups, start=1):
        origin = f"{name} ROI group {k}"
        roi = group.roi
        if not isinstance(roi, hd.sr.ImageRegion):
            out.skipped.append(Skipped(origin, f"{type(roi).__name__} is not a 2D image "
                                               f"region; expected an SCOORD Image Region"))
            continue
        try:
            box = graphic_box(roi.graphic_type.value, [float(v) for v in roi.GraphicData])
            uid = str(roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        except (ValueError, AttributeError, IndexError) as exc:
            out.skipped.append(Skipped(origin, str(exc)))
            continue
        label, *aliases = _group_labels(group)
        out.boxes.append(Annotation(uid, box, label, origin, tuple(aliases)))
    return out


def _cad_sr(name: str, ds: Dataset) -> Annotations:
    """The Single Image Findings of a Mammography CAD SR."""
    try:
        marks = read_cad_sr(ds)
    except ValueError as exc:
        return Annotations(skipped=[Skipped(name, str(exc))])
    out = Annotations()
    for uid, found in marks.items():
        for k, mark in enumerate(found, start=1):
            x1, y1, x2, y2 = (float(v) for v in mark.box)
            label = mark.finding[0] if mark.finding else "(no finding code)"
            out.boxes.append(Annotation(uid, (x1, y1, x2, y2), label,
                                        f"{name} finding {k} on {uid}"))
    return out


def read_sr(src: Path) -> Annotations:
    """Read every SR file at ``src`` (a file or a folder, searched recursively); other DICOM
    objects and non-DICOM files are listed as skipped.

    Raises:
        FileNotFoundError: ``src`` does not exist.
    """
    return read_dicom_annotations(src, _report)


def _report(name: str, ds: Dataset) -> Annotations:
    """The boxes of one SR by its SOP Class (CAD SR or TID 1500), or why it is skipped."""
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class == MAMMOGRAPHY_CAD_SR_STORAGE:
        return _cad_sr(name, ds)
    if sop_class in TID1500_CLASSES:
        return _tid1500(name, ds)
    return Annotations(skipped=[Skipped(name, f"SOP Class {sop_class or 'none'} is not a "
                                              f"Comprehensive/Enhanced SR or Mammography CAD SR")])
