"""The DICOM intake's public names, as they have always been imported: the code lives in the
package :mod:`serving.pipeline.intake` (modules ``parse``, ``types``, ``header``,
``codestream``, ``decode``, ``pixel_semantics``, ``values``, ``reader``), whose ``__all__``
this module re-exports unchanged."""

from serving.pipeline.intake import *  # noqa: F403
from serving.pipeline.intake import __all__ as __all__
