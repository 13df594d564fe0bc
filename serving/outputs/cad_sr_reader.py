"""Reading the marks back from a Mammography CAD SR (any creator's, not only ours): the Single
Image Findings with their outlines, certainties and codes, by referenced image, and the frame
of a multi-frame image each mark is drawn on."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from serving.outputs import codes as c
from serving.outputs.common import frame_numbers

MAMMOGRAPHY_CAD_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.50"
"""SOP Class UID of Mammography CAD SR Storage."""


class CadMark(NamedTuple):
    """One Single Image Finding read back from a CAD SR.

    Attributes:
        box: ``[x1, y1, x2, y2]`` in stored-image pixels (x = column, y = row, origin at the
            top-left corner of the top-left pixel), the bounds of the Outline.
        certainty: Certainty of Finding as a fraction in [0, 1], ``None`` when absent.
        finding: the finding's code as ``(Code Value, Coding Scheme Designator)``.
    """

    box: list[float]
    certainty: float | None
    finding: tuple[str, str] | None = None


def walk(item: Dataset, path: tuple[int, ...] = (1,)
         ) -> Iterator[tuple[tuple[int, ...], Dataset]]:
    """Every content item under ``item`` (itself first) with its position path (1 = root)."""
    yield path, item
    for k, child in enumerate(item.get("ContentSequence") or [], start=1):
        yield from walk(child, (*path, k))


def concept(item: Dataset) -> tuple[str, str] | None:
    """``(Code Value, Coding Scheme Designator)`` of an item's concept name."""
    names = item.get("ConceptNameCodeSequence") or []
    if not names:
        return None
    return str(names[0].CodeValue), str(names[0].CodingSchemeDesignator)


def is_item(item: Dataset, value_type: str, name: Code) -> bool:
    """Whether ``item`` is a ``value_type`` content item named ``name``."""
    return (item.get("ValueType") == value_type
            and concept(item) == (name.value, name.scheme_designator))


def _selected_item(scoord: Dataset, where: str, items: dict[tuple[int, ...], Dataset]
                   ) -> Dataset:
    """The IMAGE content item a SCOORD is SELECTED FROM (by value or by reference)."""
    for child in scoord.get("ContentSequence") or []:
        if child.get("RelationshipType") != "SELECTED FROM":
            continue
        if "ReferencedContentItemIdentifier" in child:
            ref = child.ReferencedContentItemIdentifier
            path = tuple(int(v) for v in (ref if isinstance(ref, Sequence) else [ref]))
            if path not in items:
                raise ValueError(f"SCOORD at {where} references content item "
                                 f"{'.'.join(map(str, path))}, which does not exist")
            child = items[path]
        if child.get("ValueType") == "IMAGE":
            return child
    raise ValueError(f"SCOORD at {where} has no SELECTED FROM IMAGE; expected one")


def _selected_image(scoord: Dataset, where: str, items: dict[tuple[int, ...], Dataset]) -> str:
    """SOP Instance UID of the IMAGE a SCOORD is SELECTED FROM (by value or by reference)."""
    image = _selected_item(scoord, where, items)
    return str(image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)


def _outline(finding: Dataset, where: str) -> Dataset:
    """The Outline SCOORD of a Single Image Finding."""
    for child in finding.get("ContentSequence") or []:
        if is_item(child, "SCOORD", c.OUTLINE):
            return child
    raise ValueError(f"Single Image Finding at {where} has no Outline (111041, DCM) "
                     f"SCOORD; expected one")


def _mark(finding: Dataset, where: str, items: dict[tuple[int, ...], Dataset]
          ) -> tuple[str, CadMark]:
    outline = None
    certainty = None
    for child in finding.get("ContentSequence") or []:
        if is_item(child, "SCOORD", c.OUTLINE):
            outline = child
        elif is_item(child, "NUM", c.CERTAINTY_OF_FINDING):
            certainty = float(child.MeasuredValueSequence[0].NumericValue) / 100.0
    if outline is None:
        raise ValueError(f"Single Image Finding at {where} has no Outline (111041, DCM) "
                         f"SCOORD; expected one")
    data = [float(v) for v in outline.GraphicData]
    if len(data) < 4 or len(data) % 2:
        raise ValueError(f"Outline at {where} has {len(data)} GraphicData values; expected an "
                         f"even number, at least 4 (column\\row pairs)")
    xs, ys = data[0::2], data[1::2]
    uid = _selected_image(outline, where, items)
    values = finding.get("ConceptCodeSequence") or []
    code = (str(values[0].CodeValue), str(values[0].CodingSchemeDesignator)) if values else None
    return uid, CadMark([min(xs), min(ys), max(xs), max(ys)], certainty, code)


def _check_sop_class(ds: Dataset) -> None:
    sop_class = str(ds.get("SOPClassUID") or "")
    if sop_class != MAMMOGRAPHY_CAD_SR_STORAGE:
        raise ValueError(f"expected a Mammography CAD SR (SOP Class "
                         f"{MAMMOGRAPHY_CAD_SR_STORAGE}), found SOP Class {sop_class or 'none'}")


def read_cad_sr_frames(ds: Dataset) -> dict[str, list[list[int]]]:
    """The frames each Single Image Finding of a Mammography CAD SR is drawn on.

    Returns:
        ``{SOP Instance UID of the image: [frames, ...]}`` in the order of
        :func:`read_cad_sr`'s marks: the Referenced Frame Numbers of the IMAGE the finding's
        Outline is SELECTED FROM (1-based; one, the finding's ``FrameOut.best``, for a mark
        that :func:`serving.outputs.cad_sr.build_cad_sr` wrote on a tomosynthesis volume;
        ``[]`` for a 2D image).

    Raises:
        ValueError: as :func:`read_cad_sr`.
    """
    _check_sop_class(ds)
    items = dict(walk(ds))
    frames: dict[str, list[list[int]]] = {}
    for path, item in items.items():
        if is_item(item, "CODE", c.SINGLE_IMAGE_FINDING):
            where = ".".join(map(str, path))
            image = _selected_item(_outline(item, where), where, items)
            reference = image.ReferencedSOPSequence[0]
            frames.setdefault(str(reference.ReferencedSOPInstanceUID), []).append(
                frame_numbers(reference))
    return frames


def read_cad_sr(ds: Dataset) -> dict[str, list[CadMark]]:
    """The Single Image Findings of a Mammography CAD SR, by referenced image.

    Returns:
        ``{SOP Instance UID of the image: [CadMark(box, certainty, finding), ...]}`` in
        document order, ``box`` being the bounds of the finding's Outline SCOORD in
        stored-image pixels (``[x1, y1, x2, y2]``, the frame of ``FindingOut.box_px``) and
        ``certainty`` the Certainty of Finding as a fraction (``FindingOut.score``). Findings
        nested in Composite Features are included.

    Raises:
        ValueError: ``ds`` is not a Mammography CAD SR, or a finding has no Outline or no
            image reference.
    """
    _check_sop_class(ds)
    items = dict(walk(ds))
    marks: dict[str, list[CadMark]] = {}
    for path, item in items.items():
        if is_item(item, "CODE", c.SINGLE_IMAGE_FINDING):
            uid, mark = _mark(item, ".".join(map(str, path)), items)
            marks.setdefault(uid, []).append(mark)
    return marks
