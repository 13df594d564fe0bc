"""The ``dataset.json`` schema: pydantic models of a galacto dataset, and its validation.

A dataset folder holds ``dataset.json``::

    {"training": [ITEM, ...], "validation": [ITEM, ...], "test": [ITEM, ...],
     "meta": {...}, "folds": {...}}

Every split is optional (an absent split is empty); ``meta`` is free-form (how the set was
made); ``folds`` is written by ``galacto dataset split`` (:class:`FoldsInfo`). Any other
top-level key is an error (a typo such as ``train`` would otherwise leave a split empty).

An ITEM is one image. Required: ``image``, the DICOM file's path relative to the folder
(``..`` allowed, so images can stay where they are). Optional, with their conventions:

- ``boxes``: filling defects as ``[x1, y1, x2, y2]`` in stored-image pixels (x = column,
  y = row, origin at the top-left corner of the top-left pixel, x2/y2 exclusive),
  ``0 <= x1 < x2`` and ``0 <= y1 < y2``; an item without boxes is a normal image.
- ``labels``: one ``"filling_defect"`` per box (the only lesion class).
- ``lesion_ids``, ``lesion_kind``, ``lesion_size_mm``: one value per box (``lesion_size_mm``
  is the lesion's size in mm; imported sets estimate it from the box and the pixel spacing).
- ``mimics``: objects ``{"kind": "air_bubble", "box": [x1, y1, x2, y2]}`` (same box
  convention): things that look like lesions but are not (kinds are lower-case words such
  as ``air_bubble``, ``cyst``, ``extravasation``).
- ``patient_id``, ``study_instance_uid``, ``sop_instance_uid``, ``case_id``, ``laterality``
  (``L``/``R``/``U``), ``view``, ``manufacturer``, ``profile``, ``style``, ``nipple_xy``
  (``[x, y]`` stored pixels), ``fold`` (written by ``galacto dataset split``).

Other item keys (e.g. the simulator's 3D truth ``lesions`` and ``case``) are kept as they are.
:func:`validate_index` returns every problem at once, each with the path to the bad value
(``test[3] (cases/a/L_CC.dcm).mimics[0]``) and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

SPLITS = ("training", "validation", "test")
#: Mimic kinds the simulator writes and the bundled model's classes name.
KNOWN_MIMIC_KINDS = ("air_bubble", "cyst", "extravasation")
KIND_PATTERN = r"^[a-z][a-z0-9_]*$"
PER_BOX_KEYS = ("labels", "lesion_ids", "lesion_kind", "lesion_size_mm")


def _check_box(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """A box ``[x1, y1, x2, y2]`` (pixels) with finite values, ``0 <= x1 < x2``, ``0 <= y1 < y2``.

    Raises:
        ValueError: naming the rule that fails.
    """
    x1, y1, x2, y2 = box
    if not all(math.isfinite(v) for v in box):
        raise ValueError(f"expected finite numbers [x1, y1, x2, y2], got {list(box)}")
    if x1 < 0 or y1 < 0:
        raise ValueError(f"expected x1 >= 0 and y1 >= 0 (pixels from the top-left corner), "
                         f"got {list(box)}")
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"expected x1 < x2 and y1 < y2 ([x1, y1, x2, y2], x = column), "
                         f"got {list(box)}")
    return box


Box = Annotated[tuple[float, float, float, float], AfterValidator(_check_box)]
"""``[x1, y1, x2, y2]`` stored-image pixels, x = column, x2/y2 exclusive."""


class Mimic(BaseModel):
    """A lesion mimic: ``kind`` (``air_bubble``, ``cyst``, ...) and its ``box`` (pixels)."""

    model_config = ConfigDict(extra="allow")

    kind: str = Field(pattern=KIND_PATTERN)
    box: Box


class Item(BaseModel):
    """One image of a dataset; see the module docstring for every field's convention."""

    model_config = ConfigDict(extra="allow")

    image: str = Field(min_length=1)
    boxes: list[Box] = Field(default_factory=list)
    labels: list[Literal["filling_defect"]] | None = None
    lesion_ids: list[int | str] | None = None
    lesion_kind: list[str] | None = None
    lesion_size_mm: list[float | None] | None = None
    mimics: list[Mimic] = Field(default_factory=list)
    patient_id: str | None = None
    study_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    case_id: str | None = None
    laterality: Literal["L", "R", "U"] | None = None
    view: str | None = None
    manufacturer: str | None = None
    profile: str | None = None
    style: str | None = None
    nipple_xy: tuple[float, float] | None = None
    fold: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_value_per_box(self) -> Item:
        for key in PER_BOX_KEYS:
            values = getattr(self, key)
            if values is not None and len(values) != len(self.boxes):
                raise ValueError(f"{key} has {len(values)} entries for {len(self.boxes)} "
                                 f"boxes; expected one per box")
        return self


class FoldsInfo(BaseModel):
    """How ``galacto dataset split`` made the folds: grouping key, fold count, seed, and the
    patients of each fold (fold ``k`` validates the model trained on the others)."""

    model_config = ConfigDict(extra="forbid")

    by: Literal["patient"]
    k: int = Field(ge=2)
    seed: int
    patients: list[list[str]]

    @model_validator(mode="after")
    def _k_lists(self) -> FoldsInfo:
        if len(self.patients) != self.k:
            raise ValueError(f"patients has {len(self.patients)} lists; expected k = {self.k}")
        return self


class DatasetIndex(BaseModel):
    """The whole ``dataset.json``."""

    model_config = ConfigDict(extra="forbid")

    training: list[Item] = Field(default_factory=list)
    validation: list[Item] = Field(default_factory=list)
    test: list[Item] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)
    folds: FoldsInfo | None = None

    def split(self, name: str) -> list[Item]:
        """The items of split ``name`` (``training``, ``validation`` or ``test``)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        items: list[Item] = getattr(self, name)
        return items


class DatasetError(ValueError):
    """``dataset.json`` is unreadable or does not follow the schema.

    Attributes:
        path: the file (as given).
        problems: one line per problem: ``location: what is wrong; expected what``.
    """

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        shown = problems[:20]
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{path}: {len(problems)} problem(s) (galacto dataset check "
                         f"lists them all):\n  " + "\n  ".join(shown) + more)


#: What was expected where the input had the wrong shape, by the key holding the value.
EXPECTED_SHAPE = {
    "mimics": 'an object {"kind": "air_bubble", "box": [x1, y1, x2, y2]}',
    "boxes": "a box [x1, y1, x2, y2] (4 numbers, stored-image pixels)",
    "box": "a box [x1, y1, x2, y2] (4 numbers, stored-image pixels)",
    "training": "an image object {\"image\": PATH, \"boxes\": [...], ...}",
    "validation": "an image object {\"image\": PATH, \"boxes\": [...], ...}",
    "test": "an image object {\"image\": PATH, \"boxes\": [...], ...}",
}
_SHAPE_ERRORS = {"model_type", "dict_type", "tuple_type", "list_type", "too_short", "too_long",
                 "model_attributes_type"}


def _location(loc: tuple[int | str, ...], raw: Any) -> str:
    """``test[3] (cases/a.dcm).mimics[0]`` for pydantic's ``('test', 3, 'mimics', 0)``."""
    text = ""
    node = raw
    for depth, part in enumerate(loc):
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
        node = _child(node, part)
        if depth == 1 and isinstance(node, dict) and isinstance(node.get("image"), str):
            text += f" ({node['image']})"
    return text or "(top level)"


def _child(node: Any, part: int | str) -> Any:
    """``node[part]`` when it exists, else ``None``."""
    if isinstance(node, dict):
        return node.get(part) if isinstance(part, str) else None
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def _describe(error: ErrorDetails, raw: Any) -> str:
    """One line for one pydantic error: where, what is wrong, what was expected."""
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and "[" in p))
    where = _location(loc, raw)
    got = repr(error.get("input"))
    got = got if len(got) <= 80 else got[:77] + "..."
    kind = error["type"]
    if kind == "extra_forbidden" and len(loc) == 1:
        return (f"{where}: unknown top-level key; expected {', '.join(SPLITS)}, meta or "
                f"folds")
    if kind == "missing":
        return f"{where}: missing; expected a value"
    keys = [p for p in loc if isinstance(p, str)]
    expected = EXPECTED_SHAPE.get(keys[-1]) if keys else None
    if kind in _SHAPE_ERRORS and expected:
        return f"{where}: expected {expected}, got {got}"
    if kind == "value_error":  # our own validators say what they got
        return f"{where}: {error['msg'].removeprefix('Value error, ')}"
    return f"{where}: {error['msg']} (got {got})"


def validate_index(raw: Any, path: str = "dataset.json") -> DatasetIndex:
    """Validate parsed ``dataset.json`` content.

    Args:
        raw: the parsed JSON.
        path: the file name used in messages.

    Returns:
        The validated :class:`DatasetIndex`.

    Raises:
        DatasetError: with one line per problem (all of them, not only the first).
    """
    if not isinstance(raw, dict):
        raise DatasetError(path, [f"(top level): expected an object with {', '.join(SPLITS)} "
                                  f"lists, got {type(raw).__name__}"])
    try:
        index = DatasetIndex.model_validate(raw)
    except ValidationError as exc:
        raise DatasetError(path, [_describe(e, raw) for e in exc.errors()]) from None
    problems = _duplicate_images(index)
    if problems:
        raise DatasetError(path, problems)
    return index


def _duplicate_images(index: DatasetIndex) -> list[str]:
    """One line per image listed more than once (in one split or in two)."""
    seen: dict[str, str] = {}
    problems = []
    for split in SPLITS:
        for i, item in enumerate(index.split(split)):
            where = f"{split}[{i}]"
            if item.image in seen:
                problems.append(f"{where} ({item.image}).image: also listed at "
                                f"{seen[item.image]}; expected each image once")
            else:
                seen[item.image] = where
    return problems


def patient_key(item: Item | dict[str, Any]) -> str:
    """The patient an item belongs to, for patient-level splits and the bootstrap.

    ``patient_id`` when present, else ``case_id`` (the simulator's one patient per case), else
    ``study_instance_uid``, else the image path (each image its own patient).
    """
    get = item.get if isinstance(item, dict) else lambda k: getattr(item, k, None)
    for key in ("patient_id", "case_id", "study_instance_uid"):
        value = get(key)
        if value:
            return str(value)
    return str(get("image"))


def study_groups(items: Sequence[Item | Mapping[str, Any]]) -> list[list[int]]:
    """Indices of ``items`` per study, as a PACS sends them (the views of a breast are
    analysed together): ``study_instance_uid``, else ``case_id`` within its dataset folder
    (``_root``), else the item alone; studies in order of first appearance, each study's
    items in input order."""
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        get = item.get if isinstance(item, Mapping) else lambda k, it=item: getattr(it, k, None)
        uid, case = get("study_instance_uid"), get("case_id")
        key = (f"study {uid}" if uid else f"case {get('_root')}/{case}" if case
               else f"item {i}")
        groups.setdefault(key, []).append(i)
    return list(groups.values())
