"""The DICOM status codes galacto answers and reads, named once, for the gateway's C-STORE
(DIMSE) and the DICOMweb STOW-RS Failure Reason (0008,1197), which uses the same codes.

Sources: PS3.4 Annex B.2.3 (Storage Service Class statuses), PS3.7 Annex C (general statuses),
PS3.18 10.5.3 (STOW-RS Failure Reason values).
"""

from __future__ import annotations

from typing import Final

SUCCESS: Final = 0x0000
#: Warnings: the object was stored, coerced or with elements discarded (PS3.4 B.2.3).
COERCION_OF_DATA_ELEMENTS: Final = 0xB000
ELEMENTS_DISCARDED: Final = 0xB006
DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING: Final = 0xB007
STORE_WARNINGS: Final = frozenset({COERCION_OF_DATA_ELEMENTS, ELEMENTS_DISCARDED,
                                   DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING})
#: Failures.
OUT_OF_RESOURCES: Final = 0xA700
DOES_NOT_MATCH_SOP_CLASS: Final = 0xA900
CANNOT_UNDERSTAND: Final = 0xC000
TRANSFER_SYNTAX_NOT_SUPPORTED: Final = 0xC122  # PS3.18 STOW-RS
PROCESSING_FAILURE: Final = 0x0110
DUPLICATE_SOP_INSTANCE: Final = 0x0111
SOP_CLASS_NOT_SUPPORTED: Final = 0x0122
