"""``galacto dataset split``: patient-level folds for cross-validation.

Every image of a patient (both views, every study) lands on the same side of every split.
The patient of an item is :func:`training.datasets.schema.patient_key` (``patient_id``, else
``case_id``, else ``study_instance_uid``). Patients are shuffled with the seed and dealt
round-robin to the ``k`` folds, those with a lesion first and then the normal ones, so each
fold gets about the same number of lesion patients and of normal patients.

What is written (images stay where they are):

- ``DIR/dataset.json``: the pool (``training`` and ``validation`` items; with ``test_share``
  also ``test``) in ``training``, each item with its ``fold``; ``validation`` empty; ``test``
  unchanged, or the patients drawn for it; a ``folds`` record (``by``, ``k``, ``seed``, the
  patients of each fold).
- ``DIR/folds/fold-<i>/dataset.json`` for each fold ``i``: ``training`` = the other folds,
  ``validation`` = fold ``i``, ``test`` = the held-out test split. ``galacto train --fold i``
  trains on it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.datasets.index_file import load_index, write_index
from training.datasets.schema import patient_key

FOLDS_DIR = "folds"


def fold_dir(root: Path, fold: int) -> Path:
    """The dataset folder of fold ``fold`` of ``root``."""
    return root / FOLDS_DIR / f"fold-{fold}"


def _patients(items: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Patients with at least one lesion box, and the others, each sorted."""
    lesion: set[str] = set()
    every: set[str] = set()
    for it in items:
        key = patient_key(it)
        every.add(key)
        if it.get("boxes"):
            lesion.add(key)
    return sorted(lesion), sorted(every - lesion)


def deal(items: list[dict[str, Any]], parts: int, seed: int) -> list[list[str]]:
    """The patients of ``items`` in ``parts`` groups (see the module docstring).

    Raises:
        ValueError: fewer patients than ``parts``, or ``parts < 1``.
    """
    lesion, normal = _patients(items)
    if parts < 1 or len(lesion) + len(normal) < parts:
        raise ValueError(f"{len(lesion) + len(normal)} patients cannot fill {parts} folds; "
                         f"expected at least one patient per fold")
    rng = np.random.default_rng(seed)
    order = [lesion[i] for i in rng.permutation(len(lesion))]
    order += [normal[i] for i in rng.permutation(len(normal))]
    groups: list[list[str]] = [[] for _ in range(parts)]
    for n, patient in enumerate(order):
        groups[n % parts].append(patient)
    return [sorted(g) for g in groups]


def _draw_test(pool: list[dict[str, Any]], share: float, seed: int
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(rest, test)``: about ``share`` of the patients (stratified as the folds) for test."""
    lesion, normal = _patients(pool)
    rng = np.random.default_rng([seed, 1])
    test: set[str] = set()
    for group in (lesion, normal):
        n = round(share * len(group))
        test.update(group[i] for i in rng.permutation(len(group))[:n])
    return ([it for it in pool if patient_key(it) not in test],
            [it for it in pool if patient_key(it) in test])


def _relocate(items: list[dict[str, Any]], root: Path, target: Path) -> list[dict[str, Any]]:
    """``items`` with ``image`` rewritten relative to ``target`` instead of ``root``."""
    out = []
    for it in items:
        rel = os.path.relpath((root / it["image"]).resolve(), target.resolve())
        out.append({**it, "image": Path(rel).as_posix()})
    return out


@dataclass(frozen=True)
class FoldSummary:
    """Counts of one fold: patients, images, images with lesions, lesion boxes, mimic boxes."""

    fold: int
    patients: int
    images: int
    lesion_images: int
    lesions: int
    mimics: int


def split_dataset(root: Path, k: int, seed: int, test_share: float = 0.0
                  ) -> list[FoldSummary]:
    """Make ``k`` patient-level folds of ``root`` and write them (see the module docstring).

    Returns:
        One :class:`FoldSummary` per fold.

    Raises:
        DatasetError: ``root/dataset.json`` breaks the schema.
        ValueError: ``k < 2``, ``test_share`` outside [0, 1), or too few patients.
    """
    if k < 2:
        raise ValueError(f"--folds {k}: expected at least 2")
    if not 0.0 <= test_share < 1.0:
        raise ValueError(f"--test-share {test_share}: expected a share in [0, 1)")
    raw, _ = load_index(root)
    pool = [dict(it) for it in raw.get("training", []) + raw.get("validation", [])]
    test = [{k: v for k, v in it.items() if k != "fold"} for it in raw.get("test", [])]
    if test_share > 0:
        pool, test = _draw_test(pool + test, test_share, seed)
    groups = deal(pool, k, seed)
    fold_of = {p: i for i, g in enumerate(groups) for p in g}
    for it in pool:
        it["fold"] = fold_of[patient_key(it)]
    raw.update(training=pool, validation=[], test=test,
               folds={"by": "patient", "k": k, "seed": seed, "patients": groups})
    write_index(root, raw)
    summaries = []
    for i in range(k):
        target = fold_dir(root, i)
        val = [it for it in pool if it["fold"] == i]
        train = [it for it in pool if it["fold"] != i]
        write_index(target, {"training": _relocate(train, root, target),
                             "validation": _relocate(val, root, target),
                             "test": _relocate(test, root, target),
                             "meta": {"fold_of": str(Path(os.path.relpath(root, target))),
                                      "fold": i, "k": k, "seed": seed}})
        summaries.append(FoldSummary(i, len(groups[i]), len(val),
                                     sum(1 for it in val if it.get("boxes")),
                                     sum(len(it.get("boxes") or []) for it in val),
                                     sum(len(it.get("mimics") or []) for it in val)))
    return summaries
