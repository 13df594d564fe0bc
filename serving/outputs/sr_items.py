"""SR content items built directly with pydicom (PS3.3 C.17.3 SR Document Content Module), for
the Mammography CAD SR, which no Python library builds."""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.dataset import Dataset
from pydicom.sr.coding import Code


def code_item(code: Code) -> Dataset:
    """One code sequence item (Code Value, Coding Scheme Designator, Code Meaning)."""
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def item(relationship: str | None, value_type: str, name: Code | None,
         children: Sequence[Dataset] = ()) -> Dataset:
    """A content item of ``value_type`` named ``name`` (no name: an IMAGE), with
    ``children`` as its Content Sequence."""
    out = Dataset()
    if relationship is not None:
        out.RelationshipType = relationship
    out.ValueType = value_type
    if name is not None:
        out.ConceptNameCodeSequence = [code_item(name)]
    if children:
        out.ContentSequence = list(children)
    return out


def container(relationship: str | None, name: Code, children: Sequence[Dataset]) -> Dataset:
    """A CONTAINER with separate items."""
    out = item(relationship, "CONTAINER", name, children)
    out.ContinuityOfContent = "SEPARATE"
    return out


def code(relationship: str, name: Code, value: Code, children: Sequence[Dataset] = ()
         ) -> Dataset:
    """A CODE content item."""
    out = item(relationship, "CODE", name, children)
    out.ConceptCodeSequence = [code_item(value)]
    return out


def text(relationship: str, name: Code, value: str) -> Dataset:
    """A TEXT content item."""
    out = item(relationship, "TEXT", name)
    out.TextValue = value
    return out


def decimal_string(value: float) -> str:
    """A Decimal String (at most 16 characters) for ``value``, 6 significant digits."""
    return format(value, ".6g")


def num(relationship: str, name: Code, value: float, unit: Code,
        children: Sequence[Dataset] = ()) -> Dataset:
    """A NUM content item with one measured value in ``unit``."""
    out = item(relationship, "NUM", name, children)
    measured = Dataset()
    measured.NumericValue = decimal_string(value)
    measured.MeasurementUnitsCodeSequence = [code_item(unit)]
    out.MeasuredValueSequence = [measured]
    return out


def date(relationship: str, name: Code, value: str) -> Dataset:
    """A DATE content item (``value`` as DA)."""
    out = item(relationship, "DATE", name)
    out.Date = value
    return out


def time(relationship: str, name: Code, value: str) -> Dataset:
    """A TIME content item (``value`` as TM)."""
    out = item(relationship, "TIME", name)
    out.Time = value
    return out


def image(relationship: str, sop_class_uid: str, sop_instance_uid: str,
          children: Sequence[Dataset] = (), frame: int | None = None) -> Dataset:
    """An IMAGE content item referencing one instance, or with ``frame`` one frame of a
    multi-frame instance (Referenced Frame Number (0008,1160), 1-based; PS3.3 C.18.4 Image
    Reference Macro: absent, the reference is to every frame)."""
    out = item(relationship, "IMAGE", None, children)
    ref = Dataset()
    ref.ReferencedSOPClassUID = sop_class_uid
    ref.ReferencedSOPInstanceUID = sop_instance_uid
    if frame is not None:
        ref.ReferencedFrameNumber = frame
    out.ReferencedSOPSequence = [ref]
    return out


def scoord(relationship: str, name: Code, graphic_type: str, points: Sequence[float],
           children: Sequence[Dataset]) -> Dataset:
    """A SCOORD content item: (column, row) pairs in image pixels."""
    out = item(relationship, "SCOORD", name, children)
    out.GraphicType = graphic_type
    out.GraphicData = [float(v) for v in points]
    return out


def by_reference(relationship: str, path: Sequence[int]) -> Dataset:
    """A by-reference relationship to the content item at ``path`` (1 = the root)."""
    out = Dataset()
    out.RelationshipType = relationship
    out.ReferencedContentItemIdentifier = list(path)
    return out
