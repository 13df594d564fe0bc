"""COCO object-detection JSON: ``images`` (``id``, ``file_name``), ``categories`` (``id``,
``name``) and ``annotations`` (``image_id``, ``category_id``, ``bbox`` = ``[x, y, width,
height]`` in pixels from the image's top-left corner). ``file_name`` is the DICOM file's path
relative to ``--images`` (or a SOP Instance UID); category names go through ``--map``.
Segmentations and other keys are ignored."""

from __future__ import annotations

import json
import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from training.datasets.annotations import Annotation, Annotations, Skipped


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CocoImage(_Loose):
    """An entry of ``images``."""

    id: int | str
    file_name: str = Field(min_length=1)


class CocoCategory(_Loose):
    """An entry of ``categories``."""

    id: int | str
    name: str


class CocoAnnotation(_Loose):
    """An entry of ``annotations``: ``bbox`` is ``[x, y, width, height]`` pixels."""

    id: int | str | None = None
    image_id: int | str
    category_id: int | str
    bbox: tuple[float, float, float, float]


class CocoFile(_Loose):
    """The parts of a COCO file the import reads."""

    images: list[CocoImage]
    categories: list[CocoCategory]
    annotations: list[CocoAnnotation] = Field(default_factory=list)


def read_coco(src: Path) -> Annotations:
    """Read the bbox annotations of a COCO file.

    Raises:
        ValueError: the file is not JSON or lacks ``images``/``categories`` or has malformed
            entries (each named with its location).
        OSError: it cannot be read.
    """
    try:
        coco = CocoFile.model_validate(json.loads(src.read_text()))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{src}: not JSON ({exc})") from None
    except ValidationError as exc:
        lines = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:10]]
        raise ValueError(f"{src}: not a COCO detection file:\n  " + "\n  ".join(lines)) from None
    images = {im.id: im.file_name for im in coco.images}
    names = {cat.id: cat.name for cat in coco.categories}
    out = Annotations()
    for n, ann in enumerate(coco.annotations):
        origin = f"{src.name} annotation {ann.id if ann.id is not None else f'#{n}'}"
        x, y, w, h = ann.bbox
        if ann.image_id not in images:
            out.skipped.append(Skipped(origin, f"image_id {ann.image_id} is not in 'images'"))
        elif ann.category_id not in names:
            out.skipped.append(Skipped(origin, f"category_id {ann.category_id} is not in "
                                               f"'categories'"))
        elif not (all(math.isfinite(v) for v in ann.bbox) and w > 0 and h > 0):
            out.skipped.append(Skipped(origin, f"bbox {list(ann.bbox)}: expected finite "
                                               f"[x, y, width, height] with width, height > 0"))
        else:
            out.boxes.append(Annotation(images[ann.image_id], (x, y, x + w, y + h),
                                        names[ann.category_id], origin))
    return out
