"""Annotations as every import format yields them, before they are matched to images."""

from __future__ import annotations

from dataclasses import dataclass, field

BoxXYXY = tuple[float, float, float, float]
"""``(x1, y1, x2, y2)`` stored-image pixels, x = column, origin at the top-left corner of the
top-left pixel, x2/y2 exclusive (the ``dataset.json`` convention)."""


@dataclass(frozen=True)
class Annotation:
    """One box read from an annotation source.

    Attributes:
        ref: the image it belongs to: a SOP Instance UID, or a file path (relative to the
            ``--images`` folder, or absolute).
        box: the bounding box, see :data:`BoxXYXY`.
        label: the source's own label name (a CSV label, a COCO category name, an SR finding's
            code meaning or value, a GSPS layer name), before ``--map``.
        origin: where it was read, e.g. ``boxes.csv row 4``, for the import report.
        aliases: other names of the same label tried by ``--map`` after ``label`` (e.g. an SR
            finding's code value after its meaning).
    """

    ref: str
    box: BoxXYXY
    label: str
    origin: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Skipped:
    """Something that was not imported: ``origin`` (as in :class:`Annotation`) and why."""

    origin: str
    reason: str


@dataclass
class Annotations:
    """What a format reader returns: the boxes it read and what it had to skip."""

    boxes: list[Annotation] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def extend(self, other: Annotations) -> None:
        """Add ``other``'s boxes and skipped entries."""
        self.boxes.extend(other.boxes)
        self.skipped.extend(other.skipped)
