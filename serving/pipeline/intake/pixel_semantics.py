"""Pixel semantics of the DICOM intake: how stored values map to attenuation, and which pixels
are not image.

:mod:`serving.pipeline.dicom_in` decodes the stored values; this module decides, from the
header, what they mean and turns them into :attr:`~serving.pipeline.dicom_in.Image.pixels`
(larger = more attenuation). The steps follow the grayscale pipeline of PS3.4 N.2 and the
modules of PS3.3 named below; every attribute that could change the polarity or the range of
the result is either honoured or named in a warning, never ignored silently.

1. **Stored range** (:func:`settle_stored_bits`, PS3.3 C.7.6.3.1.1, PS3.5 8.1.1 / 8.2): bits
   above High Bit of native and RLE data are not pixel data and are cleared (a warning when
   some were set and no overlay is declared in them). A JPEG, JPEG-LS or JPEG 2000 codestream
   whose samples are wider than Bits Stored (0028,0101) and hold values beyond its range keeps
   the codestream's precision (masking would wrap the values around), with a warning.
2. **Not image** (:class:`PixelPlan`): Pixel Padding Value (0028,0120), with Pixel Padding
   Range Limit (0028,0121) a range, in stored values (PS3.3 C.7.5.1.1.2), and the Display
   Shutter (0018,1600..1620, PS3.3 C.7.6.11: rectangular, circular, polygonal). These pixels
   are masked before anything else and end up at the image's lowest attenuation (step 5).
3. **Modality LUT** (PS3.3 C.11.1): the Modality LUT Sequence (0028,3000) when present
   (pydicom's ``apply_modality_lut``; it wins over Rescale Slope/Intercept, as in pydicom and
   DCMTK), else ``stored * RescaleSlope + RescaleIntercept``. MG and DX images should have
   neither (PS3.3 C.8.11.3.1.2: identity rescale, no Modality LUT Module): applied as found,
   with a warning.
4. **Polarity** (:func:`plan_pixels`): inverted as ``max - v`` (PS3.3 C.11.6.1.2, ``max`` the
   largest value the modality stage can give) when Presentation LUT Shape (2050,0020) is
   INVERSE, or when it is absent and Photometric Interpretation (0028,0004) is MONOCHROME1
   (C.7.6.3.1.2). The shape, when present, wins over the Photometric Interpretation: it is the
   last stage of the pipeline and its output is P-Values; DCMTK renders it so.
   Pixel Intensity Relationship Sign (0028,1041) (C.8.11.3.1.2: +1 = lower stored values
   mean less X-ray intensity, i.e. more attenuation; -1 = higher stored values mean more
   attenuation) is checked against the result. When these attributes disagree (the header
   contradicts itself), the image decides (:func:`content_polarity`: in a mammogram the air
   around the breast is the lowest attenuation, covers much of the image border and has the
   breast on one side of it); when the image does not tell, the PS3.3 rule above decides.
   Either way a warning names the attributes and the decision.
5. **Masked pixels** take the lowest value of the unmasked pixels (the image's own air), so
   the breast segmentation and the percentiles of :mod:`serving.pipeline.preprocess` see
   them as background; the bounding box of the unmasked pixels is returned too
   (``Image.image_area``): the breast crop and the orientation test stay inside it, so a
   padded frame around an image gives the same network input as the image alone.

Not applied, by decision: the VOI LUT stage (Window Center/Width with VOI LUT Function
LINEAR, LINEAR_EXACT or SIGMOID, VOI LUT Sequence) is a display mapping that never reverses
polarity for windows; the detector works on the values before it (percentile normalisation
makes offset and scale irrelevant, and a window would clip the breast); a VOI LUT Sequence
that decreases is named in a warning. Pixel Intensity Relationship (0028,1040) LIN/LOG is not
converted (C.8.11.3.1.2: not a presentation transform); LIN is named in a warning because the
detector was trained on log-like images. A Presentation LUT Sequence (2050,0010) in an image
(PS3.3 C.11.4 defines it for presentation states and print) is named and not applied.

This module never imports torch, monai or ``training``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from serving.pipeline.arrays import BoolArray
from serving.pipeline.errors import ABSENT, Found, IntakeError, InvalidHeaderError
from serving.pipeline.intake.values import as_float, as_int, attr, get, get_noted, text, try_int

__all__ = [
    "MG_DX_SOP_CLASSES",
    "ModalityLut",
    "PixelPlan",
    "Shutter",
    "apply_plan",
    "content_polarity",
    "plan_pixels",
    "settle_stored_bits",
    "stored_range",
]

#: SOP classes whose IOD has the DX Image Module (PS3.3 C.8.11.3): identity rescale, no
#: Modality LUT, Presentation LUT Shape paired with the Photometric Interpretation.
MG_DX_SOP_CLASSES: Final = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.1.2",
        "1.2.840.10008.5.1.4.1.1.1.2.1",
        "1.2.840.10008.5.1.4.1.1.1.1",
        "1.2.840.10008.5.1.4.1.1.1.1.1",
    }
)

#: :func:`content_polarity`: width of the border examined (share of the shorter side), width
#: of the histogram bins that find the air level (share of the value span), the share of the
#: border the air bin must hold, how far out the air level must lie (share of the span from
#: either end), and the share of the other pixels that must lie beyond it.
_BORDER: Final = 0.03
_AIR_BAND: Final = 0.02
_MIN_SHARE: Final = 0.2
_END: Final = 0.3
_BEYOND: Final = 0.8

FloatArray = npt.NDArray[np.float32]


# --------------------------------------------------------------------------------------------
# The plan (header only)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModalityLut:
    """A checked Modality LUT Sequence item (PS3.3 C.11.1.1.1).

    Attributes:
        entries: number of entries (the descriptor's 0 means 65536).
        first_mapped: first stored value mapped (smaller ones take the first entry).
        bits: bits per entry, 8 or 16; the output range is ``[0, 2**bits - 1]``.
        direction: +1 when the last entry exceeds the first, -1 when below, 0 when flat or the
            data were not read (header only).
    """

    entries: int
    first_mapped: int
    bits: int
    direction: int


@dataclass(frozen=True)
class Shutter:
    """One display shutter (PS3.3 C.7.6.11), in 1-based stored pixel coordinates.

    Attributes:
        shape: ``"RECTANGULAR"``, ``"CIRCULAR"`` or ``"POLYGONAL"``.
        values: rectangular ``(left col, right col, upper row, lower row)``; circular
            ``(center row, center col, radius)``; polygonal ``(row, col, row, col, ...)``.
    """

    shape: str
    values: tuple[float, ...]


@dataclass(frozen=True)
class PixelPlan:
    """How the stored values of one image become intake pixels (see the module docstring).

    Attributes:
        slope, intercept: the rescale applied (1 and 0 when a Modality LUT is applied).
        lut: the Modality LUT applied instead of the rescale, or ``None``.
        invert: the polarity the header's rule gives (``max - v`` after the modality stage).
        conflict: when the polarity attributes disagree, what disagrees (the pixels then
            decide, :func:`apply_plan`); ``None`` when they agree.
        votes: for a conflict, ``attribute -> whether it asks for inversion``.
        rule: the attribute the header's rule followed, for the warning.
        padding: inclusive ``(low, high)`` stored values that are padding, or ``None``.
        shutters: display shutters; pixels outside any of them are not image.
    """

    slope: float
    intercept: float
    lut: ModalityLut | None
    invert: bool
    conflict: str | None
    votes: tuple[tuple[str, bool], ...]
    rule: str
    padding: tuple[int, int] | None
    shutters: tuple[Shutter, ...]

    def modality_range(self, bits_stored: int, pixel_representation: int) -> tuple[float, float]:
        """``(min, max)`` the modality stage can output for these stored bits."""
        if self.lut is not None:
            return 0.0, float(2**self.lut.bits - 1)
        lo, hi = stored_range(bits_stored, pixel_representation)
        ends = (lo * self.slope + self.intercept, hi * self.slope + self.intercept)
        return min(ends), max(ends)

    def value_range(
        self, bits_stored: int, pixel_representation: int, invert: bool | None = None
    ) -> tuple[float, float]:
        """Range of the intake pixels: the modality range, or ``(0, max - min)`` inverted."""
        low, high = self.modality_range(bits_stored, pixel_representation)
        if self.invert if invert is None else invert:
            return 0.0, high - low
        return low, high


def stored_range(bits_stored: int, pixel_representation: int) -> tuple[int, int]:
    """Inclusive ``(min, max)`` of a stored value (PS3.3 C.7.6.3.1.1)."""
    if pixel_representation:
        return -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
    return 0, 2**bits_stored - 1


def plan_pixels(
    ds: Dataset,
    *,
    photometric: str,
    bits_stored: int,
    pixel_representation: int,
    slope: float,
    intercept: float,
    sop_class_uid: str | None,
    notes: list[str],
    load_luts: bool,
) -> PixelPlan:
    """Read every attribute that decides what the stored values mean (header only).

    Args:
        ds: the data set.
        photometric: its checked Photometric Interpretation, MONOCHROME1 or MONOCHROME2.
        bits_stored, pixel_representation: the checked pixel format.
        slope, intercept: the checked Rescale Slope / Intercept (1 and 0 when absent).
        sop_class_uid: the SOP class, for the MG/DX rules.
        notes: warnings are appended here.
        load_luts: read LUT data (False in :func:`~serving.pipeline.dicom_in.read_header`,
            which leaves long values unread): LUT directions are then unknown.

    Raises:
        InvalidHeaderError: a Modality LUT Sequence that cannot be applied.
    """
    mg_dx = sop_class_uid in MG_DX_SOP_CLASSES
    lut = _modality_lut(ds, mg_dx, slope, intercept, notes, load_luts)
    if lut is not None:
        slope, intercept = 1.0, 0.0
    else:
        _rescale_notes(slope, intercept, mg_dx, notes)
    modality_direction = lut.direction if lut is not None else (1 if slope > 0 else -1)
    invert, conflict, votes, rule = _polarity(ds, photometric, modality_direction, notes)
    _intensity_relationship_note(ds, notes)
    _voi_note(ds, notes, load_luts)
    padding = _padding(ds, bits_stored, pixel_representation, notes)
    shutters = _shutters(ds, notes)
    return PixelPlan(
        slope=slope,
        intercept=intercept,
        lut=lut,
        invert=invert,
        conflict=conflict,
        votes=votes,
        rule=rule,
        padding=padding,
        shutters=shutters,
    )


def _rescale_notes(slope: float, intercept: float, mg_dx: bool, notes: list[str]) -> None:
    if mg_dx and (slope, intercept) != (1.0, 0.0):
        notes.append(
            f"{attr('RescaleSlope')} {slope:g} / {attr('RescaleIntercept')} {intercept:g} are not "
            "the identity PS3.3 C.8.11.3.1.2 requires for MG and DX images; applied as found"
            + (" (the negative slope reverses the stored values)" if slope < 0 else "")
        )
    elif slope < 0:
        notes.append(
            f"{attr('RescaleSlope')} is negative ({slope:g}): the Modality LUT reverses the stored "
            "values (applied, PS3.3 C.11.1)"
        )


def _modality_lut(
    ds: Dataset, mg_dx: bool, slope: float, intercept: float, notes: list[str], load: bool
) -> ModalityLut | None:
    """The checked Modality LUT Sequence item, or ``None`` when there is none."""
    sequence = get_noted(ds, "ModalityLUTSequence", notes)
    if sequence is ABSENT:
        return None
    where = f"{attr('ModalityLUTSequence')} > {attr('LUTDescriptor')}"
    try:
        items = list(sequence)  # type: ignore[call-overload]
        item = items[0]
        descriptor = [as_int(v) for v in item.LUTDescriptor]
    except Exception as exc:
        raise InvalidHeaderError(
            "unreadable Modality LUT", attribute=where, value=Found(f"{type(exc).__name__}"),
            expected="one item with a 3-value LUT Descriptor and LUT Data (PS3.3 C.11.1.1.1)",
        ) from exc
    if len(descriptor) != 3 or descriptor[2] not in (8, 16) or not 0 <= descriptor[0] < 65536:
        raise InvalidHeaderError(
            "unsupported Modality LUT", attribute=where, value=descriptor,
            expected="(entries, first value mapped, 8 or 16 bits per entry) (PS3.3 C.11.1.1.1)",
        )
    entries = descriptor[0] or 65536
    direction = 0
    if load:
        _lut_values(item, entries, descriptor[2])  # refuses a LUT shorter than its descriptor
        ends = _modality(np.array([descriptor[1], descriptor[1] + entries - 1]),
                         _LUT_ONLY, ds)
        direction = int(np.sign(float(ends[1]) - float(ends[0])))
    if len(items) > 1:
        notes.append(f"{attr('ModalityLUTSequence')} has {len(items)} items; the first is applied")
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        notes.append(
            f"{attr('RescaleSlope')} {slope:g} / {attr('RescaleIntercept')} {intercept:g} ignored: "
            f"{attr('ModalityLUTSequence')} is applied instead (PS3.3 C.11.1 allows one of them; "
            "pydicom and DCMTK use the LUT)"
        )
    notes.append(
        f"{attr('ModalityLUTSequence')} applied ({entries} entries, {descriptor[2]} bits"
        + (", decreasing: it reverses the stored values" if direction < 0 else "")
        + ")"
        + ("; PS3.3 C.8.11.3.1.2 does not allow it in MG and DX images" if mg_dx else "")
    )
    return ModalityLut(entries=entries, first_mapped=descriptor[1], bits=descriptor[2],
                       direction=direction)


def _lut_values(item: Dataset, entries: int, bits: int) -> npt.NDArray[np.int64]:
    """The LUT Data of a LUT item as ints (US list, or OW / OB bytes); refused when short."""
    try:
        value = item["LUTData"].value
        if isinstance(value, bytes | bytearray):
            dtype = "<u1" if bits == 8 and len(value) < 2 * entries else "<u2"
            data = np.frombuffer(value, dtype=dtype).astype(np.int64)
        else:
            data = np.asarray(
                list(value) if isinstance(value, MultiValue | list | tuple) else [value],
                dtype=np.int64,
            )
    except Exception as exc:
        raise InvalidHeaderError(
            "unreadable LUT Data", attribute=attr("LUTData"),
            value=Found(f"{type(exc).__name__}: {exc}"), expected="the LUT's entries",
        ) from exc
    if data.size < entries:
        raise InvalidHeaderError(
            "LUT Data shorter than its descriptor", attribute=attr("LUTData"),
            value=Found(f"{data.size} entries"), expected=f"{entries} entries (LUT Descriptor)",
        )
    return data[:entries]


def _shape(ds: Dataset, notes: list[str]) -> tuple[bool | None, str]:
    """``(inverse?, value)`` of Presentation LUT Shape; ``(None, ...)`` when absent or unknown."""
    value = get_noted(ds, "PresentationLUTShape", notes)
    if value is ABSENT:
        return None, ""
    shape = text(value).upper()
    if shape in ("IDENTITY", "INVERSE"):
        return shape == "INVERSE", shape
    notes.append(
        f"ignored {attr('PresentationLUTShape')} {shape!r} (only IDENTITY and INVERSE are defined "
        "for images, PS3.3 C.11.6.1.2); polarity from PhotometricInterpretation (0028,0004)"
    )
    return None, shape


def _sign(ds: Dataset, notes: list[str]) -> int | None:
    """Pixel Intensity Relationship Sign, +1 or -1; ``None`` when absent or invalid."""
    value = get_noted(ds, "PixelIntensityRelationshipSign", notes)
    if value is ABSENT:
        return None
    sign = try_int(value)
    if sign in (1, -1):
        return sign
    notes.append(f"ignored {attr('PixelIntensityRelationshipSign')} {value!r} (expected 1 or -1)")
    return None


def _polarity(
    ds: Dataset, photometric: str, modality_direction: int, notes: list[str]
) -> tuple[bool, str | None, tuple[tuple[str, bool], ...], str]:
    """``(invert, conflict, votes, rule)``: the polarity by PS3.3's rule, and what disagrees."""
    pi_attr, shape_attr = attr("PhotometricInterpretation"), attr("PresentationLUTShape")
    sign_attr = attr("PixelIntensityRelationshipSign")
    pi_invert = photometric == "MONOCHROME1"
    shape_invert, shape = _shape(ds, notes)
    sequence = get_noted(ds, "PresentationLUTSequence", notes)
    if sequence is not ABSENT:
        notes.append(
            f"{attr('PresentationLUTSequence')} is not applied (PS3.3 C.11.4 defines it for "
            "presentation states and print); polarity from the Presentation LUT Shape / "
            "Photometric Interpretation"
        )
    votes: list[tuple[str, bool]] = [(f"{pi_attr} {photometric}", pi_invert)]
    conflicts: list[str] = []
    if shape_invert is None:
        invert, rule = pi_invert, f"{pi_attr} (PS3.3 C.7.6.3.1.2)"
    else:
        invert = shape_invert
        rule = (f"{shape_attr} (the last stage of the grayscale pipeline, PS3.3 C.11.6.1.2, "
                "as DCMTK renders it)")
        votes.append((f"{shape_attr} {shape}", shape_invert))
        if shape_invert != pi_invert:
            conflicts.append(
                f"{shape_attr} {shape} contradicts {pi_attr} {photometric} (PS3.3 C.8.11.3 "
                "pairs MONOCHROME1 with INVERSE and MONOCHROME2 with IDENTITY)"
            )
    sign = _sign(ds, notes)
    if sign is not None and modality_direction != 0:
        # -1: higher stored values = less X-ray intensity = more attenuation (C.8.11.3.1.2).
        more_attenuation_up = (sign == -1) == (modality_direction > 0)
        sign_invert = not more_attenuation_up
        votes.append((f"{sign_attr} {sign}", sign_invert))
        if sign_invert != invert:
            conflicts.append(
                f"{sign_attr} {sign} (larger stored values mean "
                f"{'more' if sign == -1 else 'less'} attenuation, PS3.3 C.8.11.3.1.2) contradicts "
                f"{shape_attr if shape_invert is not None else pi_attr}"
            )
    if not conflicts:
        return invert, None, (), rule
    conflict = "; ".join(conflicts)
    notes.append(f"{conflict}: polarity decided from the image when decoded, else by {rule}")
    return invert, conflict, tuple(votes), rule


def _intensity_relationship_note(ds: Dataset, notes: list[str]) -> None:
    value = get_noted(ds, "PixelIntensityRelationship", notes)
    if value is not ABSENT and text(value).upper() == "LIN":
        notes.append(
            f"{attr('PixelIntensityRelationship')} is LIN: stored values are proportional to the "
            "X-ray intensity, not log-like as the images the detector was trained on; used as "
            "found (PS3.3 C.8.11.3.1.2: not a presentation transform)"
        )


def _voi_note(ds: Dataset, notes: list[str], load: bool) -> None:
    """Warn when a VOI LUT Sequence would reverse the display (VOI is never applied)."""
    sequence = get_noted(ds, "VOILUTSequence", notes)
    if sequence is ABSENT or not load:
        return
    try:
        item = next(iter(sequence))  # type: ignore[call-overload]
        descriptor = [as_int(v) for v in item.LUTDescriptor]
        data = _lut_values(item, descriptor[0] or 65536, descriptor[2])
    except (IntakeError, Exception):
        notes.append(f"ignored unreadable {attr('VOILUTSequence')} (display only, not applied)")
        return
    if int(data[-1]) < int(data[0]):
        notes.append(
            f"{attr('VOILUTSequence')} decreases (it would reverse the display); VOI LUTs are "
            "display-only and not applied, polarity comes from the attributes above"
        )


def _padding(
    ds: Dataset, bits_stored: int, pixel_representation: int, notes: list[str]
) -> tuple[int, int] | None:
    """Inclusive stored-value range of padding (PS3.3 C.7.5.1.1.2), or ``None``."""
    value = get_noted(ds, "PixelPaddingValue", notes)
    limit = get_noted(ds, "PixelPaddingRangeLimit", notes)
    if value is ABSENT:
        if limit is not ABSENT:
            notes.append(f"ignored {attr('PixelPaddingRangeLimit')} without "
                         f"{attr('PixelPaddingValue')}")
        return None
    lo, hi = stored_range(bits_stored, pixel_representation)
    ends = []
    for keyword, found in (("PixelPaddingValue", value), ("PixelPaddingRangeLimit", limit)):
        if found is ABSENT:
            continue
        number = _padding_number(found, pixel_representation)
        if number is None or not lo <= number <= hi:
            notes.append(
                f"ignored {attr(keyword)} {found!r}: not a stored value of this image "
                f"({lo}..{hi}); no pixel is treated as padding"
            )
            return None
        ends.append(number)
    return min(ends), max(ends)


def _padding_number(value: object, pixel_representation: int) -> int | None:
    """A padding value as int (US or SS; raw bytes read with the pixel representation)."""
    if isinstance(value, bytes) and len(value) in (2, 4):
        return int.from_bytes(value[:2], "little", signed=bool(pixel_representation))
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if value else None
    return try_int(value)


def _shutters(ds: Dataset, notes: list[str]) -> tuple[Shutter, ...]:
    """The display shutters (PS3.3 C.7.6.11); unusable ones are named and skipped."""
    value = get_noted(ds, "ShutterShape", notes)
    if value is ABSENT:
        return ()
    shapes = [s.upper() for s in text(value).split("\\") if s]
    needs = {
        "RECTANGULAR": ("ShutterLeftVerticalEdge", "ShutterRightVerticalEdge",
                        "ShutterUpperHorizontalEdge", "ShutterLowerHorizontalEdge"),
        "CIRCULAR": ("CenterOfCircularShutter", "RadiusOfCircularShutter"),
        "POLYGONAL": ("VerticesOfThePolygonalShutter",),
    }
    shutters = []
    for shape in shapes:
        if shape not in needs:
            notes.append(f"{attr('ShutterShape')} {shape} is not applied (only RECTANGULAR, "
                         "CIRCULAR and POLYGONAL shutters are)")
            continue
        try:
            numbers: list[float] = []
            for keyword in needs[shape]:
                found = get(ds, keyword)
                items = list(found) if isinstance(found, MultiValue | list | tuple) else [found]
                numbers.extend(as_float(v) for v in items)
            ok = {"RECTANGULAR": len(numbers) == 4, "CIRCULAR": len(numbers) == 3,
                  "POLYGONAL": len(numbers) >= 6 and len(numbers) % 2 == 0}[shape]
            if not ok or not all(np.isfinite(numbers)):
                raise ValueError(numbers)
        except (IntakeError, ValueError, TypeError):
            notes.append(f"ignored the {shape} display shutter: "
                         f"{', '.join(attr(k) for k in needs[shape])} unusable")
            continue
        shutters.append(Shutter(shape, tuple(numbers)))
    return tuple(shutters)


# --------------------------------------------------------------------------------------------
# Stored values
# --------------------------------------------------------------------------------------------


def settle_stored_bits(
    array: npt.NDArray[np.integer[Any]],
    *,
    bits_stored: int,
    pixel_representation: int,
    encapsulated: bool,
    codestream_bits: int | None,
    overlay_in_high_bits: bool,
    codec: str,
    notes: list[str],
) -> tuple[npt.NDArray[np.integer[Any]], int]:
    """Stored values decoded *without* clearing unused bits -> ``(values, effective bits)``.

    Native and RLE data: bits above High Bit are cleared (sign-extended when signed), as
    PS3.5 8.1.1 and pydicom do; a warning counts the pixels where they were set unless an
    overlay is declared in them (a header that under-states the data's width shows here).
    JPEG / JPEG-LS / JPEG 2000: when values exceed Bits Stored's range and the codestream
    declares a wider precision that holds them, the codestream's precision is kept (the
    effective bits returned) with a warning; otherwise they are cleared like native data.
    """
    lo, hi = stored_range(bits_stored, pixel_representation)
    if array.size == 0 or bits_stored >= 8 * array.dtype.itemsize:
        return array, bits_stored
    found_lo, found_hi = int(array.min()), int(array.max())
    if lo <= found_lo and found_hi <= hi:
        return array, bits_stored
    if encapsulated and codestream_bits is not None and codestream_bits > bits_stored:
        wide_lo, wide_hi = stored_range(codestream_bits, pixel_representation)
        if wide_lo <= found_lo and found_hi <= wide_hi:
            notes.append(
                f"{attr('BitsStored')} is {bits_stored} but the {codec} codestream has "
                f"{codestream_bits}-bit samples with values {found_lo}..{found_hi}: its "
                f"precision was used (clearing the bits above {bits_stored} would wrap the "
                "values around)"
            )
            return array, codestream_bits
    cleared = _clear_unused_bits(array, bits_stored, pixel_representation)
    if encapsulated or not overlay_in_high_bits:
        unusual = _unusual_high_bits(array, cleared, bits_stored, pixel_representation)
        if unusual:
            notes.append(
                f"{unusual} pixels ({100 * unusual / array.size:.2g} %) have bits set above "
                f"{attr('HighBit')} {bits_stored - 1}; cleared (PS3.5 8.1.1: not pixel data). "
                f"If the data are wider than {attr('BitsStored')} {bits_stored} says, the "
                "image is misread"
            )
    return cleared, bits_stored


def _clear_unused_bits(
    array: npt.NDArray[np.integer[Any]], bits_stored: int, pixel_representation: int
) -> npt.NDArray[np.integer[Any]]:
    """Bits above ``bits_stored`` cleared (unsigned) or set to the sign (signed)."""
    width = 8 * array.dtype.itemsize
    kind = "i" if pixel_representation else "u"
    out = array.astype(f"{kind}{array.dtype.itemsize}", copy=True)
    shift = width - bits_stored
    np.left_shift(out, shift, out=out)
    np.right_shift(out, shift, out=out)
    return out


def _unusual_high_bits(
    raw: npt.NDArray[np.integer[Any]],
    cleared: npt.NDArray[np.integer[Any]],
    bits_stored: int,
    pixel_representation: int,
) -> int:
    """Pixels whose bits above ``bits_stored`` are neither zero nor a sign extension."""
    unsigned = raw.view(f"u{raw.dtype.itemsize}")
    high = unsigned >> bits_stored
    unusual = high != 0
    if pixel_representation:
        all_ones = (1 << (8 * raw.dtype.itemsize - bits_stored)) - 1
        unusual &= ~((high == all_ones) & (cleared < 0))
    return int(np.count_nonzero(unusual))


# --------------------------------------------------------------------------------------------
# Applying the plan
# --------------------------------------------------------------------------------------------


def apply_plan(
    stored: npt.NDArray[np.integer[Any]],
    plan: PixelPlan,
    ds: Dataset,
    *,
    bits_stored: int,
    pixel_representation: int,
    scale: int,
    notes: list[str],
) -> tuple[FloatArray, tuple[float, float], tuple[int, int, int, int] | None]:
    """Stored values -> ``(read-only float32 pixels, their value range, image area)``; see
    the module docstring for the steps. The image area is ``(row0, row1, col0, col1)``, end
    exclusive, bounding the pixels that are image (not padding, inside the shutters), or
    ``None`` when every pixel is image.

    Args:
        stored: ``(rows, cols)`` stored values (from :func:`settle_stored_bits`).
        plan: from :func:`plan_pixels` (with ``load_luts=True``).
        ds: the data set (its Modality LUT Sequence, when the plan applies one).
        bits_stored: the effective bits of ``stored`` (:func:`settle_stored_bits`).
        pixel_representation: 0 unsigned, 1 signed.
        scale: stored pixels per array element along each axis (reduced JPEG 2000 decode),
            for the shutter geometry.
        notes: warnings are appended here.
    """
    valid = _not_image(stored, plan, scale, notes)
    pixels = _modality(stored, plan, ds)
    invert = plan.invert
    if plan.conflict is not None:
        invert = _resolve(pixels, valid, plan, notes)
    value_range = plan.value_range(bits_stored, pixel_representation, invert)
    if invert:
        _, high = plan.modality_range(bits_stored, pixel_representation)
        np.subtract(np.float32(high), pixels, out=pixels)
    area = None
    if valid is not None:
        fill = float(pixels[valid].min()) if valid.any() else value_range[0]
        pixels[~valid] = np.float32(fill)
        rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
        if rows.size:
            area = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    pixels.setflags(write=False)
    return pixels, value_range, area


#: A plan that only applies the data set's Modality LUT Sequence (for its direction).
_LUT_ONLY: Final = PixelPlan(
    slope=1.0, intercept=0.0, lut=ModalityLut(entries=0, first_mapped=0, bits=16, direction=0),
    invert=False, conflict=None, votes=(), rule="", padding=None, shutters=(),
)


def _modality(stored: npt.NDArray[np.integer[Any]], plan: PixelPlan, ds: Dataset) -> FloatArray:
    """The modality stage as float32 (a new, writable array)."""
    if plan.lut is not None:
        from pydicom.pixels import apply_modality_lut

        try:
            return np.asarray(apply_modality_lut(stored, ds), dtype=np.float32).copy()
        except Exception as exc:
            raise InvalidHeaderError(
                "the Modality LUT cannot be applied", attribute=attr("ModalityLUTSequence"),
                value=Found(f"{type(exc).__name__}: {exc}"),
                expected="a LUT pydicom's apply_modality_lut accepts (PS3.3 C.11.1.1.1)",
            ) from exc
    pixels = stored.astype(np.float32)
    if plan.slope != 1.0:
        pixels *= np.float32(plan.slope)
    if plan.intercept != 0.0:
        pixels += np.float32(plan.intercept)
    return pixels


def _resolve(pixels: FloatArray, valid: BoolArray | None, plan: PixelPlan,
             notes: list[str]) -> bool:
    """Decide a polarity conflict from the image (see :func:`content_polarity`)."""
    verdict = content_polarity(pixels, valid)
    if verdict == 0:
        notes.append("polarity: the image does not show which way attenuation runs; "
                     f"followed {plan.rule}")
        return plan.invert
    invert = verdict < 0
    agreeing = [name for name, vote in plan.votes if vote == invert]
    notes.append(
        f"polarity decided from the image: its air lies at the {'high' if invert else 'low'} "
        f"end of the values, so they were {'' if invert else 'not '}inverted, as "
        f"{' and '.join(agreeing) or 'no attribute'} say{'s' if len(agreeing) == 1 else ''}"
    )
    return invert


def content_polarity(pixels: npt.NDArray[np.floating[Any]], valid: BoolArray | None) -> int:
    """Which way attenuation runs in a mammogram: +1 when the air around the breast (the
    lowest attenuation) has low values, -1 when it has high values, 0 when the image does not
    tell.

    On a subsample of about 256 pixels along the shorter side, inside the bounding box of the
    ``valid`` pixels: the air level is the most common value of the border (the outer
    :data:`_BORDER` of each side; air surrounds the breast on three sides, the chest wall is
    one), in bins of :data:`_AIR_BAND` of the 0.5-99.5 percentile span. Air decides when it
    holds at least :data:`_MIN_SHARE` of the border, lies in the outer :data:`_END` of the
    span, that end holds at least twice as much of the border as the other end, and at least
    :data:`_BEYOND` of the pixels that are not air lie on the other side of it (the breast).
    """
    step = max(1, min(pixels.shape) // 256)
    small = np.asarray(pixels[::step, ::step], dtype=np.float32)
    ok = np.ones(small.shape, dtype=bool) if valid is None else valid[::step, ::step]
    rows, cols = np.flatnonzero(ok.any(axis=1)), np.flatnonzero(ok.any(axis=0))
    if rows.size < 8 or cols.size < 8:
        return 0
    small = small[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    ok = ok[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    values = small[ok]
    lo, hi = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    if not hi > lo:
        return 0
    k = max(1, round(_BORDER * min(small.shape)))
    ring = ok.copy()
    ring[k:-k, k:-k] = False
    border = np.clip(small[ring], lo, hi)
    bins = round(1 / _AIR_BAND)
    counts, edges = np.histogram(border, bins=bins, range=(lo, hi))
    mode = int(np.argmax(counts))
    if counts[mode] < _MIN_SHARE * border.size:
        return 0
    air_lo, air_hi = float(edges[max(mode - 1, 0)]), float(edges[min(mode + 2, bins)])
    above = int(np.count_nonzero(values > air_hi))
    below = int(np.count_nonzero(values < air_lo))
    position = (float(edges[mode]) + float(edges[mode + 1])) / 2
    position = (position - lo) / (hi - lo)
    low_end = int(np.count_nonzero(border <= lo + _END * (hi - lo)))
    high_end = int(np.count_nonzero(border >= hi - _END * (hi - lo)))
    if position <= _END and above >= _BEYOND * (above + below) and low_end >= 2 * high_end:
        return 1
    if position >= 1 - _END and below >= _BEYOND * (above + below) and high_end >= 2 * low_end:
        return -1
    return 0


def _not_image(
    stored: npt.NDArray[np.integer[Any]], plan: PixelPlan, scale: int, notes: list[str]
) -> BoolArray | None:
    """True where the pixel is image; ``None`` when every pixel is."""
    valid: BoolArray | None = None
    if plan.padding is not None:
        lo, hi = plan.padding
        padded = (stored >= lo) & (stored <= hi)
        count = int(np.count_nonzero(padded))
        if count:
            valid = ~padded
            what = f"value {lo}" if lo == hi else f"values {lo}..{hi}"
            notes.append(
                f"{count} padding pixels ({100 * count / stored.size:.2g} %, "
                f"{attr('PixelPaddingValue')}"
                f"{' / ' + attr('PixelPaddingRangeLimit') if lo != hi else ''}: stored {what}) "
                "set to the image's lowest attenuation (PS3.3 C.7.5.1.1.2)"
            )
    if plan.shutters:
        inside = _shutter_mask(stored.shape, plan.shutters, scale)
        count = int(np.count_nonzero(~inside))
        if count:
            valid = inside if valid is None else valid & inside
            notes.append(
                f"{count} pixels ({100 * count / stored.size:.2g} %) outside the display shutter "
                f"({attr('ShutterShape')} "
                f"{'/'.join(s.shape for s in plan.shutters)}) set to the image's lowest "
                "attenuation (PS3.3 C.7.6.11)"
            )
    return valid


def _shutter_mask(shape: tuple[int, ...], shutters: tuple[Shutter, ...], scale: int) -> BoolArray:
    """True inside every shutter (the visible area); pixel centres in 1-based stored units."""
    rows = (np.arange(shape[0]) * scale + (scale + 1) / 2)[:, None]
    cols = (np.arange(shape[1]) * scale + (scale + 1) / 2)[None, :]
    inside = np.ones((shape[0], shape[1]), dtype=bool)
    for shutter in shutters:
        v = shutter.values
        if shutter.shape == "RECTANGULAR":
            inside &= (cols >= v[0]) & (cols <= v[1]) & (rows >= v[2]) & (rows <= v[3])
        elif shutter.shape == "CIRCULAR":
            inside &= (rows - v[0]) ** 2 + (cols - v[1]) ** 2 <= v[2] ** 2
        else:
            inside &= _polygon_mask(shape, v, scale)
    return inside


def _polygon_mask(shape: tuple[int, ...], vertices: tuple[float, ...], scale: int) -> BoolArray:
    """Inside of a polygon given as 1-based (row, col) pairs of stored pixels."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    canvas = PILImage.new("1", (shape[1], shape[0]), 0)
    points = [((c - 1) / scale, (r - 1) / scale) for r, c in zip(vertices[::2], vertices[1::2],
                                                                 strict=True)]
    ImageDraw.Draw(canvas).polygon(points, fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)
