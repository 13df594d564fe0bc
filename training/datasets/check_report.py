"""How ``galacto dataset check`` shows its result: a table with one column per split, and the
same as JSON (``--json``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

from rich.table import Table

from training.datasets.check import CheckResult, SplitSummary, band_order

_COUNTS = ("images", "studies", "patients", "normal images", "lesions")


Row = tuple[str, str, Callable[[SplitSummary], int]]


def _counter_rows(summary: dict[str, SplitSummary], group: str, attr: str,
                  order: list[str] | None = None) -> list[Row]:
    """One row per name found in the ``attr`` counter of any split (in ``order`` if given)."""
    names = {n for s in summary.values() for n in getattr(s, attr)}
    ordered = [n for n in order if n in names] if order else sorted(names)
    return [(group, n, partial(_count_of, attr, n)) for n in ordered]


def _count_of(attr: str, name: str, summary: SplitSummary) -> int:
    counter: Counter[str] = getattr(summary, attr)
    return counter[name]


def _rows(summary: dict[str, SplitSummary]) -> list[Row]:
    """``(group, name, count function)`` for every row of the table, in display order."""
    rows: list[Row] = [
        ("images", "", lambda s: s.images),
        ("studies", "", lambda s: len(s.studies)),
        ("patients", "", lambda s: len(s.patients)),
        ("normal images", "", lambda s: s.normal_images),
        ("lesions", "", lambda s: s.lesions),
    ]
    rows += _counter_rows(summary, "lesions by size (mm)", "lesions_by_size", band_order())
    for group, attr in (("mimics", "mimics_by_kind"), ("vendor", "vendors"),
                        ("view", "views"), ("laterality", "laterality")):
        rows += _counter_rows(summary, group, attr)
    return rows


def summary_table(result: CheckResult) -> Table:
    """Rows: images, studies, patients, normal images, lesions (by size band), mimics by kind,
    vendors, views, laterality; one column per split."""
    splits = list(result.summary)
    table = Table(title="dataset check")
    table.add_column("")
    table.add_column("")
    for s in splits:
        table.add_column(s, justify="right")
    last = None
    for group, name, count in _rows(result.summary):
        if last is not None and group != last and group not in _COUNTS:
            table.add_section()
        table.add_row(group if group != last else "", name,
                      *(str(count(result.summary[s])) for s in splits))
        last = group
    return table


def check_json(result: CheckResult) -> dict[str, Any]:
    """The result as JSON: ``errors``, ``warnings`` and per split every count of the table."""
    def split_json(s: SplitSummary) -> dict[str, Any]:
        return {"images": s.images, "studies": len(s.studies), "patients": len(s.patients),
                "normal_images": s.normal_images, "lesions": s.lesions,
                "lesions_by_size_mm": dict(s.lesions_by_size),
                "mimics_by_kind": dict(s.mimics_by_kind), "vendors": dict(s.vendors),
                "views": dict(s.views), "laterality": dict(s.laterality)}

    return {"errors": result.errors, "warnings": result.warnings,
            "splits": {k: split_json(v) for k, v in result.summary.items()}}
