"""From annotations (any format) and a folder of images to a ``dataset.json``.

Every file under ``--images`` is read through serving's intake (header only). Accepted images
are indexed by SOP Instance UID and by path; each annotation is matched to one of them by its
``ref``, mapped to a class by ``--map``, and checked against the image's size. Images stay where
they are: ``dataset.json`` names them by their path relative to the output folder. Images with
no annotation are normal images (unless ``annotated_only``). Whatever could not be imported is
listed with its reason in the :class:`ImportReport` (and ``import_report.json``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.datasets.annotations import Annotation, Annotations, Skipped
from training.datasets.image_facts import ImageFacts, NotAnImageError, read_facts
from training.datasets.index_file import write_index
from training.datasets.label_map import IGNORE, LESION, LabelMap
from training.datasets.schema import SPLITS

REPORT_NAME = "import_report.json"


@dataclass
class ImageIndex:
    """The accepted images under a folder, by SOP Instance UID and by resolved path, plus the
    files the intake refused (``(path, reason)``)."""

    root: Path
    by_uid: dict[str, ImageFacts] = field(default_factory=dict)
    by_path: dict[Path, ImageFacts] = field(default_factory=dict)
    refused: list[tuple[Path, str]] = field(default_factory=list)

    def find(self, ref: str) -> ImageFacts | None:
        """The image ``ref`` names (a SOP Instance UID, or a path relative to the folder or
        absolute), or ``None``."""
        if ref in self.by_uid:
            return self.by_uid[ref]
        path = Path(ref)
        for candidate in ((path,) if path.is_absolute() else (self.root / path, path)):
            facts = self.by_path.get(candidate.resolve())
            if facts is not None:
                return facts
        return None


def index_images(root: Path, progress: Callable[[], None] | None = None) -> ImageIndex:
    """Read every file under ``root`` (recursively, hidden files skipped) through the intake.

    Raises:
        NotADirectoryError: ``root`` is not a folder.
    """
    if not root.is_dir():
        raise NotADirectoryError(f"--images {root}: not a folder")
    index = ImageIndex(root)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        try:
            facts = read_facts(path)
        except NotAnImageError as exc:
            index.refused.append((path, exc.reason))
        else:
            index.by_uid.setdefault(facts.sop_instance_uid, facts)
            index.by_path[path.resolve()] = facts
        if progress is not None:
            progress()
    return index


@dataclass
class ImportReport:
    """What an import did: ``images`` and ``normal_images`` written, ``lesions`` and
    ``mimics`` boxes imported, ``skipped`` annotations (origin, reason) and ``not_images``
    (files under ``--images`` the intake refused, with its reason)."""

    images: int = 0
    normal_images: int = 0
    lesions: int = 0
    mimics: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    not_images: list[tuple[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The report as JSON."""
        return {"images": self.images, "normal_images": self.normal_images,
                "lesions": self.lesions, "mimics": self.mimics,
                "skipped": [{"origin": s.origin, "reason": s.reason} for s in self.skipped],
                "not_images": [{"file": f, "reason": r} for f, r in self.not_images]}


def _place(ann: Annotation, images: ImageIndex, labels: LabelMap
           ) -> tuple[ImageFacts, str] | Skipped | None:
    """The image and class of one annotation; a :class:`Skipped` saying why not; ``None`` for a
    box mapped to ``ignore``."""
    facts = images.find(ann.ref)
    if facts is None:
        return Skipped(ann.origin, f"no image under {images.root} with SOP Instance UID or "
                                   f"path {ann.ref!r}")
    cls = labels.resolve((ann.label, *ann.aliases))
    if cls is None:
        return Skipped(ann.origin, f"label {ann.label!r} is not mapped (add --map "
                                   f"'{ann.label}=filling_defect', a mimic kind or ignore)")
    if cls == IGNORE:
        return None
    x1, y1, x2, y2 = ann.box
    if not (0 <= x1 < x2 <= facts.cols and 0 <= y1 < y2 <= facts.rows):
        return Skipped(ann.origin, f"box {list(ann.box)} is not inside image {facts.path.name} "
                                   f"({facts.cols} x {facts.rows} px); expected 0 <= x1 < x2 "
                                   f"<= {facts.cols} and 0 <= y1 < y2 <= {facts.rows}")
    return facts, cls


def size_mm(box: tuple[float, float, float, float], facts: ImageFacts) -> float | None:
    """A lesion's size estimated from its box: the longer side in mm (``None`` without pixel
    spacing)."""
    if facts.spacing_mm is None:
        return None
    x1, y1, x2, y2 = box
    return round(max((x2 - x1) * facts.spacing_mm[1], (y2 - y1) * facts.spacing_mm[0]), 2)


def _item(facts: ImageFacts, out: Path) -> dict[str, Any]:
    """A ``dataset.json`` item for an image, without boxes yet."""
    return {"image": Path(os.path.relpath(facts.path.resolve(), out.resolve())).as_posix(),
            "boxes": [], "labels": [], "lesion_size_mm": [], "mimics": [],
            "patient_id": facts.patient_id or None, "study_instance_uid":
            facts.study_instance_uid or None, "sop_instance_uid": facts.sop_instance_uid or None,
            "laterality": facts.laterality, "view": facts.view,
            "manufacturer": facts.manufacturer or None}


def build_items(found: Annotations, images: ImageIndex, labels: LabelMap, out: Path,
                annotated_only: bool = False) -> tuple[list[dict[str, Any]], ImportReport]:
    """Match, map and check every annotation; one item per image, sorted by patient, study
    and path. Returns the items and the report."""
    report = ImportReport(skipped=list(found.skipped),
                          not_images=[(str(p), r) for p, r in images.refused])
    items: dict[Path, dict[str, Any]] = {}
    if not annotated_only:
        items = {f.path: _item(f, out) for f in images.by_path.values()}
    for ann in found.boxes:
        placed = _place(ann, images, labels)
        if placed is None:
            continue
        if isinstance(placed, Skipped):
            report.skipped.append(placed)
            continue
        facts, cls = placed
        item = items.setdefault(facts.path, _item(facts, out))
        if cls == LESION:
            item["boxes"].append(list(ann.box))
            item["labels"].append(LESION)
            item["lesion_size_mm"].append(size_mm(ann.box, facts))
            report.lesions += 1
        else:
            item["mimics"].append({"kind": cls, "box": list(ann.box)})
            report.mimics += 1
    ordered = sorted(items.values(), key=lambda it: (str(it["patient_id"]),
                                                      str(it["study_instance_uid"]), it["image"]))
    report.images = len(ordered)
    report.normal_images = sum(1 for it in ordered if not it["boxes"])
    return ordered, report


def write_import(out: Path, items: list[dict[str, Any]], report: ImportReport, split: str,
                 meta: dict[str, Any]) -> Path:
    """Write ``out/dataset.json`` (every item in ``split``) and ``out/import_report.json``.

    Raises:
        ValueError: ``split`` is not a split name.
        DatasetError: the items break the schema (a bug: nothing is written).
    """
    if split not in SPLITS:
        raise ValueError(f"--split {split!r}: expected one of {SPLITS}")
    raw: dict[str, Any] = {s: (items if s == split else []) for s in SPLITS}
    raw["meta"] = meta
    path = write_index(out, raw)
    (out / REPORT_NAME).write_text(json.dumps(report.as_json(), indent=1) + "\n")
    return path
