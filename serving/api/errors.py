"""HTTP errors with a stable ``detail`` code, and how intake errors map to HTTP statuses.

Every error response is JSON ``{"detail": <stable snake_case code>, "message": <human text
naming what was expected and what was found>, "request_id": ...}``; clients branch on
``detail``, people read ``message``. Messages never carry patient data: an intake message
quotes the value found only for the technical attributes of :data:`TECHNICAL_ATTRIBUTES`
(a modality can write a patient's name into any text attribute, so any other value is left
out, :func:`public_message`), never names, IDs, dates or instance UIDs.
"""

from __future__ import annotations

import re
from typing import Any

from serving.pipeline.errors import IntakeError

#: Sent with answers given before a body was read whole: the rest of it is not wanted, and the
#: connection cannot carry another request (uvicorn would otherwise go on reading it).
CLOSE: dict[str, str] = {"Connection": "close"}

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


#: Attributes whose values an error message may quote: image geometry and encoding, which
#: never identify anyone. A value of any other attribute is left out of the message.
TECHNICAL_ATTRIBUTES = frozenset({
    "TransferSyntaxUID", "SOPClassUID", "MediaStorageSOPClassUID", "Modality",
    "PhotometricInterpretation", "SamplesPerPixel", "PlanarConfiguration", "Rows", "Columns",
    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "NumberOfFrames",
    "PixelData", "PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing",
    "PixelAspectRatio", "RescaleSlope", "RescaleIntercept", "ModalityLUTSequence", "LUTData",
    "LUTDescriptor", "PresentationIntentType", "ViewPosition", "ImageLaterality",
})
_KEYWORD = re.compile(r"\b([A-Z][A-Za-z0-9]+) \([0-9A-F]{4},[0-9A-F]{4}\)")
#: Longest quoted value in a message (characters).
MAX_QUOTED = 64


def public_message(exc: IntakeError) -> str:
    """The intake error's message for a client: the problem, the attribute, the value found
    (only when every attribute named is in :data:`TECHNICAL_ATTRIBUTES`, at most
    :data:`MAX_QUOTED` characters) and what was expected."""
    text = exc.problem
    keywords = _KEYWORD.findall(exc.attribute or "")
    if exc.attribute is not None:
        if exc.value is not None and keywords and set(keywords) <= TECHNICAL_ATTRIBUTES:
            value = exc.value
            if len(value) > MAX_QUOTED:
                value = value[:MAX_QUOTED - 3] + "..."
            text += f": {exc.attribute} is {value}"
        else:
            text += f": attribute {exc.attribute}"
    if exc.expected is not None:
        text += f"; expected {exc.expected}"
    return text


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


class ClientClosedError(ApiError):
    """The client closed the connection before it could be answered (499, nginx's code):
    while its body was read, or while its request waited (then nothing was run)."""

    def __init__(self, when: str) -> None:
        super().__init__(499, "client_closed_request",
                         f"the client closed the connection {when}")


def intake_status(exc: IntakeError) -> int:
    """HTTP status for an intake error (400 for codes not listed)."""
    return INTAKE_STATUS.get(exc.code, 400)
