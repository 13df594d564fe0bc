"""``--map NAME=CLASS``: from the label names of an annotation source to galacto's classes.

A CLASS is ``filling_defect`` (a lesion), a mimic kind (a lower-case word such as
``air_bubble``, ``cyst`` or ``extravasation``), or ``ignore`` (drop those boxes on purpose).
Names match case-insensitively. Each format adds its defaults for galacto's own objects
(:data:`FORMAT_DEFAULTS`); ``--map`` entries take precedence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from training.datasets.schema import KIND_PATTERN

LESION = "filling_defect"
IGNORE = "ignore"

#: Defaults per format: the labels galacto's own outputs and ``dataset.json`` carry.
FORMAT_DEFAULTS: Mapping[str, Mapping[str, str]] = {
    "csv": {LESION: LESION, "air_bubble": "air_bubble", "cyst": "cyst",
            "extravasation": "extravasation"},
    "coco": {LESION: LESION, "air_bubble": "air_bubble", "cyst": "cyst",
             "extravasation": "extravasation"},
    # galacto's TID 1500 finding type (111425, DCM, "Intraluminal filling defect") and its
    # Mammography CAD SR Single Image Finding (129788004, SCT, "Mammographic breast mass")
    "sr": {"intraluminal filling defect": LESION, "111425": LESION,
           "mammographic breast mass": LESION, "129788004": LESION},
    # the layers of galacto's GSPS
    "gsps": {"findings": LESION, "mimics": IGNORE, "nipple": IGNORE},
}


class LabelMapError(ValueError):
    """A ``--map`` entry is malformed or names an unknown class."""


@dataclass(frozen=True)
class LabelMap:
    """Lower-cased source name -> class (``filling_defect``, a mimic kind, or ``ignore``)."""

    entries: Mapping[str, str]

    def resolve(self, names: Iterable[str]) -> str | None:
        """The class of the first of ``names`` that is mapped, ``None`` when none is."""
        for name in names:
            cls = self.entries.get(name.strip().lower())
            if cls is not None:
                return cls
        return None


def parse_label_map(fmt: str, entries: Iterable[str]) -> LabelMap:
    """The map of format ``fmt``: its defaults, then each ``NAME=CLASS`` of ``entries``.

    Raises:
        LabelMapError: an entry without ``=``, with an empty name, or whose class is neither
            ``filling_defect``, ``ignore`` nor a lower-case word (``[a-z][a-z0-9_]*``).
    """
    table = dict(FORMAT_DEFAULTS.get(fmt, {}))
    for entry in entries:
        name, sep, cls = entry.rpartition("=")
        name, cls = name.strip(), cls.strip()
        if not sep or not name:
            raise LabelMapError(f"--map {entry!r}: expected NAME=CLASS, e.g. "
                                f"'lesion=filling_defect' or 'bubble=air_bubble'")
        if not re.match(KIND_PATTERN, cls):
            raise LabelMapError(f"--map {entry!r}: class {cls!r} is not filling_defect, "
                                f"ignore or a mimic kind (a lower-case word like air_bubble)")
        table[name.lower()] = cls
    return LabelMap(table)
