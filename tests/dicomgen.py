"""Small synthetic DICOM images for tests (shared by every test module that needs DICOM).

Typical use::

    from tests.dicomgen import make_dataset, to_bytes, MG_FOR_PRESENTATION
    ds = make_dataset(rows=64, cols=48, bits_stored=12, laterality="R", view="MLO")
    data = to_bytes(ds, JPEG2000Lossless)          # Part 10 bytes, pixel data compressed
    stored = stored_pixels(ds)                      # the (rows, cols) stored values put in

Conventions:

- :func:`make_dataset` returns a pydicom ``Dataset`` with a valid file meta (Explicit VR Little
  Endian, uncompressed pixel data), the Image Pixel module filled consistently, and the
  mammography attributes (spacing, laterality, view, orientation) the intake reads. Every such
  attribute has a keyword parameter; ``None`` leaves the attribute out.
- Stored pixel values are random (seeded) over the full BitsStored / PixelRepresentation range,
  or the array you pass as ``pixels`` (shape ``(rows, cols)``, any integer dtype).
- :func:`to_bytes` / :func:`write` serialize with any transfer syntax: native ones by pydicom's
  writer, RLE / JPEG-LS / JPEG 2000 with ``Dataset.compress``, JPEG (process 1, 2/4, 14, 14 SV1)
  with DCMTK's ``dcmcjpeg`` (see :func:`require_executable`).
- :func:`set_raw` puts a malformed value into a data set (bypassing pydicom's validation).

View abbreviations map to SNOMED CT codes (CID 4014) in :data:`VIEW_SNOMED` here, written out
independently of the intake's own table so tests check one against the other.
"""

from __future__ import annotations

import copy
import io
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    generate_uid,
)

from serving.pipeline.intake import syntaxes

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
MULTIFRAME_GRAYSCALE_BYTE_SC = "1.2.840.10008.5.1.4.1.1.7.2"
MULTIFRAME_GRAYSCALE_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
BREAST_TOMOSYNTHESIS = "1.2.840.10008.5.1.4.1.1.13.1.3"

#: Modality written by default for each SOP class.
MODALITY_OF: dict[str, str] = {
    MG_FOR_PRESENTATION: "MG",
    MG_FOR_PROCESSING: "MG",
    DX_FOR_PRESENTATION: "DX",
    DX_FOR_PROCESSING: "DX",
    CR_IMAGE: "CR",
    SECONDARY_CAPTURE: "OT",
    MULTIFRAME_GRAYSCALE_BYTE_SC: "OT",
    MULTIFRAME_GRAYSCALE_WORD_SC: "OT",
    CT_IMAGE: "CT",
    BASIC_TEXT_SR: "SR",
    BREAST_TOMOSYNTHESIS: "MG",
}

#: View abbreviation -> (SNOMED CT code, code meaning), DICOM CID 4014.
VIEW_SNOMED: dict[str, tuple[str, str]] = {
    "CC": ("399162004", "cranio-caudal"),
    "MLO": ("399368009", "medio-lateral oblique"),
    "ML": ("399260004", "medio-lateral"),
    "LM": ("399352003", "latero-medial"),
    "LMO": ("399099002", "latero-medial oblique"),
    "FB": ("399196006", "caudo-cranial (from below)"),
    "XCCL": ("399192008", "cranio-caudal exaggerated laterally"),
    "XCCM": ("399101009", "cranio-caudal exaggerated medially"),
}

#: The same views in the legacy SNOMED RT (SRT) scheme.
VIEW_SRT: dict[str, str] = {
    "CC": "R-10242",
    "MLO": "R-10226",
    "ML": "R-10224",
    "LM": "R-10228",
    "XCCL": "R-1024A",
    "XCCM": "R-1024B",
}

#: Transfer syntaxes written natively by pydicom.
NATIVE_SYNTAXES = syntaxes.NATIVE_SYNTAXES
#: Transfer syntaxes compressed with ``Dataset.compress`` (pydicom's own encoders/plugins):
#: RLE Lossless, JPEG-LS lossless and near-lossless, JPEG 2000 lossless and lossy.
PYDICOM_ENCODED = syntaxes.RLE_SYNTAXES + syntaxes.JPEG_LS_SYNTAXES + syntaxes.J2K_SYNTAXES
#: High-Throughput JPEG 2000 (PS3.5 A.4.11), encoded with imagecodecs' OpenJPH binding:
#: reversible for the lossless syntaxes, irreversible (``reversible=False``) for HTJ2K.
HTJ2K_ENCODED = ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203")
#: Transfer syntax -> ``dcmcjpeg`` options producing it.
DCMCJPEG_OPTIONS: dict[str, tuple[str, ...]] = {
    JPEGLosslessSV1: ("+e1",),
    JPEGLossless: ("+el", "+sv", "2"),
    JPEGBaseline8Bit: ("+eb",),
    JPEGExtended12Bit: ("+ee",),
}

_UNSET: Any = object()


def stored_range(bits_stored: int, signed: bool) -> tuple[int, int]:
    """Inclusive ``(min, max)`` of a stored value with that many bits and signedness."""
    if signed:
        return -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
    return 0, 2**bits_stored - 1


def random_pixels(
    rows: int, cols: int, bits_stored: int, signed: bool = False, seed: int = 0
) -> npt.NDArray[np.integer[Any]]:
    """Random stored values over the full range, shape ``(rows, cols)``.

    The dtype is the one pydicom decodes to: ``(u)int8`` for 8 bits stored, ``(u)int16`` else.
    The first pixels are pinned to the range ends so the full range is always present.
    """
    lo, hi = stored_range(bits_stored, signed)
    dtype = _dtype(8 if bits_stored <= 8 else 16, signed)
    rng = np.random.default_rng(seed)
    values = rng.integers(lo, hi, size=(rows, cols), endpoint=True, dtype=np.int64)
    values.flat[0], values.flat[-1] = lo, hi
    return values.astype(dtype)


def smooth_pixels(
    rows: int, cols: int, bits_stored: int, signed: bool = False, seed: int = 0
) -> npt.NDArray[np.integer[Any]]:
    """A smooth random image (gradient plus blobs) over the full range, for lossy codecs."""
    lo, hi = stored_range(bits_stored, signed)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    field = yy / max(rows - 1, 1) + xx / max(cols - 1, 1)
    for _ in range(3):
        cy, cx, r = rng.uniform(0, rows), rng.uniform(0, cols), rng.uniform(4, 12)
        field += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    field = (field - field.min()) / (field.max() - field.min())
    values = np.round(lo + field * (hi - lo))
    return values.astype(_dtype(8 if bits_stored <= 8 else 16, signed))


def _dtype(bits_allocated: int, signed: bool) -> np.dtype[Any]:
    return np.dtype(f"{'i' if signed else 'u'}{bits_allocated // 8}")


def make_dataset(
    *,
    rows: int = 64,
    cols: int = 48,
    bits_stored: int = 12,
    bits_allocated: int | None = None,
    high_bit: int | None = _UNSET,
    signed: bool = False,
    photometric: str | None = "MONOCHROME2",
    samples_per_pixel: int | None = 1,
    sop_class: str | None = MG_FOR_PRESENTATION,
    modality: str | None = _UNSET,
    pixel_spacing: Sequence[float] | None = (0.07, 0.07),
    imager_pixel_spacing: Sequence[float] | None = None,
    magnification: float | None = None,
    laterality: str | None = "L",
    series_laterality: str | None = None,
    view: str | None = "CC",
    view_code: tuple[str, str, str] | None = None,
    view_position: str | None = None,
    view_modifiers: Sequence[str] = (),
    patient_orientation: Sequence[str] | None = ("A", "R"),
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    presentation_intent: str | None = _UNSET,
    number_of_frames: int | None = None,
    pixels: npt.NDArray[np.integer[Any]] | None = None,
    seed: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> Dataset:
    """Build a small single-frame grayscale image with file meta (Explicit VR Little Endian).

    Args:
        rows, cols: image size (``Rows``, ``Columns``).
        bits_stored: ``BitsStored``; ``bits_allocated`` defaults to 8 when it is <= 8, else 16.
        high_bit: ``HighBit``; defaults to ``bits_stored - 1``; ``None`` leaves it out.
        signed: ``PixelRepresentation`` 1 (two's complement) instead of 0.
        photometric: ``PhotometricInterpretation`` (``None``: absent).
        samples_per_pixel: ``SamplesPerPixel`` (``None``: absent).
        sop_class: ``SOPClassUID`` and ``MediaStorageSOPClassUID`` (``None``: both absent).
        modality: ``Modality``; defaults from :data:`MODALITY_OF`.
        pixel_spacing: ``PixelSpacing`` (0028,0030), ``(row, col)`` mm (``None``: absent).
        imager_pixel_spacing: ``ImagerPixelSpacing`` (0018,1164), mm.
        magnification: ``EstimatedRadiographicMagnificationFactor`` (0018,1114).
        laterality: ``ImageLaterality`` (0020,0062).
        series_laterality: ``Laterality`` (0020,0060).
        view: a key of :data:`VIEW_SNOMED`, written as ``ViewCodeSequence`` (SCT scheme).
        view_code: ``(code value, scheme, meaning)`` for ``ViewCodeSequence`` instead of ``view``.
        view_position: ``ViewPosition`` (0018,5101).
        view_modifiers: code meanings for a ``ViewModifierCodeSequence`` in the view item.
        patient_orientation: ``PatientOrientation`` values, e.g. ``("A", "R")``.
        rescale: ``(RescaleSlope, RescaleIntercept)`` (``None``: both absent).
        window: ``(WindowCenter, WindowWidth)``.
        presentation_intent: ``PresentationIntentType``; defaults from the MG SOP class.
        number_of_frames: ``NumberOfFrames`` (``None``: absent); pixel data stays one frame.
        pixels: stored values, shape ``(rows, cols)``; default :func:`random_pixels`.
        seed: seed of the random pixels.
        extra: more ``keyword -> value`` to set last (value ``None`` deletes the attribute).

    Returns:
        A ``Dataset`` with ``file_meta`` whose ``PixelData`` holds the stored values
        little-endian (``OW`` for 16 bits allocated, ``OB`` for 8).
    """
    allocated = bits_allocated or (8 if bits_stored <= 8 else 16)
    if pixels is None:
        pixels = random_pixels(rows, cols, bits_stored, signed, seed)
    ds = Dataset()
    _set(ds, "SOPClassUID", sop_class)
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "GALACTO-TEST"
    ds.AccessionNumber = "ACC0001"
    ds.Manufacturer = "galacto tests"
    default_modality = MODALITY_OF.get(sop_class or "", "OT")
    _set(ds, "Modality", default_modality if modality is _UNSET else modality)
    _set(ds, "PresentationIntentType", _intent(sop_class, presentation_intent))
    _set(ds, "Rows", rows)
    _set(ds, "Columns", cols)
    _set(ds, "BitsAllocated", allocated)
    _set(ds, "BitsStored", bits_stored)
    _set(ds, "HighBit", bits_stored - 1 if high_bit is _UNSET else high_bit)
    _set(ds, "PixelRepresentation", int(signed))
    _set(ds, "SamplesPerPixel", samples_per_pixel)
    _set(ds, "PhotometricInterpretation", photometric)
    _set(ds, "NumberOfFrames", number_of_frames)
    _set_geometry(ds, pixel_spacing, imager_pixel_spacing, magnification, patient_orientation)
    _set(ds, "ImageLaterality", laterality)
    _set(ds, "Laterality", series_laterality)
    _set_view(ds, view, view_code, view_modifiers)
    _set(ds, "ViewPosition", view_position)
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = (_ds_text(v) for v in rescale)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = (_ds_text(v) for v in window)
    ds.PixelData = np.ascontiguousarray(pixels, dtype=_dtype(allocated, signed)).tobytes()
    ds["PixelData"].VR = "OW" if allocated == 16 else "OB"
    for keyword, value in (extra or {}).items():
        _set(ds, keyword, value)
    ds.file_meta = _file_meta(ds, ExplicitVRLittleEndian)
    return ds


def _intent(sop_class: str | None, intent: str | None) -> str | None:
    if intent is not _UNSET:
        return intent
    return {
        MG_FOR_PRESENTATION: "FOR PRESENTATION",
        MG_FOR_PROCESSING: "FOR PROCESSING",
        DX_FOR_PRESENTATION: "FOR PRESENTATION",
        DX_FOR_PROCESSING: "FOR PROCESSING",
    }.get(sop_class or "")


def _ds_text(value: float) -> str:
    """A DS string for ``value`` (at most 16 characters)."""
    return f"{value:.10g}"[:16]


def _set(ds: Dataset, keyword: str, value: Any) -> None:
    """Set ``keyword`` to ``value``; ``None`` deletes it."""
    if value is None:
        if keyword in ds:
            delattr(ds, keyword)
        return
    setattr(ds, keyword, value)


def _set_geometry(
    ds: Dataset,
    pixel_spacing: Sequence[float] | None,
    imager_pixel_spacing: Sequence[float] | None,
    magnification: float | None,
    patient_orientation: Sequence[str] | None,
) -> None:
    if pixel_spacing is not None:
        ds.PixelSpacing = [_ds_text(v) for v in pixel_spacing]
    if imager_pixel_spacing is not None:
        ds.ImagerPixelSpacing = [_ds_text(v) for v in imager_pixel_spacing]
    if magnification is not None:
        ds.EstimatedRadiographicMagnificationFactor = _ds_text(magnification)
    if patient_orientation is not None:
        ds.PatientOrientation = list(patient_orientation)


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _set_view(
    ds: Dataset,
    view: str | None,
    view_code: tuple[str, str, str] | None,
    modifiers: Sequence[str],
) -> None:
    if view_code is None and view is not None:
        code, meaning = VIEW_SNOMED[view]
        view_code = (code, "SCT", meaning)
    if view_code is None:
        return
    item = _code_item(*view_code)
    if modifiers:
        item.ViewModifierCodeSequence = DicomSequence(
            [_code_item(f"M-{i}", "99TEST", meaning) for i, meaning in enumerate(modifiers)]
        )
    ds.ViewCodeSequence = DicomSequence([item])


def _file_meta(ds: Dataset, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    if "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def stored_pixels(ds: Dataset) -> npt.NDArray[np.integer[Any]]:
    """The stored values :func:`make_dataset` put in ``ds`` (uncompressed little-endian data),
    shape ``(rows, cols)``."""
    dtype = _dtype(int(ds.BitsAllocated), bool(ds.PixelRepresentation))
    count = int(ds.Rows) * int(ds.Columns)
    return np.frombuffer(ds.PixelData, dtype=dtype.newbyteorder("<"), count=count).reshape(
        int(ds.Rows), int(ds.Columns)
    )


def set_raw(ds: Dataset, tag: int, vr: str, value: bytes) -> None:
    """Store ``value`` bytes as element ``tag`` unconverted, e.g. a malformed ``DS`` string.

    The bytes are written as they are; pydicom converts (and may fail) only when read back.
    """
    length = len(value)
    ds[tag] = RawDataElement(Tag(tag), vr, length, value, 0, False, True)


def _htj2k_compress(ds: Dataset, ts: UID, **options: Any) -> None:
    """Replace the native pixel data of ``ds`` by one HTJ2K frame (imagecodecs)."""
    import imagecodecs
    from pydicom.encaps import encapsulate

    codestream = imagecodecs.htj2k_encode(stored_pixels(ds), **options)
    ds.PixelData = encapsulate([codestream])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = ts
    if options.get("reversible") is False:
        ds.LossyImageCompression = "01"


def to_bytes(
    ds: Dataset,
    transfer_syntax: str = ExplicitVRLittleEndian,
    *,
    file_meta: bool = True,
    **options: Any,
) -> bytes:
    """Serialize ``ds`` (from :func:`make_dataset`, uncompressed) as a Part 10 file.

    Args:
        ds: the data set; not modified.
        transfer_syntax: any of :data:`NATIVE_SYNTAXES`, :data:`PYDICOM_ENCODED` or the keys of
            :data:`DCMCJPEG_OPTIONS` (those need ``dcmcjpeg``).
        file_meta: ``False`` writes the bare data set (no preamble, ``DICM`` or file meta), in
            the encoding of a native ``transfer_syntax``, like old ACR-NEMA style files.
        options: encoding options for ``Dataset.compress`` (e.g. ``jls_error=2``,
            ``j2k_cr=[10]``) or ``dcmcjpeg_args=[...]`` extra ``dcmcjpeg`` arguments.

    Returns:
        The bytes of the file (128-byte preamble, ``DICM``, file meta, data set).
    """
    ts = UID(transfer_syntax)
    if ts in DCMCJPEG_OPTIONS:
        extra = tuple(options.pop("dcmcjpeg_args", ()))
        return dcmcjpeg(to_bytes(ds), (*DCMCJPEG_OPTIONS[ts], *extra))
    out = _copy(ds)
    if ts in PYDICOM_ENCODED:
        out.compress(ts, generate_instance_uid=False, **options)
    elif ts in HTJ2K_ENCODED:
        _htj2k_compress(out, ts, **options)
    elif ts == ExplicitVRBigEndian:
        _swap_pixel_bytes(out)
        out.file_meta.TransferSyntaxUID = ts
    else:
        out.file_meta.TransferSyntaxUID = ts
    buffer = io.BytesIO()
    if file_meta:
        out.save_as(buffer, enforce_file_format=True)
    else:
        del out.file_meta
        out.save_as(
            buffer,
            implicit_vr=ts.is_implicit_VR,
            little_endian=ts.is_little_endian,
            enforce_file_format=False,
        )
    return buffer.getvalue()


def write(
    ds: Dataset, path: str | os.PathLike[str], transfer_syntax: str = ExplicitVRLittleEndian
) -> Path:
    """Write ``ds`` to ``path`` with :func:`to_bytes`; returns the path."""
    target = Path(path)
    target.write_bytes(to_bytes(ds, transfer_syntax))
    return target


def _copy(ds: Dataset) -> Dataset:
    """A copy of ``ds`` and its file meta, independent enough to compress or re-encode."""
    return copy.deepcopy(ds)


def _swap_pixel_bytes(ds: Dataset) -> None:
    """Byte-swap 16-bit pixel data for a big-endian transfer syntax."""
    if int(ds.BitsAllocated) == 16:
        ds.PixelData = np.frombuffer(ds.PixelData, dtype="<u2").astype(">u2").tobytes()
        ds["PixelData"].VR = "OW"


def require_executable(name: str) -> str:
    """Path of an external tool; ``pytest.skip`` if missing, ``pytest.fail`` when ``CI=true``."""
    found = shutil.which(name)
    if found is not None:
        return found
    message = f"{name} is not installed (Debian/Ubuntu: apt-get install dcmtk)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def dcmcjpeg(data: bytes, args: Sequence[str]) -> bytes:
    """Compress Part 10 ``data`` with DCMTK ``dcmcjpeg args`` and return the output file."""
    tool = require_executable("dcmcjpeg")
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder, "in.dcm"), Path(folder, "out.dcm")
        source.write_bytes(data)
        subprocess.run(
            [tool, *args, str(source), str(target)], check=True, capture_output=True, timeout=60
        )
        return target.read_bytes()
