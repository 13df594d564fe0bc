"""The DICOM intake's public names, as they have always been imported: the code lives in the
package :mod:`serving.pipeline.intake` (modules ``parse``, ``types``, ``syntaxes``, ``header``,
``codestream``, ``decode``, ``pixel_semantics``, ``values``, ``reader``, and for tomosynthesis
``volume`` and ``volume_header``), whose ``__all__`` this module re-exports unchanged."""

from serving.pipeline.intake import *  # noqa: F403
from serving.pipeline.intake import __all__ as __all__
