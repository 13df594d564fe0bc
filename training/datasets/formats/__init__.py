"""Annotation readers, one per import format; each returns
:class:`training.datasets.annotations.Annotations`."""

from training.datasets.formats.coco import read_coco
from training.datasets.formats.csv_boxes import CSV_COLUMNS, read_csv
from training.datasets.formats.gsps import read_gsps
from training.datasets.formats.sr import read_sr

READERS = {"csv": read_csv, "coco": read_coco, "sr": read_sr, "gsps": read_gsps}
"""Format name -> reader of a file (or, for ``sr``/``gsps``, a file or folder)."""

__all__ = ["CSV_COLUMNS", "READERS", "read_coco", "read_csv", "read_gsps", "read_sr"]
