"""Building DICOM responses: single ``application/dicom`` or ``multipart/related``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from starlette.responses import Response

DICOM_MULTIPART = 'multipart/related; type="application/dicom"'


def multipart_related(payloads: Sequence[bytes], part_type: str = "application/dicom"
                      ) -> Response:
    """A ``multipart/related; type=<part_type>`` response with one part per payload."""
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for data in payloads:
        chunks.append(f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode())
        chunks.append(data)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return Response(b"".join(chunks),
                    media_type=f'multipart/related; type="{part_type}"; boundary={boundary}')


def wants_dicom(accept: str | None) -> bool:
    """Whether an Accept header asks for DICOM objects rather than JSON."""
    if not accept:
        return False
    kinds = [a.split(";")[0].strip().lower() for a in accept.split(",")]
    dicom = "application/dicom" in kinds or any(
        a.strip().lower().startswith("multipart/related") for a in accept.split(","))
    return dicom and "application/json" not in kinds
