"""Reading request bodies: size limit enforced while streaming, and the DICOM parts of
``application/dicom``, ``multipart/related; type="application/dicom"`` and
``multipart/form-data`` bodies.

The limit is checked against Content-Length before anything is read, and again while the
body streams in (chunked uploads), so an oversized body is refused without being held whole;
so is the number of multipart parts (counted as each part begins). A body over the size
limit is answered with ``Connection: close`` (the rest is not read); the other early answers
leave the rest to be drained under the connection deadline (:mod:`serving.api.server`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from serving.api.errors import CLOSE, ApiError, ClientClosedError

DICOM = "application/dicom"
RELATED = "multipart/related"
FORM = "multipart/form-data"


@dataclass
class Part:
    """One body part: its position (0-based), name (form field file name, or None), declared
    content type, and bytes."""

    index: int
    name: str | None
    content_type: str | None
    data: bytes


@dataclass
class _Collector:
    max_parts: int
    parts: list[Part] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    field_name: bytes = b""
    value: bytes = b""
    chunks: list[bytes] = field(default_factory=list)

    def on_part_begin(self) -> None:
        if len(self.parts) >= self.max_parts:
            raise too_many_parts(self.max_parts)
        self.headers, self.chunks = {}, []

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self.chunks.append(bytes(data[start:end]))

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.field_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.field_name.decode("latin-1").lower()] = self.value.decode("latin-1")
        self.field_name, self.value = b"", b""

    def on_part_end(self) -> None:
        ctype = self.headers.get("content-type")
        name = None
        disposition = self.headers.get("content-disposition")
        if disposition:
            _, params = parse_options_header(disposition)
            raw = params.get(b"filename") or params.get(b"name")
            name = raw.decode("utf-8", "replace") if raw else None
        media = parse_options_header(ctype)[0].decode("latin-1").lower() if ctype else None
        self.parts.append(Part(len(self.parts), name, media, b"".join(self.chunks)))


def media_type(request: Request) -> tuple[str, dict[str, str]]:
    """``(lowercase media type, parameters)`` of the request's Content-Type ('' if absent)."""
    raw = request.headers.get("content-type", "")
    mtype, params = parse_options_header(raw)
    return mtype.decode("latin-1").lower(), {k.decode("latin-1").lower(): v.decode("latin-1")
                                             for k, v in params.items()}


def check_declared_size(request: Request, limit: int) -> None:
    """Refuse (413 ``upload_too_large``) a body whose Content-Length exceeds ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, "upload_too_large",
                    f"request body of {size} bytes exceeds the limit of {limit} bytes "
                    "(GALACTO_MAX_UPLOAD_MB)", headers=CLOSE)


def too_many_parts(limit: int) -> ApiError:
    """413 ``too_many_parts``: a multipart body with more than ``limit`` parts. Without
    ``Connection: close``: the rest of the body (at most the upload limit) is drained for at
    most ``header_timeout_s``, so that the client reads the answer instead of a reset."""
    return ApiError(413, "too_many_parts",
                    f"the multipart body has more than {limit} parts (GALACTO_MAX_PARTS)")


def check_media_type(request: Request, allowed: tuple[str, ...] = (DICOM, RELATED, FORM)
                     ) -> None:
    """Refuse, before anything is read, a Content-Type :func:`read_parts` would refuse.

    Raises:
        ApiError: 415 ``unsupported_media_type``.
    """
    mtype, params = media_type(request)
    if mtype not in allowed:
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Type must be one of {', '.join(allowed)} "
                       f"(multipart/related with type=\"application/dicom\"), found "
                       f"{mtype or 'none'!r}")
    if mtype == RELATED and params.get("type", DICOM).lower() != DICOM:
        raise ApiError(415, "unsupported_media_type",
                       f"multipart/related type must be \"application/dicom\", found "
                       f"{params.get('type')!r}")
    if mtype != DICOM and not params.get("boundary"):
        raise ApiError(415, "unsupported_media_type",
                       f"{mtype} Content-Type has no boundary parameter")


async def read_parts(request: Request, limit: int, *, max_parts: int = 500,
                     allowed: tuple[str, ...] = (DICOM, RELATED, FORM)) -> list[Part]:
    """The DICOM parts of the body, streamed with the ``limit`` (bytes) and ``max_parts``
    enforced.

    Raises:
        ApiError: 415 ``unsupported_media_type`` for another Content-Type (or a multipart body
            without boundary), 413 ``upload_too_large`` / ``too_many_parts``, 400
            ``empty_body`` / ``no_parts`` / ``malformed_multipart``.
    """
    check_media_type(request, allowed)
    check_declared_size(request, limit)
    try:
        return await _read_body_parts(request, limit, max_parts)
    except ClientDisconnect:
        raise ClientClosedError("while its body was read") from None


async def _read_body_parts(request: Request, limit: int, max_parts: int) -> list[Part]:
    mtype, params = media_type(request)
    if mtype == DICOM:
        data = await _read_all(request, limit)
        if not data:
            raise ApiError(400, "empty_body", "the request body is empty; expected a DICOM file")
        return [Part(0, None, DICOM, data)]
    parts = await _read_multipart(request, params["boundary"], limit, max_parts)
    if mtype == FORM:
        parts = [p for p in parts if p.name is not None or p.data]
    if not parts:
        raise ApiError(400, "no_parts", f"the {mtype} body has no parts; expected one or more "
                                        "DICOM files")
    return parts


async def _read_all(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_multipart(request: Request, boundary: str, limit: int, max_parts: int
                          ) -> list[Part]:
    collector = _Collector(max_parts)
    callbacks = {name: getattr(collector, name) for name in (
        "on_part_begin", "on_part_data", "on_part_end", "on_header_field", "on_header_value",
        "on_header_end")}
    parser = MultipartParser(boundary, callbacks, max_header_count=32)  # type: ignore[arg-type]
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            parser.write(chunk)
        parser.finalize()
    except (ApiError, ClientDisconnect):
        raise
    except Exception as exc:  # python-multipart raises its own parse errors
        raise ApiError(400, "malformed_multipart",
                       f"the multipart body could not be parsed: {type(exc).__name__}") from None
    return collector.parts
