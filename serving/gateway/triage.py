"""Which received instances of a study are galactogram images worth analysing.

A PACS routing rule often sends a whole study: besides the MG/DX/CR images it may hold
secondary captures of reports, color photos, other modalities, or the results this gateway
sent back earlier. :func:`skip_reason` looks at the header only (the one the worker's guarded
parse, :func:`serving.pipeline.dicom_in.read_instance`, returned, or attached to its refusal)
and names why an instance is not analysed; what the header does not reveal (multi-frame,
undecodable pixels, ...) is the intake's refusal, recorded the same way. Reasons are
``code: explanation`` and never quote patient data.

Tomosynthesis volumes (Breast Tomosynthesis Image, multi-frame grayscale Secondary Capture)
are analysed; the volume reader checks their spacing (in the functional groups, or
NominalScannedPixelSpacing), so the Secondary Capture spacing check here is for 2D images.
"""

from __future__ import annotations

from typing import Final

from pydicom.dataset import Dataset

from serving.outputs.common import MANUFACTURER
from serving.pipeline.dicom_in import ACCEPTED_SOP_CLASSES, is_volume
from serving.pipeline.intake.volume_header import BREAST_TOMOSYNTHESIS

SECONDARY_CAPTURE_CLASSES: Final = frozenset({
    "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.2", "1.2.840.10008.5.1.4.1.1.7.3",
})
#: SOP classes analysed: the 2D intake's and Breast Tomosynthesis Image Storage.
ANALYSED_SOP_CLASSES: Final = frozenset({*ACCEPTED_SOP_CLASSES, BREAST_TOMOSYNTHESIS})
#: Modalities of projection X-ray images a galactogram may come as.
IMAGE_MODALITIES: Final = frozenset({"MG", "DX", "CR"})
#: Extra modalities accepted for Secondary Capture only (sites label SC as OT or XC).
SC_MODALITIES: Final = IMAGE_MODALITIES | {"OT"}


def _text(header: Dataset, keyword: str) -> str:
    value = header.get(keyword)
    return "" if value is None else str(value).strip()


def is_own_result(header: Dataset) -> bool:
    """True for an object this service produced (our Manufacturer, or the algorithm named as
    Processing Equipment in Contributing Equipment)."""
    if _text(header, "Manufacturer") == MANUFACTURER:
        return True
    for item in header.get("ContributingEquipmentSequence") or []:
        if str(item.get("Manufacturer", "")).strip() == MANUFACTURER:
            return True
    return False


def skip_reason(header: Dataset) -> str | None:
    """Why this instance is not analysed, or None when it may be a galactogram image.

    Checks, in order: our own result, SOP class (an image class the intake accepts, or a
    Breast Tomosynthesis Image), modality, color, and for a 2D Secondary Capture the presence
    of a pixel spacing.
    """
    if is_own_result(header):
        return f"own_result: produced by {MANUFACTURER}"
    sop_class = _text(header, "SOPClassUID")
    if sop_class not in ANALYSED_SOP_CLASSES:
        return (f"unsupported_sop_class: SOPClassUID is {sop_class or 'absent'}; expected "
                "an MG, DX, CR or Secondary Capture image or a Breast Tomosynthesis volume")
    modality = _text(header, "Modality").upper()
    allowed = SC_MODALITIES if sop_class in SECONDARY_CAPTURE_CLASSES else IMAGE_MODALITIES
    if modality and modality not in allowed:
        return (f"wrong_modality: Modality is {modality[:16]!r}; expected one of "
                f"{', '.join(sorted(allowed))}")
    samples = _text(header, "SamplesPerPixel")
    photometric = _text(header, "PhotometricInterpretation").upper()
    if samples not in ("", "1") or \
            (photometric and not photometric.startswith("MONOCHROME")):
        return (f"color_image: PhotometricInterpretation is {photometric[:16] or 'absent'!r}, "
                f"SamplesPerPixel {samples[:8] or 'absent'}; expected a grayscale image")
    if sop_class in SECONDARY_CAPTURE_CLASSES and not is_volume(header) \
            and "PixelSpacing" not in header and "ImagerPixelSpacing" not in header:
        return ("missing_spacing: Secondary Capture without PixelSpacing or "
                "ImagerPixelSpacing; expected a spacing to measure in mm")
    return None
