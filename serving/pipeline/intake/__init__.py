"""The DICOM intake: bytes, a path, a binary file object or a pydicom ``Dataset`` -> :class:`Image`.

The one place where the service looks at a DICOM object. It accepts a single-frame grayscale
image from a mammography-like SOP class (MG, DX, CR, Secondary Capture), checks the header
*before* decoding any pixels, decodes the pixel data with pydicom's decoders (and the
pylibjpeg / pyjpegls plugins for compressed transfer syntaxes) and returns one frozen
:class:`Image`: float32 pixels where larger means more attenuation (contrast is bright), the
pixel spacing in mm and the attribute it came from, laterality, view, patient orientation and
the identifying UIDs.

Every refusal is a subclass of :class:`serving.pipeline.errors.IntakeError` with a stable
``code``; nothing else escapes for problems in the object itself (pydicom and plugin failures are
wrapped, cause chained). Only I/O errors opening a *path* you passed (``OSError``) and a source
of the wrong Python type (``TypeError``) are raised as such.

Conventions:

- Arrays are ``(rows, cols)``: axis 0 runs down the rows (DICOM "row direction" is along a
  row, i.e. across columns), ``pixels[r, c]`` is the pixel in row ``r``, column ``c``, as stored.
  Nothing is flipped or rotated here; :attr:`ImageHeader.patient_orientation` says which way
  rows and columns run.
- Spacing is ``(row spacing, column spacing)`` in mm, i.e. the distance between the centers of
  adjacent rows, then of adjacent columns (DICOM PixelSpacing order).

Tomosynthesis volumes (Breast Tomosynthesis Image Storage, multi-frame grayscale Secondary
Capture) are read by :func:`read_volume` / :func:`read_volume_header` (module ``volume``), whose
frames decode one at a time into the same :class:`Image`; :func:`is_volume` tells an adapter
which entry point an object needs. :func:`read_image` still refuses them.

This module never imports torch, monai or ``training``.
"""

from serving.pipeline.intake.parse import DEFAULT_MAX_PIXELS, DicomSource
from serving.pipeline.intake.reader import Instance, read_header, read_image, read_instance
from serving.pipeline.intake.types import (
    ACCEPTED_SOP_CLASSES,
    MAX_SPACING_MM,
    SUPPORTED_TRANSFER_SYNTAXES,
    VIEW_CODES,
    VIEW_POSITIONS,
    Image,
    ImageHeader,
    Laterality,
    SpacingSource,
)
from serving.pipeline.intake.volume import (
    DEFAULT_MAX_FRAMES,
    DEFAULT_MAX_VOLUME_PIXELS,
    Volume,
    VolumeHeader,
    VolumeSource,
    is_volume,
    read_volume,
    read_volume_header,
)

__all__ = [
    "ACCEPTED_SOP_CLASSES",
    "DEFAULT_MAX_FRAMES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_VOLUME_PIXELS",
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
    "Volume",
    "VolumeHeader",
    "VolumeSource",
    "is_volume",
    "read_header",
    "read_image",
    "read_instance",
    "read_volume",
    "read_volume_header",
]
