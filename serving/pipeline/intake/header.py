"""Reading and checking an image header: SOP class, transfer syntax, Pixel Data presence,
photometric interpretation, frames, size, bits, rescale, spacing (and its source), laterality,
view and patient orientation (:func:`read_header_plan`). The first problem raises a typed
:class:`~serving.pipeline.errors.IntakeError`; tolerated oddities become notes.
"""


from __future__ import annotations

import math
import re
from typing import Final

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from serving.pipeline.errors import (
    ABSENT,
    ColorImageError,
    Found,
    ImageTooLargeError,
    InvalidHeaderError,
    InvalidSpacingError,
    MissingSpacingError,
    MultiFrameError,
    NoPixelDataError,
    UnsupportedPhotometricError,
    UnsupportedSopClassError,
    UnsupportedTransferSyntaxError,
)
from serving.pipeline.intake.pixel_semantics import (
    PixelPlan,
    plan_pixels,
)
from serving.pipeline.intake.types import (
    ACCEPTED_SOP_CLASSES,
    MAX_SPACING_MM,
    SUPPORTED_TRANSFER_SYNTAXES,
    VIEW_CODES,
    VIEW_POSITIONS,
    ImageHeader,
    Laterality,
    SpacingSource,
)
from serving.pipeline.intake.values import as_float as _as_float
from serving.pipeline.intake.values import as_int as _as_int
from serving.pipeline.intake.values import attr as _attr
from serving.pipeline.intake.values import get as _get
from serving.pipeline.intake.values import text as _text
from serving.pipeline.intake.values import try_int as _try_int

_COLOR_PHOTOMETRICS: Final = frozenset(
    {"RGB", "ARGB", "CMYK", "HSV", "PALETTE COLOR", "YBR_FULL", "YBR_FULL_422",
     "YBR_PARTIAL_420", "YBR_PARTIAL_422", "YBR_ICT", "YBR_RCT"}
)  # fmt: skip
_MONOCHROME: Final = frozenset({"MONOCHROME1", "MONOCHROME2"})
_ORIENTATION_VALUE: Final = re.compile(r"^[APRLHF]{1,3}$")
_SPACING_EXPECTED: Final = (
    f"two finite numbers in (0, {MAX_SPACING_MM:g}] mm (row spacing, column spacing)"
)
_SPACING_MISSING: Final = "PixelSpacing (0028,0030) or ImagerPixelSpacing (0018,1164)"


# --------------------------------------------------------------------------------------------
# Header
# --------------------------------------------------------------------------------------------


def read_header_plan(
    ds: Dataset, *, max_pixels: int, allow_missing_spacing: bool, load_luts: bool
) -> tuple[ImageHeader, PixelPlan]:
    """Check ``ds``'s header and build the :class:`ImageHeader` and the plan for its pixels
    (first problem raises). ``load_luts``: read LUT data (not in :func:`read_header`)."""
    notes: list[str] = []
    sop_class_uid = _sop_class(ds, notes)
    transfer_syntax = _transfer_syntax(ds, notes)
    _require_pixel_data(ds)
    photometric = _photometric(ds, notes)
    _single_frame(ds)
    rows, cols = _size(ds, max_pixels)
    bits_allocated, bits_stored, high_bit, pixel_representation = _bits(ds, notes)
    slope, intercept = _rescale(ds)
    plan = plan_pixels(
        ds, photometric=photometric, bits_stored=bits_stored,
        pixel_representation=pixel_representation, slope=slope, intercept=intercept,
        sop_class_uid=sop_class_uid, notes=notes, load_luts=load_luts,
    )
    spacing, spacing_source = _spacing(ds, notes, allow_missing=allow_missing_spacing)
    laterality = _laterality(ds, notes)
    view, view_modifiers = _view(ds, notes)
    orientation = _patient_orientation(ds, notes)
    window_center = _optional_first_float(ds, "WindowCenter", notes)
    window_width = _optional_first_float(ds, "WindowWidth", notes)
    header = ImageHeader(
        rows=rows,
        cols=cols,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        high_bit=high_bit,
        pixel_representation=pixel_representation,
        photometric_interpretation=photometric,
        rescale_slope=plan.slope,
        rescale_intercept=plan.intercept,
        value_range=plan.value_range(bits_stored, pixel_representation),
        window_center=window_center,
        window_width=window_width,
        spacing_mm=spacing,
        spacing_source=spacing_source,
        laterality=laterality,
        view=view,
        view_modifiers=view_modifiers,
        patient_orientation=orientation,
        transfer_syntax_uid=str(transfer_syntax),
        transfer_syntax_name=_uid_name(transfer_syntax),
        sop_class_uid=sop_class_uid,
        sop_class_name=ACCEPTED_SOP_CLASSES.get(sop_class_uid) if sop_class_uid else None,
        modality=_optional_text(ds, "Modality", notes),
        presentation_intent=_optional_text(ds, "PresentationIntentType", notes),
        study_instance_uid=_optional_text(ds, "StudyInstanceUID", notes),
        series_instance_uid=_optional_text(ds, "SeriesInstanceUID", notes),
        sop_instance_uid=_optional_text(ds, "SOPInstanceUID", notes),
        patient_id=_optional_text(ds, "PatientID", notes),
        accession_number=_optional_text(ds, "AccessionNumber", notes),
        manufacturer=_optional_text(ds, "Manufacturer", notes),
        positioner_primary_angle=_optional_first_float(ds, "PositionerPrimaryAngle", notes),
        warnings=tuple(notes),
    )
    return header, plan


# ---- element access ------------------------------------------------------------------------


def _required_int(ds: Dataset, keyword: str, expected: str) -> int:
    """Integer value of a type 1 attribute; :class:`InvalidHeaderError` if missing/invalid."""
    value = _get(ds, keyword)
    if value is ABSENT:
        raise InvalidHeaderError(
            "missing required attribute",
            attribute=_attr(keyword),
            value=ABSENT,
            expected=expected,
        )
    try:
        return _as_int(value)
    except ValueError as exc:
        raise InvalidHeaderError(
            "not an integer", attribute=_attr(keyword), value=value, expected=expected
        ) from exc


def _required_choice(
    ds: Dataset, keyword: str, choices: tuple[int, ...], problem: str, expected: str
) -> int:
    """Integer value of a type 1 attribute that must be one of ``choices``; missing or not an
    integer as :func:`_required_int`, another integer :class:`InvalidHeaderError` with the
    message ``problem`` (both with ``expected``)."""
    value = _required_int(ds, keyword, expected)
    if value not in choices:
        raise InvalidHeaderError(problem, attribute=_attr(keyword), value=value, expected=expected)
    return value


def _optional_text(ds: Dataset, keyword: str, notes: list[str]) -> str | None:
    """Stripped string value of ``keyword``, ``None`` when absent; unreadable -> warning."""
    try:
        value = _get(ds, keyword)
    except InvalidHeaderError as exc:
        notes.append(f"ignored {exc}")
        return None
    if value is ABSENT:
        return None
    return _text(value) or None


def _optional_first_float(ds: Dataset, keyword: str, notes: list[str]) -> float | None:
    """First value of a numeric multi-valued attribute (e.g. WindowCenter), ``None`` if absent
    or unusable (with a warning)."""
    try:
        value = _get(ds, keyword)
        if value is ABSENT:
            return None
        first = value[0] if isinstance(value, MultiValue | list | tuple) else value
        number = _as_float(first)
    except (InvalidHeaderError, ValueError, TypeError):
        notes.append(f"ignored unreadable {_attr(keyword)}")
        return None
    if not math.isfinite(number):
        notes.append(f"ignored non-finite {_attr(keyword)} = {number!r}")
        return None
    return number


def _uid_name(uid: UID) -> str:
    """Registered name of ``uid``, or ``"unknown"``."""
    name = uid.name
    return "unknown" if name == str(uid) else name


# ---- object-level checks -------------------------------------------------------------------


def _file_meta_value(ds: Dataset, keyword: str) -> str | None:
    """Stripped value of a file meta attribute, or ``None``."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return None
    value = _get(meta, keyword)
    return None if value is ABSENT else _text(value) or None


def _sop_class(ds: Dataset, notes: list[str]) -> str | None:
    """SOPClassUID (or MediaStorageSOPClassUID), checked against :data:`ACCEPTED_SOP_CLASSES`."""
    value = _get(ds, "SOPClassUID")
    uid = None if value is ABSENT else _text(value) or None
    if uid is None:
        uid = _file_meta_value(ds, "MediaStorageSOPClassUID")
        if uid is None:
            notes.append("SOPClassUID (0008,0016) is absent; accepted as the image is usable")
            return None
        notes.append("SOPClassUID (0008,0016) is absent; used MediaStorageSOPClassUID")
    if uid not in ACCEPTED_SOP_CLASSES:
        raise UnsupportedSopClassError(
            f"unsupported SOP class ({_uid_name(UID(uid))})",
            attribute=_attr("SOPClassUID"),
            value=uid,
            expected="MG, DX or CR image storage, or single-frame grayscale Secondary Capture",
        )
    return uid


def _transfer_syntax(ds: Dataset, notes: list[str]) -> UID:
    """The transfer syntax of the pixel data; must be supported and have a decoder installed.

    A Dataset without TransferSyntaxUID (built in memory, or read without file meta) is taken
    to be in the encoding it was read with, or Explicit VR Little Endian (with a warning);
    encapsulated pixel data without a transfer syntax cannot be decoded.
    """
    text = _file_meta_value(ds, "TransferSyntaxUID")
    if text is None:
        return _guess_transfer_syntax(ds, notes)
    uid = UID(text)
    if uid not in SUPPORTED_TRANSFER_SYNTAXES:
        raise UnsupportedTransferSyntaxError(
            f"unsupported transfer syntax ({_uid_name(uid)})",
            attribute=_attr("TransferSyntaxUID"),
            value=str(uid),
            expected="uncompressed, deflated, JPEG lossless/baseline/extended, JPEG-LS, "
            "JPEG 2000, HTJ2K or RLE Lossless",
        )
    if not get_decoder(uid).is_available:
        raise UnsupportedTransferSyntaxError(
            f"no decoder plugin is installed for {_uid_name(uid)}",
            attribute=_attr("TransferSyntaxUID"),
            value=str(uid),
            expected="a transfer syntax with an installed decoder (pip install 'galacto[serve]')",
        )
    return uid


def _guess_transfer_syntax(ds: Dataset, notes: list[str]) -> UID:
    """Transfer syntax for a data set without TransferSyntaxUID (see :func:`_transfer_syntax`)."""
    if _looks_encapsulated(ds):
        raise UnsupportedTransferSyntaxError(
            "compressed pixel data without a transfer syntax",
            attribute=_attr("TransferSyntaxUID"),
            value=ABSENT,
            expected="the TransferSyntaxUID of the compressed pixel data",
        )
    implicit, little = ds.original_encoding
    if implicit is None:
        uid = ExplicitVRLittleEndian
    elif not little:
        uid = ExplicitVRBigEndian
    else:
        uid = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    notes.append(f"TransferSyntaxUID (0002,0010) is absent; assumed {uid.name}")
    return uid


def _looks_encapsulated(ds: Dataset) -> bool:
    """True if the Pixel Data value starts with an item tag (encapsulated format)."""
    if "PixelData" not in ds:
        return False
    value = ds["PixelData"].value
    return isinstance(value, bytes) and value[:4] == b"\xfe\xff\x00\xe0"


def _require_pixel_data(ds: Dataset) -> None:
    """:class:`NoPixelDataError` unless integer Pixel Data (7FE0,0010) is present."""
    if "PixelData" in ds:
        return
    others = [kw for kw in ("FloatPixelData", "DoubleFloatPixelData") if kw in ds]
    raise NoPixelDataError(
        "no pixel data" + (f" (only {others[0]})" if others else ""),
        attribute=_attr("PixelData"),
        value=ABSENT,
        expected="one frame of integer pixel data",
    )


def _photometric(ds: Dataset, notes: list[str]) -> str:
    """MONOCHROME1/2 with SamplesPerPixel 1, else a color/photometric/header error."""
    value = _get(ds, "PhotometricInterpretation")
    if value is ABSENT:
        raise InvalidHeaderError(
            "missing required attribute",
            attribute=_attr("PhotometricInterpretation"),
            value=ABSENT,
            expected="MONOCHROME1 or MONOCHROME2",
        )
    photometric = _text(value)
    if photometric.upper() in _COLOR_PHOTOMETRICS or photometric.upper().startswith("YBR"):
        raise ColorImageError(
            "color images are not supported",
            attribute=_attr("PhotometricInterpretation"),
            value=photometric,
            expected="MONOCHROME1 or MONOCHROME2",
        )
    samples = _get(ds, "SamplesPerPixel")
    if samples is ABSENT:
        notes.append("SamplesPerPixel (0028,0002) is absent; assumed 1")
    elif _try_int(samples) != 1:
        raise ColorImageError(
            "only single-sample (grayscale) images are supported",
            attribute=_attr("SamplesPerPixel"),
            value=samples,
            expected="1",
        )
    if photometric not in _MONOCHROME:
        raise UnsupportedPhotometricError(
            "unsupported photometric interpretation",
            attribute=_attr("PhotometricInterpretation"),
            value=photometric,
            expected="MONOCHROME1 or MONOCHROME2",
        )
    return photometric


def _single_frame(ds: Dataset) -> None:
    """:class:`MultiFrameError` if NumberOfFrames > 1 (absent means 1)."""
    value = _get(ds, "NumberOfFrames")
    if value is ABSENT:
        return
    frames = _try_int(value)
    if frames is None or frames < 1:
        raise InvalidHeaderError(
            "invalid number of frames",
            attribute=_attr("NumberOfFrames"),
            value=value,
            expected="a positive integer (1)",
        )
    if frames > 1:
        raise MultiFrameError(
            "multi-frame images are not supported",
            attribute=_attr("NumberOfFrames"),
            value=frames,
            expected="1",
        )


def _size(ds: Dataset, max_pixels: int) -> tuple[int, int]:
    """``(rows, cols)``, both >= 1 and with ``rows * cols <= max_pixels``."""
    rows = _required_int(ds, "Rows", "a positive integer")
    cols = _required_int(ds, "Columns", "a positive integer")
    for keyword, number in (("Rows", rows), ("Columns", cols)):
        if number < 1:
            raise InvalidHeaderError(
                "empty image",
                attribute=_attr(keyword),
                value=number,
                expected="a positive integer",
            )
    if rows * cols > max_pixels:
        raise ImageTooLargeError(
            f"image too large ({rows * cols} pixels)",
            attribute=f"{_attr('Rows')} x {_attr('Columns')}",
            value=Found(f"{rows} x {cols}"),
            expected=f"at most {max_pixels} pixels",
        )
    return rows, cols


def _bits(ds: Dataset, notes: list[str]) -> tuple[int, int, int, int]:
    """``(bits_allocated, bits_stored, high_bit, pixel_representation)``, consistent."""
    allocated = _required_choice(ds, "BitsAllocated", (8, 16), "unsupported bits allocated",
                                 "8 or 16")
    stored = _required_int(ds, "BitsStored", f"8 to {allocated}")
    if not 8 <= stored <= allocated:
        raise InvalidHeaderError(
            "bits stored out of range" if stored < 8 else "bits stored exceed bits allocated",
            attribute=_attr("BitsStored"),
            value=stored,
            expected=f"8 to BitsAllocated ({allocated})",
        )
    representation = _required_choice(ds, "PixelRepresentation", (0, 1),
                                      "invalid pixel representation",
                                      "0 (unsigned) or 1 (signed)")
    high_bit_value = _get(ds, "HighBit")
    if high_bit_value is ABSENT:
        notes.append(f"HighBit (0028,0102) is absent; assumed {stored - 1}")
        return allocated, stored, stored - 1, representation
    high_bit = _try_int(high_bit_value)
    if high_bit != stored - 1:
        raise InvalidHeaderError(
            "high bit inconsistent with bits stored",
            attribute=_attr("HighBit"),
            value=high_bit_value,
            expected=f"BitsStored - 1 = {stored - 1}",
        )
    return allocated, stored, high_bit, representation


def _rescale(ds: Dataset) -> tuple[float, float]:
    """``(slope, intercept)`` of the Modality LUT; ``(1.0, 0.0)`` when absent."""
    result = []
    for keyword, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0)):
        value = _get(ds, keyword)
        try:
            number = default if value is ABSENT else _as_float(value)
        except ValueError as exc:
            raise InvalidHeaderError(
                "not a number",
                attribute=_attr(keyword),
                value=value,
                expected="one finite decimal number",
            ) from exc
        if not math.isfinite(number) or (keyword == "RescaleSlope" and number == 0.0):
            raise InvalidHeaderError(
                "invalid rescale",
                attribute=_attr(keyword),
                value=value,
                expected="a finite number" + (", not 0" if keyword == "RescaleSlope" else ""),
            )
        result.append(number)
    return result[0], result[1]


# ---- spacing -------------------------------------------------------------------------------


def _spacing_pair(ds: Dataset, keyword: str) -> tuple[object, tuple[float, float] | None]:
    """``(value as found or ABSENT, valid (row, col) spacing in mm or None)``."""
    try:
        value = _get(ds, keyword)
    except InvalidHeaderError as exc:
        return Found(str(exc.value)), None
    if value is ABSENT:
        return ABSENT, None
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    if len(items) != 2:
        return value, None
    try:
        pair = (_as_float(items[0]), _as_float(items[1]))
    except ValueError:
        return value, None
    return value, pair if all(_valid_spacing(v) for v in pair) else None


def _valid_spacing(value: float) -> bool:
    return math.isfinite(value) and 0.0 < value <= MAX_SPACING_MM


def _magnification(ds: Dataset, notes: list[str]) -> float | None:
    """A valid (finite, > 0) EstimatedRadiographicMagnificationFactor, else ``None``."""
    keyword = "EstimatedRadiographicMagnificationFactor"
    try:
        value = _get(ds, keyword)
        if value is ABSENT:
            return None
        factor = _as_float(value)
    except (InvalidHeaderError, ValueError):
        notes.append(f"ignored unreadable {_attr(keyword)}")
        return None
    if not (math.isfinite(factor) and factor > 0.0):
        notes.append(f"ignored invalid {_attr(keyword)} = {factor!r}; expected > 0")
        return None
    return factor


def _spacing(
    ds: Dataset, notes: list[str], *, allow_missing: bool
) -> tuple[tuple[float, float] | None, SpacingSource]:
    """Pixel spacing by precedence: PixelSpacing, ImagerPixelSpacing / magnification,
    ImagerPixelSpacing. Raises Missing/InvalidSpacingError unless ``allow_missing``.

    One rule for both encodings of the same geometry (PS3.3 10.7.1.3 and C.8.11.7): spacing
    at the detector is divided by EstimatedRadiographicMagnificationFactor, whether it came
    as ImagerPixelSpacing alone or as a PixelSpacing that merely repeats ImagerPixelSpacing
    without a PixelSpacingCalibrationType (vendors write either). A calibrated PixelSpacing
    (with PixelSpacingCalibrationType) or one that differs from ImagerPixelSpacing is taken
    as it is."""
    invalid: list[tuple[str, object]] = []
    found, pixel_spacing = _spacing_pair(ds, "PixelSpacing")
    found_imager, imager = _spacing_pair(ds, "ImagerPixelSpacing")
    if pixel_spacing is not None:
        if imager is not None and _detector_plane_copy(ds, pixel_spacing, imager):
            notes.append(f"{_attr('PixelSpacing')} equals {_attr('ImagerPixelSpacing')} and "
                         "is not calibrated (no PixelSpacingCalibrationType): taken as the "
                         "detector plane and corrected by the magnification factor")
            return _imager_spacing(ds, imager, notes)
        return pixel_spacing, "PixelSpacing"
    if found is not ABSENT:
        invalid.append(("PixelSpacing", found))
    if imager is None and found_imager is not ABSENT:
        invalid.append(("ImagerPixelSpacing", found_imager))
    for keyword, value in invalid:
        notes.append(f"ignored invalid {_attr(keyword)} = {value!r}; expected {_SPACING_EXPECTED}")
    if imager is not None:
        return _imager_spacing(ds, imager, notes)
    if allow_missing:
        notes.append("no usable pixel spacing; spacing_mm is None")
        return None, "none"
    if invalid:
        keyword, value = invalid[0]
        raise InvalidSpacingError(
            "invalid pixel spacing",
            attribute=_attr(keyword),
            value=value,
            expected=_SPACING_EXPECTED,
        )
    raise MissingSpacingError(
        "no pixel spacing", attribute=_SPACING_MISSING, value=ABSENT, expected=_SPACING_EXPECTED
    )


def _detector_plane_copy(ds: Dataset, pixel_spacing: tuple[float, float],
                         imager: tuple[float, float]) -> bool:
    """Whether PixelSpacing only repeats ImagerPixelSpacing (within 0.1 %), uncalibrated, in an
    object that states a magnification factor to correct it with."""
    if "PixelSpacingCalibrationType" in ds and _text(ds.get("PixelSpacingCalibrationType")):
        return False
    if "EstimatedRadiographicMagnificationFactor" not in ds:
        return False
    return all(abs(p - i) <= 1e-3 * i for p, i in zip(pixel_spacing, imager, strict=True))


def _imager_spacing(
    ds: Dataset, imager: tuple[float, float], notes: list[str]
) -> tuple[tuple[float, float], SpacingSource]:
    """ImagerPixelSpacing, divided by the magnification factor when that is valid."""
    factor = _magnification(ds, notes)
    if factor is None:
        return imager, "ImagerPixelSpacing"
    corrected = (imager[0] / factor, imager[1] / factor)
    if not all(_valid_spacing(v) for v in corrected):
        notes.append(
            f"ignored EstimatedRadiographicMagnificationFactor {factor!r}: it gives spacing "
            f"{corrected!r}"
        )
        return imager, "ImagerPixelSpacing"
    return corrected, "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"


# ---- laterality, view, orientation ---------------------------------------------------------


def _laterality(ds: Dataset, notes: list[str]) -> Laterality:
    """L/R from ImageLaterality, else Laterality; ``"U"`` otherwise (see ImageHeader)."""
    image_lat = _optional_text(ds, "ImageLaterality", notes)
    series_lat = _optional_text(ds, "Laterality", notes)
    keyword, value = (
        ("ImageLaterality", image_lat) if image_lat is not None else ("Laterality", series_lat)
    )
    if value is None:
        notes.append(
            "laterality unknown: ImageLaterality (0020,0062) and Laterality (0020,0060) are absent"
        )
        return "U"
    normalized = value.upper()
    if normalized == "L":
        result: Laterality = "L"
    elif normalized == "R":
        result = "R"
    else:
        notes.append(f"laterality unknown: {_attr(keyword)} is {value!r}; expected L or R")
        return "U"
    if image_lat is not None and series_lat is not None and series_lat.upper() != normalized:
        notes.append(
            f"ImageLaterality {image_lat!r} differs from Laterality {series_lat!r}; "
            "used ImageLaterality"
        )
    return result


def _view(ds: Dataset, notes: list[str]) -> tuple[str | None, tuple[str, ...]]:
    """``(view, modifiers)`` from ViewCodeSequence, else ViewPosition (see ImageHeader)."""
    coded, modifiers = _coded_view(ds, notes)
    position_text = _optional_text(ds, "ViewPosition", notes)
    position = position_text.upper() if position_text else None
    if position is not None and position not in VIEW_POSITIONS:
        notes.append(f"ignored unknown ViewPosition (0018,5101) {position_text!r}")
        position = None
    if coded is not None and position is not None and coded != position:
        notes.append(
            f"ViewCodeSequence says {coded} but ViewPosition says {position}; used ViewCodeSequence"
        )
    return (coded if coded is not None else position), modifiers


def _coded_view(ds: Dataset, notes: list[str]) -> tuple[str | None, tuple[str, ...]]:
    """View and modifier meanings from the first ViewCodeSequence item."""
    try:
        sequence = _get(ds, "ViewCodeSequence")
        if sequence is ABSENT or not isinstance(sequence, DicomSequence):
            return None, ()
        item = sequence[0]
        code = _optional_text(item, "CodeValue", notes)
        modifiers = tuple(
            _optional_text(m, "CodeMeaning", notes) or _optional_text(m, "CodeValue", notes) or ""
            for m in (item.get("ViewModifierCodeSequence") or [])
        )
    except Exception:  # the view is optional: a malformed sequence only costs a warning
        notes.append("ignored unreadable ViewCodeSequence (0054,0220)")
        return None, ()
    view = VIEW_CODES.get(code or "")
    if view is None:
        meaning = _optional_text(item, "CodeMeaning", notes)
        notes.append(f"ignored unknown view code {code!r} ({meaning!r}) in ViewCodeSequence")
    return view, tuple(m for m in modifiers if m)


def _patient_orientation(ds: Dataset, notes: list[str]) -> tuple[str, str] | None:
    """PatientOrientation as ``(row direction, column direction)``, or ``None`` (warning)."""
    try:
        value = _get(ds, "PatientOrientation")
    except InvalidHeaderError:
        value = Found("unreadable")
    if value is ABSENT:
        notes.append("PatientOrientation (0020,0020) is absent")
        return None
    items = (
        [_text(v).upper() for v in value]
        if isinstance(value, MultiValue | list | tuple)
        else [_text(value).upper()]
    )
    if len(items) != 2 or not all(_ORIENTATION_VALUE.match(v) for v in items):
        notes.append(
            f"ignored malformed PatientOrientation (0020,0020) {value!r}; "
            "expected two values like A\\R"
        )
        return None
    return items[0], items[1]


