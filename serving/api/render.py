"""``POST /v1/render``'s picture: one instance, or one frame of a tomosynthesis volume, as an
8-bit PNG windowed for display (bright = contrast), optionally with the findings drawn.

- Without an overlay: the pixels alone, every ``step``-th row and column so that the longest
  side is at most ``max_size`` (the viewer draws its own boxes on it).
- With an overlay (a :class:`~serving.pipeline.findings.ImageOut` of the same request's
  detection): :func:`serving.outputs.overlay.render_overlay` for a 2D image,
  :func:`serving.outputs.overlay.render_frame_overlay` for a frame of a volume (findings
  whose best frame it is solid, those detected on it but best seen elsewhere dashed).

A volume sent to ``POST /v1/render`` is kept for a while (:mod:`serving.api.render_cache`) so
that ``GET /v1/render/{render_id}`` draws its other frames without the upload, exactly as the
POST would (the same :func:`render_item`, without findings).

Frames are numbered from 1, as DICOM and ``FindingOut.frame`` number them. A frame that is
not one of the object's is refused with 422 ``invalid_frame``. The default frame of a volume
is the best frame of its top finding when the findings are known, else the central frame.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage

from serving.api.errors import ApiError, intake_status, public_message
from serving.outputs.overlay import display_window, render_frame_overlay, render_overlay
from serving.pipeline.dicom_in import Image, Volume
from serving.pipeline.errors import IntakeError
from serving.pipeline.findings import ImageOut

__all__ = ["Rendered", "check_frame", "default_frame", "frame_count", "render_item"]


@dataclass(frozen=True)
class Rendered:
    """A rendered PNG.

    Attributes:
        png: the PNG bytes.
        scale: stored pixels per PNG pixel (``X-Galacto-Scale``).
        frame: the frame drawn (1-based) for a volume; None for a 2D image.
        frames: the volume's number of frames; None for a 2D image.
        render_id: the id under which the volume is kept for ``GET /v1/render/{render_id}``
            (``X-Galacto-Render-Id``, :mod:`serving.api.render_cache`); None when not kept.
    """

    png: bytes
    scale: float
    frame: int | None
    frames: int | None
    render_id: str | None = None

    def headers(self) -> dict[str, str]:
        """``X-Galacto-Scale``, for a volume ``X-Galacto-Frame`` / ``X-Galacto-Frames``, and
        ``X-Galacto-Render-Id`` when the volume is kept."""
        out = {"X-Galacto-Scale": f"{self.scale:g}"}
        if self.frame is not None and self.frames is not None:
            out.update({"X-Galacto-Frame": str(self.frame), "X-Galacto-Frames": str(self.frames)})
        if self.render_id is not None:
            out["X-Galacto-Render-Id"] = self.render_id
        return out


def frame_count(item: Image | Volume) -> int:
    """Frames of ``item``: NumberOfFrames of a volume, 1 for a 2D image."""
    return len(item) if isinstance(item, Volume) else 1


def invalid_frame(frame: int, count: int | None) -> ApiError:
    """422 ``invalid_frame``: ``frame`` is not a frame of the object (``count`` frames, None
    when not yet known)."""
    has = ("the object's frames are numbered from 1" if count is None else
           "a 2D image has frame 1 only" if count == 1 else
           f"the volume has frames 1 to {count}")
    return ApiError(422, "invalid_frame", f"frame {frame} is not a frame of this object: {has}")


def check_frame(frame: int | None, count: int | None = None) -> None:
    """Refuse a ``frame`` query below 1 (before the body is read: ``count`` None) or above
    ``count``.

    Raises:
        ApiError: 422 ``invalid_frame``.
    """
    if frame is not None and (frame < 1 or (count is not None and frame > count)):
        raise invalid_frame(frame, count)


def default_frame(count: int, result: ImageOut | None) -> int:
    """The frame shown when none is asked for: the best frame of the top-scoring finding of
    ``result`` (when it has findings with frames), else the central frame."""
    framed = [f for f in (result.findings if result is not None else []) if f.frame is not None]
    if framed:
        top = max(framed, key=lambda f: f.score)
        if top.frame is not None:
            return top.frame.best
    return (count + 1) // 2


def _pixels_of(item: Image | Volume, frame: int) -> Image:
    """The 2D image, or frame ``frame`` (1-based) of a volume, decoded.

    Raises:
        ApiError: the frame cannot be decoded (the intake's status and code).
    """
    if not isinstance(item, Volume):
        return item
    try:
        return item.frame(frame - 1)
    except IntakeError as exc:
        raise ApiError(intake_status(exc), exc.code, public_message(exc)) from None


def render_item(item: Image | Volume, *, max_size: int, frame: int | None,
                result: ImageOut | None) -> Rendered:
    """Render ``item`` (a frame of it when it is a volume: ``frame``, default
    :func:`default_frame`), with ``result``'s findings drawn when given; the longest side is
    at most ``max_size`` pixels.

    Raises:
        ApiError: 422 ``invalid_frame`` (a frame the object does not have); the intake's
            status and code when the frame cannot be decoded.
    """
    count = frame_count(item)
    check_frame(frame, count)
    volume = isinstance(item, Volume)
    number = frame if frame is not None else default_frame(count, result) if volume else 1
    image = _pixels_of(item, number)
    arr = np.asarray(image.pixels)
    wanted = max(math.ceil(max(arr.shape) / max_size), 1)
    if result is None:
        step = wanted
        picture = PILImage.fromarray(display_window(arr[::step, ::step]))
    else:
        max_height = max(arr.shape[0] // wanted, 1)  # the overlay scales by its rows
        step = max(math.ceil(arr.shape[0] / max_height), 1)
        picture = (render_frame_overlay(image, result, number, max_height=max_height) if volume
                   else render_overlay(image, result, max_height=max_height))
    png = io.BytesIO()
    picture.save(png, format="PNG")
    return Rendered(png.getvalue(), float(step * image.decode_scale),
                    number if volume else None, count if volume else None)
