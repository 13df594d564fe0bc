"""Tomosynthesis (DBT) intake: a reconstructed volume -> :class:`VolumeHeader` and a
:class:`Volume` whose frames decode one at a time into the 2D pipeline's :class:`Image`.

Accepted (see :mod:`serving.pipeline.intake.volume_header` for the standard sections):

- Breast Tomosynthesis Image Storage (1.2.840.10008.5.1.4.1.1.13.1.3, PS3.3 A.55), an
  enhanced multi-frame object: spacing, slice thickness, frame positions and laterality come
  from its Shared / Per-frame Functional Groups, falling back to the top-level attributes
  vendors also write (ImageLaterality, Laterality, PixelSpacing, ImagerPixelSpacing,
  SpacingBetweenSlices, SliceThickness); the view from View Code Sequence (Breast View
  module, C.8.21.6).
- Multi-frame Grayscale Byte / Word Secondary Capture (1.2.840.10008.5.1.4.1.1.7.2 / .7.3,
  A.8.3 / A.8.4) with more than one frame, only when both spacings are given: in-plane
  (Pixel Measures, PixelSpacing, ImagerPixelSpacing or NominalScannedPixelSpacing) and between
  the frames (frame positions, SliceLocationVector or SpacingBetweenSlices); otherwise
  :class:`~serving.pipeline.errors.MissingSpacingError` naming what is missing.

Refused: Breast Projection X-Ray Image Storage (.13.1.4 / .13.1.5, A.74), the raw projections
of a DBT scan (:class:`~serving.pipeline.errors.UnsupportedSopClassError`, "send the
reconstructed volume"); any other SOP class; more than ``max_frames`` frames or more than
``max_pixels`` pixels in all (:class:`~serving.pipeline.errors.ImageTooLargeError`, checked
from the header before anything is decoded; a deflated object is also refused when it
inflates beyond ``2 * max_pixels`` bytes, as in the 2D intake). Every other check is the 2D
header's (:func:`~serving.pipeline.intake.reader.read_header`), applied to the volume seen as
one 2D image, with the same typed errors.

How: the header is read once under the guarded parse (:mod:`serving.pipeline.intake.parse`).
The volume's 2D header is the 2D intake's own, built from a *plane data set*: the top-level
elements without NumberOfFrames and the functional groups, with what the functional groups
say lifted to where a 2D image has it (PixelSpacing, ImageLaterality, RescaleSlope /
RescaleIntercept, WindowCenter / WindowWidth, PatientOrientation when it can be derived), so
frames get exactly the 2D checks and pixel semantics (Modality LUT / rescale, MONOCHROME1 and
Presentation LUT Shape INVERSE, Pixel Padding, shutters, stored bits). A frame is decoded only
when asked for (:meth:`Volume.frame`): an uncompressed frame is sliced out of the pixel data;
a compressed one is located with pydicom's frame access (``pydicom.encaps.get_frame``, Basic
or Extended Offset Table, or the fragments) and only that frame's codestream is checked and
decoded, by the 2D intake's decoder. The volume keeps the stored (as received) pixel data,
never all frames decoded.

Conventions: a frame is an :class:`~serving.pipeline.intake.types.Image` of shape
``(rows, cols)``, exactly what :func:`~serving.pipeline.intake.reader.read_image` gives for a
single-frame image; frame indices are 0-based (index 0 is DICOM frame number 1) and frames
stay in DICOM order: :attr:`VolumeHeader.frame_heights_mm` tells where each lies.

This module never imports torch, monai or ``training``.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.tag import Tag
from pydicom.uid import UID, RLELossless

from serving.pipeline.errors import (
    ABSENT,
    Found,
    ImageTooLargeError,
    IntakeError,
    InvalidHeaderError,
    MissingSpacingError,
    TruncatedPixelDataError,
    UnsupportedSopClassError,
)
from serving.pipeline.intake.codestream import check_frame_header, codestream_bits
from serving.pipeline.intake.decode import decode_stored, pixel_data_failure
from serving.pipeline.intake.header import read_header_plan
from serving.pipeline.intake.parse import (
    DicomSource,
    check_max_pixels,
    guard,
    header_of,
    parsed,
)
from serving.pipeline.intake.pixel_semantics import PixelPlan, apply_plan, settle_stored_bits
from serving.pipeline.intake.types import Image, ImageHeader, header_fields
from serving.pipeline.intake.values import as_float, attr, get, text, try_int
from serving.pipeline.intake.volume_header import (
    BREAST_PROJECTION_SOP_CLASSES,
    BREAST_TOMOSYNTHESIS,
    MULTIFRAME_SC_SOP_CLASSES,
    FunctionalGroups,
    PixelMeasures,
    frame_heights,
    frame_laterality,
    frame_window,
    pixel_measures,
    pixel_value_transformation,
    view_of,
)

__all__ = [
    "DEFAULT_MAX_FRAMES",
    "DEFAULT_MAX_VOLUME_PIXELS",
    "Volume",
    "VolumeHeader",
    "VolumeSource",
    "is_volume",
    "read_volume",
    "read_volume_header",
]

#: Default most frames of a volume (DBT at 1 mm slices is 40-90 frames; 0.5 mm up to ~180).
DEFAULT_MAX_FRAMES: Final = 200
#: Default most pixels of a volume, all frames together (about 110 frames of 3328 x 4096).
DEFAULT_MAX_VOLUME_PIXELS: Final = 1_500_000_000

#: What kind of object the volume came from.
VolumeSource: TypeAlias = Literal["breast_tomosynthesis", "secondary_capture"]

#: The 2D header's SOP class check is run on a stand-in class, single-frame Secondary
#: Capture, which has no MG/DX-specific rules (the DX Image module's identity rescale does not
#: apply to a Breast Tomosynthesis Image, whose rescale is in the Pixel Value Transformation
#: functional group); the header then gets the volume's own class.
_PLANE_SOP_CLASS: Final = "1.2.840.10008.5.1.4.1.1.7"
_PIXEL_DATA: Final = Tag(0x7FE0, 0x0010)
#: Top-level elements the plane data set leaves out.
_NOT_PLANE: Final = frozenset(
    Tag(keyword)
    for keyword in ("NumberOfFrames", "SharedFunctionalGroupsSequence",
                    "PerFrameFunctionalGroupsSequence")
)
#: The Dataset attributes pydicom reads a deferred value back from (the parsed source).
_DEFERRED_READ_FROM: Final = ("filename", "buffer", "fileobj_type", "timestamp")
_SPACING_KEYWORDS: Final = ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing")


@dataclass(frozen=True)
class VolumeHeader:
    """Everything the intake reads from a volume's header, checked, without pixels.

    Attributes:
        image: the volume described as one 2D image: every :class:`ImageHeader` field
            (rows, cols, in-plane ``spacing_mm`` as (row, column) mm, laterality, view,
            UIDs, patient orientation, pixel format, rescale, value range, warnings, ...), as
            each frame has it. ``sop_class_uid`` is the volume's own; ``sop_class_name`` is
            ``"Breast Tomosynthesis"`` or the Secondary Capture class name. ``warnings``
            also name every geometry assumption (how the frame heights were derived).
        number_of_frames: NumberOfFrames (0028,0008), >= 1 (> 1 for Secondary Capture).
        frame_heights_mm: height (mm) of each frame's plane above the breast support along
            the beam axis, measured from the lowest frame (height 0; no attribute states how
            far that one lies above the support); index 0 is DICOM frame number 1; length
            ``number_of_frames``. See :mod:`serving.pipeline.intake.volume_header`.
        slice_thickness_mm: SliceThickness (mm) from the Pixel Measures functional group,
            else the top level; None when absent or unusable.
        source: ``"breast_tomosynthesis"`` or ``"secondary_capture"``.
    """

    image: ImageHeader
    number_of_frames: int
    frame_heights_mm: tuple[float, ...]
    slice_thickness_mm: float | None
    source: VolumeSource


class Volume:
    """A checked volume whose frames are decoded one at a time, when asked for.

    Attributes:
        header: the :class:`VolumeHeader`.
        dataset: the header data set (without Pixel Data, see
            :func:`serving.pipeline.intake.parse.header_of`), for results that copy patient,
            study and reference attributes.

    Built by :func:`read_volume`. Holds the stored pixel data as received (compressed frames
    stay compressed); decoded frames are not cached. Safe to read from several threads.
    """

    def __init__(self, header: VolumeHeader, dataset: Dataset, plane: Dataset,
                 plan: PixelPlan) -> None:
        self.header = header
        self.dataset = dataset
        self._plane = plane
        self._plan = plan
        self._overlay = any(((group << 16) | 0x0102) in plane
                            for group in range(0x6000, 0x6020, 2))
        # converted once here, so that frames read from several threads only read them
        self._pixel_data: DataElement = plane["PixelData"]
        self._offsets = None
        if "ExtendedOffsetTable" in plane and "ExtendedOffsetTableLengths" in plane:
            self._offsets = (plane.ExtendedOffsetTable, plane.ExtendedOffsetTableLengths)

    def __len__(self) -> int:
        return self.header.number_of_frames

    def frame(self, index: int) -> Image:
        """Decode frame ``index`` (0-based: DICOM frame number ``index + 1``) alone.

        Returns:
            An :class:`Image` of shape ``(rows, cols)`` with the pixel semantics of
            :func:`~serving.pipeline.intake.reader.read_image` (Modality LUT / rescale,
            inversion for MONOCHROME1 or Presentation LUT Shape INVERSE, padding and
            shutters masked); its header fields are :attr:`VolumeHeader.image`'s, its
            warnings those plus what this frame's pixels showed.

        Raises:
            IndexError: ``index`` is not in ``0 .. number_of_frames - 1``.
            TypeError: ``index`` is not an int.
            IntakeError: this frame cannot be decoded (e.g. :class:`TruncatedPixelDataError`
                for a missing or corrupt frame), naming the frame.
        """
        if isinstance(index, bool):
            raise TypeError("frame index must be an int, not bool")
        position = operator.index(index)  # TypeError for anything but an int (or numpy int)
        count = self.header.number_of_frames
        if not 0 <= position < count:
            raise IndexError(f"frame index {position} out of range: the volume has {count} "
                             f"frames (0 .. {count - 1})")
        with guard():
            return self._decode(position)

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[Image]:
        """Frames ``start`` .. ``stop - 1`` (0-based; ``stop`` None: to the last), each
        decoded when the iterator reaches it (see :meth:`frame`).

        Raises:
            IndexError: (at the call) unless ``0 <= start <= stop <= number_of_frames``.
        """
        count = self.header.number_of_frames
        end = count if stop is None else stop
        if not 0 <= start <= end <= count:
            raise IndexError(f"frame range {start}:{stop} out of range: the volume has "
                             f"{count} frames")
        return (self.frame(index) for index in range(start, end))

    def _decode(self, index: int) -> Image:
        """Frame ``index``: its stored bytes alone in a one-frame data set, then the 2D
        intake's frame check, decoder and pixel semantics."""
        image = self.header.image
        uid = UID(image.transfer_syntax_uid)
        single = Dataset()
        single.PixelData = self._frame_bytes(index, uid)
        single["PixelData"].VR = self._pixel_data.VR
        check_frame_header(single, uid, image.rows, image.cols)
        stored = decode_stored(single, image)
        notes: list[str] = []
        stored, bits = settle_stored_bits(
            stored, bits_stored=image.bits_stored,
            pixel_representation=image.pixel_representation,
            # a JPEG / JPEG-LS / JPEG 2000 codestream (every other encapsulated syntax the
            # intake decodes is RLE, whose unused bits are cleared like native data's)
            encapsulated=uid.is_encapsulated and uid != RLELossless,
            codestream_bits=codestream_bits(single, uid), overlay_in_high_bits=self._overlay,
            codec=uid.name, notes=notes,
        )
        pixels, value_range, area = apply_plan(
            stored, self._plan, self._plane, bits_stored=bits,
            pixel_representation=image.pixel_representation, scale=1, notes=notes,
        )
        fields = header_fields(image)
        fields.update(value_range=value_range,
                      warnings=image.warnings + tuple(f"frame {index + 1}: {n}" for n in notes))
        return Image(**fields, pixels=pixels, decode_scale=1, image_area=area)

    def _frame_bytes(self, index: int, uid: UID) -> bytes:
        """The stored bytes of frame ``index``: a slice of native data, or the frame's
        codestream encapsulated alone."""
        image = self.header.image
        data = self._pixel_data.value
        count = self.header.number_of_frames
        if not uid.is_encapsulated:
            size = image.rows * image.cols * image.bits_allocated // 8
            return bytes(data[index * size : (index + 1) * size])
        try:
            frame = get_frame(data, index, extended_offsets=self._offsets,
                              number_of_frames=count)
        except Exception as exc:
            raise pixel_data_failure(
                TruncatedPixelDataError,
                f"frame {index + 1} cannot be found in the encapsulated pixel data",
                data, exc, expected=f"{count} frames (NumberOfFrames)",
            ) from exc
        return encapsulate([frame])


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def is_volume(ds: Dataset) -> bool:
    """Whether ``ds`` is a volume for :func:`read_volume`: a Breast Tomosynthesis Image, or a
    multi-frame grayscale Secondary Capture with NumberOfFrames > 1 (SOPClassUID, else the
    file meta's MediaStorageSOPClassUID). A routing helper: it checks nothing else and never
    raises for the object's content."""
    try:
        uid = _sop_class_uid(ds)
        if uid == BREAST_TOMOSYNTHESIS:
            return True
        frames = try_int(get(ds, "NumberOfFrames"))
    except IntakeError:
        return False
    return uid in MULTIFRAME_SC_SOP_CLASSES and frames is not None and frames > 1


def read_volume_header(
    source: DicomSource,
    *,
    max_frames: int = DEFAULT_MAX_FRAMES,
    max_pixels: int = DEFAULT_MAX_VOLUME_PIXELS,
) -> VolumeHeader:
    """Read and check a volume's header without decoding or loading its pixel data: values
    over 4 KiB are left unread by the parse, and only those the checks need (functional
    groups written with explicit lengths) are read back from the source, by pydicom.

    Args:
        source: DICOM Part 10 bytes (or a preamble-less data set), a path, a binary file
            object positioned at the object's start, or a pydicom ``Dataset``.
        max_frames: most frames accepted.
        max_pixels: most pixels accepted, all frames together (frames x rows x cols); also
            bounds what a deflated object may inflate to (``2 * max_pixels`` bytes).

    Returns:
        The checked :class:`VolumeHeader`.

    Raises:
        IntakeError: a subclass naming the attribute, value and expectation of the first
            problem: ``unsupported_sop_class`` (not a volume class; raw projections),
            ``image_too_large`` (frames, pixels), ``missing_spacing`` / ``invalid_spacing``,
            ``invalid_header`` (e.g. frames in one plane, per-frame groups that do not match
            NumberOfFrames), and every refusal of the 2D header.
        OSError: ``source`` is a path that cannot be opened or read.
        TypeError: ``source`` is none of the accepted types.
        ValueError: ``max_frames`` or ``max_pixels`` is not a positive int.
    """
    _check_limits(max_frames, max_pixels)
    with parsed(source, header_only=True, max_pixels=max_pixels) as ds:
        return _plan(ds, max_frames=max_frames, max_pixels=max_pixels, load_luts=False)[0]


def read_volume(
    source: DicomSource,
    *,
    max_frames: int = DEFAULT_MAX_FRAMES,
    max_pixels: int = DEFAULT_MAX_VOLUME_PIXELS,
) -> Volume:
    """Read and check a volume; its frames are decoded later, one at a time
    (:meth:`Volume.frame`).

    Arguments, checks and errors are those of :func:`read_volume_header`; in addition
    uncompressed pixel data shorter than NumberOfFrames x Rows x Columns x BitsAllocated / 8
    bytes is refused here (:class:`TruncatedPixelDataError`), before any frame is asked for.
    An :class:`IntakeError` raised after the object was parsed carries its header as
    :attr:`IntakeError.dataset`.
    """
    _check_limits(max_frames, max_pixels)
    with parsed(source, header_only=False, max_pixels=max_pixels) as ds:
        try:
            with guard():
                header, plan, plane = _plan(ds, max_frames=max_frames, max_pixels=max_pixels,
                                            load_luts=True)
                _check_native_length(plane, header)
                dataset = header_of(ds)
        except IntakeError as exc:
            exc.dataset = _header_or_none(ds)
            raise
        return Volume(header, dataset, plane, plan)


# --------------------------------------------------------------------------------------------
# The header
# --------------------------------------------------------------------------------------------


def _plan(ds: Dataset, *, max_frames: int, max_pixels: int, load_luts: bool
          ) -> tuple[VolumeHeader, PixelPlan, Dataset]:
    """Check ``ds`` as a volume: ``(header, pixel plan, plane data set)``."""
    uid, source = _volume_class(ds)
    frames = _number_of_frames(ds, source, max_frames)
    _check_volume_size(ds, frames, max_pixels)
    notes: list[str] = []
    groups = FunctionalGroups(ds, frames)
    measures = pixel_measures(ds, groups, notes)
    plane = _plane_dataset(ds)
    spacing = _lift_spacing(ds, plane, measures, notes)
    laterality = _lift_laterality(ds, plane, groups, notes)
    _lift_rescale(ds, plane, groups, notes)
    _lift_carm_angle(ds, plane, notes)
    window = frame_window(groups)
    if window is not None and "WindowCenter" not in ds:
        for element in window:
            plane[element.tag] = element
    geometry = frame_heights(
        ds, groups, measures, tomosynthesis=source == "breast_tomosynthesis",
        view=view_of(ds), laterality=laterality, pixel_spacing=spacing, notes=notes,
    )
    if geometry.patient_orientation is not None and get(ds, "PatientOrientation") is ABSENT:
        plane["PatientOrientation"] = DataElement(
            Tag("PatientOrientation"), "CS", list(geometry.patient_orientation))
        letters = "\\".join(geometry.patient_orientation)
        notes.append(f"{attr('PatientOrientation')} is absent; derived from the frames' "
                     f"{attr('ImageOrientationPatient')}: {letters}")
    image, plan = read_header_plan(plane, max_pixels=max_pixels, allow_missing_spacing=False,
                                   load_luts=load_luts)
    name = ("Breast Tomosynthesis" if source == "breast_tomosynthesis"
            else MULTIFRAME_SC_SOP_CLASSES[uid])
    image = dataclasses.replace(image, sop_class_uid=uid, sop_class_name=name,
                                warnings=image.warnings + tuple(notes))
    header = VolumeHeader(image=image, number_of_frames=frames,
                          frame_heights_mm=geometry.heights_mm,
                          slice_thickness_mm=measures.slice_thickness_mm, source=source)
    return header, plan, plane


def _sop_class_uid(ds: Dataset) -> str | None:
    """SOPClassUID, else the file meta's MediaStorageSOPClassUID; None when both absent."""
    value = get(ds, "SOPClassUID")
    if value is ABSENT:
        meta = getattr(ds, "file_meta", None)
        value = ABSENT if meta is None else get(meta, "MediaStorageSOPClassUID")
    return None if value is ABSENT else text(value) or None


def _volume_class(ds: Dataset) -> tuple[str, VolumeSource]:
    """``(SOP class UID, source)`` of a volume class; UnsupportedSopClassError otherwise."""
    uid = _sop_class_uid(ds)
    if uid == BREAST_TOMOSYNTHESIS:
        return uid, "breast_tomosynthesis"
    if uid in MULTIFRAME_SC_SOP_CLASSES:
        return uid, "secondary_capture"
    expected = ("Breast Tomosynthesis Image Storage (1.2.840.10008.5.1.4.1.1.13.1.3) or a "
                "multi-frame grayscale Secondary Capture volume")
    if uid in BREAST_PROJECTION_SOP_CLASSES:
        raise UnsupportedSopClassError(
            f"raw tomosynthesis projections ({BREAST_PROJECTION_SOP_CLASSES[uid]}); send the "
            "reconstructed volume",
            attribute=attr("SOPClassUID"), value=uid, expected=expected,
        )
    name = "absent" if uid is None else UID(uid).name
    raise UnsupportedSopClassError(
        f"not a tomosynthesis volume ({name}); single-frame images are read as 2D images",
        attribute=attr("SOPClassUID"), value=ABSENT if uid is None else uid, expected=expected,
    )


def _number_of_frames(ds: Dataset, source: VolumeSource, max_frames: int) -> int:
    """NumberOfFrames: a positive int (> 1 for Secondary Capture), at most ``max_frames``."""
    value = get(ds, "NumberOfFrames")
    frames = None if value is ABSENT else try_int(value)
    if frames is None or frames < 1:
        raise InvalidHeaderError(
            "missing required attribute" if value is ABSENT else "invalid number of frames",
            attribute=attr("NumberOfFrames"), value=value,
            expected="a positive integer (PS3.3 C.7.6.6, type 1)",
        )
    if frames == 1 and source == "secondary_capture":
        raise InvalidHeaderError(
            "a Secondary Capture of one frame is not a volume; read it as a 2D image",
            attribute=attr("NumberOfFrames"), value=frames, expected="more than 1",
        )
    if frames > max_frames:
        raise ImageTooLargeError(
            f"too many frames ({frames})", attribute=attr("NumberOfFrames"), value=frames,
            expected=f"at most {max_frames} frames",
        )
    return frames


def _check_volume_size(ds: Dataset, frames: int, max_pixels: int) -> None:
    """ImageTooLargeError when frames x Rows x Columns exceeds ``max_pixels`` (Rows and
    Columns that are not positive ints are left to the 2D header's check)."""
    rows, cols = try_int(get(ds, "Rows")), try_int(get(ds, "Columns"))
    if rows is None or cols is None or rows < 1 or cols < 1:
        return
    total = frames * rows * cols
    if total > max_pixels:
        allocated = try_int(get(ds, "BitsAllocated")) or 16
        raise ImageTooLargeError(
            f"volume too large ({total} pixels, {total * allocated // 8} bytes uncompressed)",
            attribute=f"{attr('NumberOfFrames')} x {attr('Rows')} x {attr('Columns')}",
            value=Found(f"{frames} x {rows} x {cols}"),
            expected=f"at most {max_pixels} pixels in all frames together",
        )


def _plane_dataset(ds: Dataset) -> Dataset:
    """The top-level public elements of ``ds`` but NumberOfFrames and the functional groups,
    unconverted (the Pixel Data element shared, not copied); values left unread by a
    header-only parse are left out, the Pixel Data's kept as it is."""
    plane = Dataset()
    for tag in ds.keys():  # noqa: SIM118 (iterating would convert every raw element)
        element = ds.get_item(tag, keep_deferred=True)
        deferred = isinstance(element, RawDataElement) and element.value is None \
            and element.length > 0
        if tag in _NOT_PLANE or tag.is_private or (deferred and tag != _PIXEL_DATA):
            continue
        plane[tag] = element
    plane["SOPClassUID"] = DataElement(Tag("SOPClassUID"), "UI", _PLANE_SOP_CLASS)
    implicit, little = ds.original_encoding
    if implicit is not None and little is not None:
        plane.set_original_encoding(implicit, little, ds.original_character_set)
    if hasattr(ds, "file_meta"):
        plane.file_meta = ds.file_meta
    for name in _DEFERRED_READ_FROM:  # where a Pixel Data value left unread is read from
        setattr(plane, name, getattr(ds, name, None))
    return plane


def _lift_spacing(ds: Dataset, plane: Dataset, measures: PixelMeasures, notes: list[str]
                  ) -> tuple[float, float] | None:
    """Put the in-plane spacing where the 2D header reads it: the Pixel Measures'
    PixelSpacing (then ImagerPixelSpacing and its magnification no longer apply), else a
    NominalScannedPixelSpacing when PixelSpacing and ImagerPixelSpacing are absent.
    Returns the spacing (mm) when one is readable, for the geometry notes.

    Raises:
        MissingSpacingError: no spacing attribute at all.
    """
    if measures.spacing is not None:
        plane[Tag("PixelSpacing")] = DataElement(Tag("PixelSpacing"), "DS",
                                                 measures.spacing.value)
        for keyword in ("ImagerPixelSpacing", "EstimatedRadiographicMagnificationFactor"):
            if keyword in plane:
                del plane[keyword]
        return _pair(measures.spacing.value)
    present = [k for k in _SPACING_KEYWORDS if get(ds, k) is not ABSENT]
    if not present:
        raise MissingSpacingError(
            "no pixel spacing",
            attribute="SharedFunctionalGroupsSequence > PixelMeasuresSequence > "
                      f"{attr('PixelSpacing')}, {attr('PixelSpacing')}, "
                      f"{attr('ImagerPixelSpacing')} or {attr('NominalScannedPixelSpacing')}",
            value=ABSENT,
            expected="the in-plane (row, column) pixel spacing in mm",
        )
    if present == ["NominalScannedPixelSpacing"]:
        plane[Tag("PixelSpacing")] = DataElement(Tag("PixelSpacing"), "DS",
                                                 ds["NominalScannedPixelSpacing"].value)
        notes.append(f"pixel spacing from {attr('NominalScannedPixelSpacing')}: "
                     f"{attr('PixelSpacing')} is absent")
        return _pair(ds["NominalScannedPixelSpacing"].value)
    return _pair(ds[present[0]].value)


def _pair(value: Any) -> tuple[float, float] | None:
    try:
        first, second = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return first, second


def _lift_laterality(ds: Dataset, plane: Dataset, groups: FunctionalGroups,
                     notes: list[str]) -> str | None:
    """Put FrameLaterality (functional groups) in ImageLaterality, noting a top-level
    ImageLaterality it overrules; return the side (``"L"``/``"R"``) the volume shows, or
    None when unknown."""
    side = frame_laterality(groups, notes)
    if side is not None:
        found = _text_or_none(ds, "ImageLaterality")
        if found is not None and found.upper() != side:
            notes.append(f"FrameLaterality {side!r} (functional groups) differs from "
                         f"{attr('ImageLaterality')} {found!r}; used FrameLaterality")
        plane[Tag("ImageLaterality")] = DataElement(Tag("ImageLaterality"), "CS", side)
    else:
        side = _text_or_none(ds, "ImageLaterality") or _text_or_none(ds, "Laterality")
    side = side.upper() if side else None
    return side if side in ("L", "R") else None


def _lift_carm_angle(ds: Dataset, plane: Dataset, notes: list[str]) -> None:
    """Without a top-level PositionerPrimaryAngle (0018,1510), put there the centre of the
    sweep: the mean of the smallest and largest PositionerPrimaryAngle of the projections
    (X-Ray 3D Acquisition Sequence > Per Projection Acquisition Sequence, where the Breast
    Tomosynthesis Image IOD keeps the C-arm angle, PS3.3 C.8.21.3.1), noted; nothing when
    neither gives a number. The 2D location reads the oblique view's angle from there."""
    if _text_or_none(ds, "PositionerPrimaryAngle") is not None:
        return
    angles: list[float] = []
    try:
        for item in ds.get("XRay3DAcquisitionSequence") or []:
            for projection in item.get("PerProjectionAcquisitionSequence") or []:
                value = projection.get("PositionerPrimaryAngle")
                if value is not None and str(value).strip():
                    angles.append(float(value))
    except (AttributeError, TypeError, ValueError, IntakeError):
        notes.append("the projections' PositionerPrimaryAngle values are unreadable; the "
                     "C-arm angle is not known")
        return
    angles = [a for a in angles if math.isfinite(a)]
    if not angles:
        return
    centre = round((min(angles) + max(angles)) / 2.0, 4)
    plane[Tag("PositionerPrimaryAngle")] = DataElement(
        Tag("PositionerPrimaryAngle"), "DS", f"{centre:g}")
    notes.append(f"{attr('PositionerPrimaryAngle')} is absent at the top level; the centre "
                 f"of the {len(angles)} projections' angles (X-Ray 3D Acquisition Sequence) "
                 f"gives {centre:g} degrees")


def _text_or_none(ds: Dataset, keyword: str) -> str | None:
    try:
        value = get(ds, keyword)
    except IntakeError:
        return None
    return None if value is ABSENT else text(value) or None


def _lift_rescale(ds: Dataset, plane: Dataset, groups: FunctionalGroups,
                  notes: list[str]) -> None:
    """Put the Pixel Value Transformation's RescaleSlope / RescaleIntercept where the 2D
    header reads them; they overrule top-level values (noted when different)."""
    found = pixel_value_transformation(groups)
    if found is None:
        return
    for element in found:
        top = _text_or_none(ds, element.keyword)
        if top is not None and _float_or_none(top) != _float_or_none(element.value):
            notes.append(f"{attr(element.keyword)} {top} at the top level differs from the "
                         f"Pixel Value Transformation functional group's {element.value}; "
                         "used the functional group's")
        plane[element.tag] = element


def _float_or_none(value: object) -> float | None:
    try:
        return as_float(value)
    except (ValueError, TypeError):
        return None


def _check_native_length(plane: Dataset, header: VolumeHeader) -> None:
    """TruncatedPixelDataError when uncompressed pixel data is shorter than all frames."""
    image = header.image
    if UID(image.transfer_syntax_uid).is_encapsulated:
        return
    value = plane["PixelData"].value
    frame = image.rows * image.cols * image.bits_allocated // 8
    expected = frame * header.number_of_frames
    if not isinstance(value, bytes | bytearray | memoryview) or len(value) < expected:
        found = len(value) if isinstance(value, bytes | bytearray | memoryview) else 0
        raise TruncatedPixelDataError(
            "pixel data is shorter than the volume",
            attribute=attr("PixelData"), value=Found(f"{found} bytes"),
            expected=f"NumberOfFrames x Rows x Columns x BitsAllocated / 8 = "
                     f"{header.number_of_frames} x {image.rows} x {image.cols} x "
                     f"{image.bits_allocated // 8} = {expected} bytes",
        )


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def _check_limits(max_frames: int, max_pixels: int) -> None:
    check_max_pixels(max_pixels)
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
        raise ValueError(f"max_frames must be a positive int, got {max_frames!r}")


def _header_or_none(ds: Dataset) -> Dataset | None:
    """:func:`header_of` ``ds``, or None when even that fails (an element flood)."""
    try:
        with guard():
            return header_of(ds)
    except IntakeError:
        return None
