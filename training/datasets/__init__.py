"""Datasets brought by researchers: the ``dataset.json`` schema, reading and writing it,
checking a folder against its images, importing annotations (CSV, COCO, DICOM SR, GSPS) and
patient-level folds (``galacto dataset``)."""

from training.datasets.index_file import load_index, write_index
from training.datasets.schema import (
    SPLITS,
    DatasetError,
    DatasetIndex,
    Item,
    Mimic,
    patient_key,
    study_groups,
    validate_index,
)

__all__ = ["SPLITS", "DatasetError", "DatasetIndex", "Item", "Mimic", "load_index",
           "patient_key", "study_groups", "validate_index", "write_index"]
