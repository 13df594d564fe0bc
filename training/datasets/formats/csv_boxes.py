"""CSV boxes: one row per box.

Header (first line, these names, any order; other columns are ignored)::

    image,x1,y1,x2,y2,label

- ``image``: the DICOM file's path relative to ``--images`` (or absolute), or its SOP
  Instance UID.
- ``x1,y1,x2,y2``: the box in stored-image pixels (x = column, y = row, origin at the top-left
  corner of the top-left pixel, x2/y2 exclusive), numbers.
- ``label``: ``filling_defect``, a mimic kind (``air_bubble``, ``cyst``, ``extravasation``) or
  any name mapped with ``--map NAME=CLASS``.

A row whose coordinates are all empty names an image without boxes (a normal image; useful
with ``--annotated-only``). Lines starting with ``#`` are comments.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from training.datasets.annotations import Annotation, Annotations, Skipped

CSV_COLUMNS = ("image", "x1", "y1", "x2", "y2", "label")


def _row(row: dict[str, str], origin: str) -> Annotation | Skipped | None:
    """One row as an annotation, a reason to skip it, or ``None`` for an image-only row."""
    image = (row.get("image") or "").strip()
    if not image:
        return Skipped(origin, "empty 'image'; expected a file path or SOP Instance UID")
    coords = [(row.get(k) or "").strip() for k in ("x1", "y1", "x2", "y2")]
    if not any(coords):
        return None
    try:
        x1, y1, x2, y2 = (float(v) for v in coords)
    except ValueError:
        return Skipped(origin, f"x1, y1, x2, y2 {coords} are not all numbers")
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or not (x1 < x2 and y1 < y2):
        return Skipped(origin, f"box {[x1, y1, x2, y2]}: expected finite x1 < x2 and y1 < y2")
    label = (row.get("label") or "").strip()
    if not label:
        return Skipped(origin, "empty 'label'; expected filling_defect or a mimic kind")
    return Annotation(image, (x1, y1, x2, y2), label, origin)


def read_csv(src: Path) -> Annotations:
    """Read a box CSV (see the module docstring for the columns).

    Raises:
        ValueError: the file has no header or lacks one of :data:`CSV_COLUMNS`.
        OSError: it cannot be read.
    """
    out = Annotations()
    with src.open(newline="", encoding="utf-8-sig") as fh:
        lines = (line for line in fh if not line.lstrip().startswith("#"))
        reader = csv.DictReader(lines)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{src}: header lacks {', '.join(missing)}; expected the columns "
                             f"{','.join(CSV_COLUMNS)}")
        for n, row in enumerate(reader, start=2):
            parsed = _row(row, f"{src.name} row {n}")
            if isinstance(parsed, Annotation):
                out.boxes.append(parsed)
            elif isinstance(parsed, Skipped):
                out.skipped.append(parsed)
    return out
