"""HTTP errors with a stable ``detail`` code, and how intake errors map to HTTP statuses.

Every error response is JSON ``{"detail": <stable snake_case code>, "message": <human text
naming what was expected and what was found>, "request_id": ...}``; clients branch on
``detail``, people read ``message``. Messages never carry patient data: intake messages name
attributes and their technical values (sizes, codes, transfer syntaxes), never names, IDs,
dates or instance UIDs.
"""

from __future__ import annotations

from typing import Any

from serving.pipeline.errors import IntakeError

#: HTTP status for each intake error code: 400 for bytes that are not a readable DICOM image,
#: 422 for valid DICOM the detector cannot analyse, 413 for images above the pixel limit.
INTAKE_STATUS: dict[str, int] = {
    "not_dicom": 400,
    "invalid_header": 400,
    "decode_error": 400,
    "truncated_pixel_data": 400,
    "no_pixel_data": 422,
    "color_image": 422,
    "unsupported_photometric": 422,
    "multi_frame": 422,
    "missing_spacing": 422,
    "invalid_spacing": 422,
    "unsupported_transfer_syntax": 415,
    "unsupported_sop_class": 422,
    "image_too_large": 413,
}


class ApiError(Exception):
    """An error answered as JSON with ``status``, a stable ``detail`` and a ``message``."""

    def __init__(self, status: int, detail: str, message: str,
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None
                 ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self, request_id: str | None) -> dict[str, Any]:
        """The JSON body."""
        return {"detail": self.detail, "message": self.message, "request_id": request_id,
                **self.extra}


def intake_status(exc: IntakeError) -> int:
    """HTTP status for an intake error (400 for codes not listed)."""
    return INTAKE_STATUS.get(exc.code, 400)
