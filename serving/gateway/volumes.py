"""Tomosynthesis volumes in the adapters: the DICOM gateway, and the HTTP API, which imports
this module (the gateway imports nothing from the API).

- :class:`IntakeLimits`: what an object is read under: the pixels of a 2D image, the frames
  and pixels of a volume, and the bound of the one guarded parse that comes before the reader
  is chosen.
- :func:`reads_as_volume`: whether a parsed header goes to
  :func:`serving.pipeline.dicom_in.read_volume` (Breast Tomosynthesis Image, multi-frame
  grayscale Secondary Capture, and raw DBT projections, which the volume reader refuses
  saying to send the reconstructed volume), as ``galacto detect`` routes its files; anything
  else goes to the 2D intake, which names what is wrong (a multi-frame MG is ``multi_frame``).
- :func:`detect_refusing_volumes`: :func:`serving.pipeline.detect.detect`, where a volume
  whose frame cannot be decoded (frames are decoded during detection, one at a time, not at
  intake) is refused alone, with the intake's typed error, and the other instances are
  analysed, instead of the whole request or study failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset

from serving.pipeline.dicom_in import Image, Volume, is_volume
from serving.pipeline.errors import IntakeError
from serving.pipeline.intake.volume_header import BREAST_PROJECTION_SOP_CLASSES

if TYPE_CHECKING:  # the detector (ONNX Runtime) is imported when detection runs
    from serving.pipeline.detect_volume import TomoSettings
    from serving.pipeline.findings import DetectionResponse
    from serving.pipeline.model import DetectorModel

__all__ = [
    "Detected",
    "IntakeLimits",
    "VolumeFailure",
    "detect_refusing_volumes",
    "reads_as_volume",
    "sop_class_of",
]


@dataclass(frozen=True)
class IntakeLimits:
    """The bounds an uploaded or received object is read under.

    Attributes:
        max_pixels: most Rows x Columns of one 2D image.
        max_frames: most frames of one volume (NumberOfFrames).
        max_volume_pixels: most pixels of one volume, NumberOfFrames x Rows x Columns.
    """

    max_pixels: int
    max_frames: int
    max_volume_pixels: int

    @property
    def parse_pixels(self) -> int:
        """The ``max_pixels`` of the guarded parse that comes before the reader is chosen (it
        bounds how far a deflated object may inflate: twice this, plus the header allowance):
        the larger of the 2D and the volume bound."""
        return max(self.max_pixels, self.max_volume_pixels)


def sop_class_of(ds: Dataset) -> str:
    """SOPClassUID, else the file meta's MediaStorageSOPClassUID; ``""`` when neither can be
    read."""
    for holder, keyword in ((ds, "SOPClassUID"),
                            (getattr(ds, "file_meta", None), "MediaStorageSOPClassUID")):
        try:
            value = holder.get(keyword) if holder is not None else None
        except Exception:  # a value pydicom cannot convert
            value = None
        if value:
            return str(value).strip()
    return ""


def reads_as_volume(ds: Dataset) -> bool:
    """Whether the parsed object ``ds`` goes to the volume reader: a volume
    (:func:`serving.pipeline.dicom_in.is_volume`) or a Breast Projection X-Ray Image, which
    the volume reader refuses as ``unsupported_sop_class``, naming what to send. Never raises
    for the object's content."""
    return is_volume(ds) or sop_class_of(ds) in BREAST_PROJECTION_SOP_CLASSES


class _TrackedVolume(Volume):
    """A :class:`Volume` that remembers the intake error of a frame it could not decode (the
    error still propagates), so that the volume at fault is known when ``detect`` fails."""

    def __init__(self, volume: Volume) -> None:  # the same state, shared, not re-read
        vars(self).update(vars(volume))
        self.error: IntakeError | None = None
        self.failed_frame = 0

    def frame(self, index: int) -> Image:
        """:meth:`Volume.frame`, recording an :class:`IntakeError` (and the frame number)
        before it propagates."""
        try:
            return super().frame(index)
        except IntakeError as exc:
            self.error, self.failed_frame = exc, index + 1
            raise


@dataclass(frozen=True)
class VolumeFailure:
    """A volume refused during detection.

    Attributes:
        index: its position in the items given to :func:`detect_refusing_volumes`.
        error: why (the intake's error for its frame: ``truncated_pixel_data``,
            ``decode_error``, ...).
        frame: the frame (1-based) that could not be decoded.
    """

    index: int
    error: IntakeError
    frame: int

    def describe(self, message: str) -> str:
        """``message`` (the error's, as the adapter words it) led by the frame it is about."""
        return f"frame {self.frame} of the volume could not be decoded: {message}"


@dataclass(frozen=True)
class Detected:
    """What :func:`detect_refusing_volumes` produced.

    Attributes:
        response: the detection response over the kept items (image index ``k`` of the
            response is ``kept[k]`` of the items given); None when every item was refused.
        kept: positions (in the items given) of the items the response covers, increasing.
        failures: the volumes refused, in the order they failed.
    """

    response: DetectionResponse | None
    kept: list[int]
    failures: list[VolumeFailure] = field(default_factory=list)


def detect_refusing_volumes(items: Sequence[Image | Volume], model: DetectorModel,
                            operating_point: str | None, *, sources: Sequence[str | None],
                            tomo: TomoSettings | None, request_id: str | None
                            ) -> Detected:
    """:func:`serving.pipeline.detect.detect` of ``items``; a volume whose frame cannot be
    decoded is left out and detection runs again on the others (so at most once more per
    such volume; a request or study without a broken volume runs once).

    Args:
        items: 2D images and volumes, as ``detect`` takes them.
        sources: one name (or None) per item.
        tomo: how volumes are run (None: as the model card says).

    Raises:
        IntakeError: a failure ``detect`` raised that no volume recorded (not expected).
        Exception: whatever else ``detect`` raised (unknown operating point, ...).
    """
    from serving.pipeline.detect import detect

    kept = list(range(len(items)))
    failures: list[VolumeFailure] = []
    while kept:
        run: list[Image | Volume] = [
            _TrackedVolume(item) if isinstance(item := items[i], Volume) else item for i in kept]
        try:
            response = detect(run, model, operating_point, sources=[sources[i] for i in kept],
                              request_id=request_id, tomo=tomo)
        except IntakeError:
            bad = next(((k, item.error, item.failed_frame) for k, item in enumerate(run)
                        if isinstance(item, _TrackedVolume) and item.error is not None), None)
            if bad is None:
                raise
            failures.append(VolumeFailure(kept[bad[0]], bad[1], bad[2]))
            del kept[bad[0]]
            continue
        return Detected(response, kept, failures)
    return Detected(None, [], failures)
