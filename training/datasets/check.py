"""``galacto dataset check``: a dataset folder against its schema and its images.

The check has three stages; a stage's errors stop nothing but the stages that need it:

1. ``dataset.json`` against the schema (:mod:`training.datasets.schema`); on failure, only
   these errors are reported.
2. Every image read through serving's intake (header only): missing or refused files, and
   every box and mimic box outside its image (``x2 <= Columns``, ``y2 <= Rows``) are errors; an
   item whose ``sop_instance_uid`` differs from the file's is an error; a patient found in two
   splits is a warning (results on the later split would be optimistic).
3. A summary per split: images, studies, patients, normal images, lesions by size band
   (``lesion_size_mm``; ``unknown`` without it), mimics by kind, vendors (Manufacturer),
   views and laterality.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from training.datasets.image_facts import ImageFacts, NotAnImageError, read_facts
from training.datasets.index_file import load_index
from training.datasets.schema import SPLITS, DatasetError, Item, patient_key

#: Lower edges of the lesion-size bands in mm (those of ``galacto evaluate``).
SIZE_BANDS_MM = (1.5, 3.0, 5.0, 10.0)


@dataclass
class SplitSummary:
    """Counts of one split. Counters map a group name to a count."""

    images: int = 0
    studies: set[str] = field(default_factory=set)
    patients: set[str] = field(default_factory=set)
    normal_images: int = 0
    lesions_by_size: Counter[str] = field(default_factory=Counter)
    mimics_by_kind: Counter[str] = field(default_factory=Counter)
    vendors: Counter[str] = field(default_factory=Counter)
    views: Counter[str] = field(default_factory=Counter)
    laterality: Counter[str] = field(default_factory=Counter)

    @property
    def lesions(self) -> int:
        """Lesion boxes in the split."""
        return sum(self.lesions_by_size.values())


@dataclass
class CheckResult:
    """What :func:`check_dataset` found: ``errors`` (exit 1 when any), ``warnings`` and the
    per-split ``summary`` (empty when the schema failed)."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, SplitSummary] = field(default_factory=dict)


def size_band(size_mm: float | None) -> str:
    """The size band of a lesion, e.g. ``[3, 5)`` mm, ``< 1.5``, ``[10, inf)`` or ``unknown``."""
    if size_mm is None:
        return "unknown"
    edges = SIZE_BANDS_MM
    if size_mm < edges[0]:
        return f"< {edges[0]:g}"
    for lo, hi in zip(edges, (*edges[1:], float("inf")), strict=True):
        if lo <= size_mm < hi:
            return f"[{lo:g}, {hi:g})"
    return "unknown"


def band_order() -> list[str]:
    """Every size band name in ascending order, ``unknown`` last."""
    edges = SIZE_BANDS_MM
    return ([f"< {edges[0]:g}"] + [size_band(e) for e in edges] + ["unknown"])


def _box_problems(item: Item, facts: ImageFacts, where: str) -> list[str]:
    """One line per box or mimic box that does not lie inside the image."""
    problems = []
    boxes = [(f"boxes[{j}]", b) for j, b in enumerate(item.boxes)]
    boxes += [(f"mimics[{j}].box", m.box) for j, m in enumerate(item.mimics)]
    for name, (x1, y1, x2, y2) in boxes:
        if x2 > facts.cols or y2 > facts.rows:
            problems.append(f"{where}.{name}: [{x1:g}, {y1:g}, {x2:g}, {y2:g}] extends outside "
                            f"the image ({facts.cols} x {facts.rows} px); expected "
                            f"x2 <= {facts.cols} and y2 <= {facts.rows}")
    return problems


def _count(summary: SplitSummary, item: Item, facts: ImageFacts) -> None:
    """Add one image to its split's summary."""
    summary.images += 1
    summary.studies.add(facts.study_instance_uid or item.study_instance_uid or item.image)
    summary.patients.add(patient_key(item))
    summary.normal_images += not item.boxes
    sizes = item.lesion_size_mm or [None] * len(item.boxes)
    summary.lesions_by_size.update(size_band(s) for s in sizes)
    summary.mimics_by_kind.update(m.kind for m in item.mimics)
    summary.vendors[facts.manufacturer or "unknown"] += 1
    summary.views[facts.view or item.view or "unknown"] += 1
    summary.laterality[facts.laterality] += 1


def _patients_in_two_splits(result: CheckResult, index_splits: dict[str, list[Item]]) -> None:
    """A warning per patient found in more than one split."""
    where: dict[str, list[str]] = {}
    for split, items in index_splits.items():
        for p in {patient_key(it) for it in items}:
            where.setdefault(p, []).append(split)
    for patient, splits in sorted(where.items()):
        if len(splits) > 1:
            result.warnings.append(f"patient {patient} is in {' and '.join(splits)}; "
                                   f"expected each patient in one split (galacto dataset split)")


def check_dataset(root: Path, progress: Callable[[], None] | None = None) -> CheckResult:
    """Check ``root/dataset.json`` and every image it lists (see the module docstring).

    Args:
        root: the dataset folder.
        progress: called once per image read.

    Returns:
        A :class:`CheckResult`; this function raises nothing for a bad dataset.
    """
    result = CheckResult()
    try:
        _, index = load_index(root)
    except DatasetError as exc:
        result.errors.extend(exc.problems)
        return result
    splits = {s: index.split(s) for s in SPLITS}
    for split, items in splits.items():
        summary = result.summary.setdefault(split, SplitSummary())
        for i, item in enumerate(items):
            where = f"{split}[{i}] ({item.image})"
            try:
                facts = read_facts(root / item.image)
            except NotAnImageError as exc:
                result.errors.append(f"{where}.image: {exc.reason}")
                continue
            finally:
                if progress is not None:
                    progress()
            if item.sop_instance_uid and item.sop_instance_uid != facts.sop_instance_uid:
                result.errors.append(f"{where}.sop_instance_uid: {item.sop_instance_uid} but the "
                                     f"file's SOPInstanceUID is {facts.sop_instance_uid}")
            result.errors.extend(_box_problems(item, facts, where))
            _count(summary, item, facts)
    _patients_in_two_splits(result, splits)
    return result
