"""The DICOM intake's public names, as they have always been imported: the code lives in the
package :mod:`serving.pipeline.intake` (modules ``parse``, ``types``, ``header``,
``codestream``, ``decode``, ``pixel_semantics``, ``values``, ``reader``)."""

from serving.pipeline.intake import (
    ACCEPTED_SOP_CLASSES,
    DEFAULT_MAX_PIXELS,
    MAX_SPACING_MM,
    SUPPORTED_TRANSFER_SYNTAXES,
    VIEW_CODES,
    VIEW_POSITIONS,
    DicomSource,
    Image,
    ImageHeader,
    Instance,
    Laterality,
    SpacingSource,
    read_header,
    read_image,
    read_instance,
)

__all__ = [
    "ACCEPTED_SOP_CLASSES",
    "DEFAULT_MAX_PIXELS",
    "MAX_SPACING_MM",
    "SUPPORTED_TRANSFER_SYNTAXES",
    "VIEW_CODES",
    "VIEW_POSITIONS",
    "DicomSource",
    "Image",
    "ImageHeader",
    "Instance",
    "Laterality",
    "SpacingSource",
    "read_header",
    "read_image",
    "read_instance",
]
