"""Vendor profiles: detector geometries and header styles the synthetic writer imitates.

Geometry convention (shared with the renderer): images are portrait, the long dimension is
``rows``. The chest wall runs along one vertical image edge (the first or the last column,
depending on laterality and PatientOrientation), so the nipple points left or right and the
breast extends along the columns. Spacings are in mm per pixel and square.

Spacing attributes written per profile (see :class:`~training.synth.types.VendorProfile`):

- ``"both"``: ImagerPixelSpacing (0018,1164) = ``detector_spacing_mm``, PixelSpacing
  (0028,0030) = ``detector_spacing_mm / magnification`` and
  EstimatedRadiographicMagnificationFactor (0018,1114) = ``magnification``.
- ``"imager"``: ImagerPixelSpacing and EstimatedRadiographicMagnificationFactor only; a reader
  computes the patient-plane spacing as ImagerPixelSpacing / magnification.

Contact (non-magnified) mammography is written with magnification 1.0, so PixelSpacing equals
ImagerPixelSpacing for the full-size profiles.

Vendor-specific header values that are not part of the geometry (anode, filter, detector
type, serial number, ...) live in :data:`HEADER_STYLES`, keyed by profile name; unknown
profiles (e.g. built in a test with :func:`dataclasses.replace` and a new name) fall back to
:data:`GENERIC_HEADER_STYLE` through :func:`get_header_style`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from training.synth.types import VendorProfile

_SELENIA = VendorProfile(
    name="hologic", manufacturer="HOLOGIC, Inc.", model_name="Selenia Dimensions",
    rows=4096, cols=3328, detector_spacing_mm=0.07, magnification=1.0,
    bits_stored=14, pixel_spacing_attribute="both",
)
"""Hologic Selenia Dimensions, large detector mode: 70 µm a-Se, 4096 x 3328 (rows x cols);
the base the other profiles are written against (contact mode, magnification 1.0)."""

PROFILES: dict[str, VendorProfile] = {p.name: p for p in (
    _SELENIA,
    # Same detector, small paddle / small field mode: 3328 x 2560 (rows x cols).
    replace(_SELENIA, name="hologic_small", rows=3328, cols=2560),
    # GE Senographe Essential style: 100 µm CsI/a-Si, 2294 x 1914 (rows x cols), header with
    # ImagerPixelSpacing and the magnification factor only.
    replace(_SELENIA, name="ge", manufacturer="GE MEDICAL SYSTEMS",
            model_name="Senographe Essential", rows=2294, cols=1914, detector_spacing_mm=0.1,
            bits_stored=12, pixel_spacing_attribute="imager"),
    # Tiny geometry for fast unit tests: 256 x 192 pixels of 0.4 mm (102.4 x 76.8 mm).
    replace(_SELENIA, name="test", manufacturer="galacto", model_name="Synthetic Test Detector",
            rows=256, cols=192, detector_spacing_mm=0.4, bits_stored=12),
)}
"""Vendor profiles by name, in this order: ``hologic``, ``hologic_small``, ``ge``, ``test``
(``--profile mix`` draws from all but ``test``)."""


def get_profile(name: str) -> VendorProfile:
    """Return the vendor profile called ``name``.

    Raises:
        ValueError: ``name`` is not a known profile; the message lists the valid names.
    """
    try:
        return PROFILES[name]
    except KeyError:
        valid = ", ".join(sorted(PROFILES))
        raise ValueError(f"unknown vendor profile {name!r}; valid profiles: {valid}") from None


@dataclass(frozen=True)
class HeaderStyle:
    """Vendor header values beyond the geometry in :class:`VendorProfile`.

    Attributes:
        device_serial_number: DeviceSerialNumber (0018,1000).
        software_versions: SoftwareVersions (0018,1020).
        station_name: StationName (0008,1010).
        detector_type: DetectorType (0018,7004): ``"DIRECT"`` (a-Se) or ``"SCINTILLATOR"``
            (CsI on a-Si).
        detector_id: DetectorID (0018,700A).
        anode_target_material: AnodeTargetMaterial (0018,1191), e.g. ``"TUNGSTEN"``.
        filter_material: FilterMaterial (0018,7050), e.g. ``"RHODIUM"``.
        filter_thickness_mm: FilterThicknessMinimum/Maximum (0018,7052)/(0018,7054), mm.
        focal_spot_mm: FocalSpots (0018,1190), nominal size in mm.
        distance_source_to_detector_mm: DistanceSourceToDetector (0018,1110), mm.
        grid: Grid (0018,1166) value, e.g. ``"RECIPROCATING"``; empty for none.
    """

    device_serial_number: str
    software_versions: str
    station_name: str
    detector_type: str
    detector_id: str
    anode_target_material: str
    filter_material: str
    filter_thickness_mm: float
    focal_spot_mm: float
    distance_source_to_detector_mm: float
    grid: str


GENERIC_HEADER_STYLE = HeaderStyle(
    device_serial_number="SYN0000001", software_versions="galacto-synth", station_name="GALACTO",
    detector_type="DIRECT", detector_id="SYN-TEST",
    anode_target_material="TUNGSTEN", filter_material="RHODIUM", filter_thickness_mm=0.05,
    focal_spot_mm=0.3, distance_source_to_detector_mm=700.0, grid="RECIPROCATING",
)
"""Header style for profiles without an entry in :data:`HEADER_STYLES` (e.g. ``test``); the
vendor styles are written as this style plus the values that differ."""

_HOLOGIC_STYLE = replace(GENERIC_HEADER_STYLE, device_serial_number="SYN0070001",
                         software_versions="1.11.2.2", station_name="GALACTO_SDM",
                         detector_id="SYN-ASE-70")

HEADER_STYLES: dict[str, HeaderStyle] = {
    "hologic": _HOLOGIC_STYLE,
    "hologic_small": _HOLOGIC_STYLE,
    "ge": replace(GENERIC_HEADER_STYLE, device_serial_number="SYN0100001",
                  software_versions="ADS_43.10.1", station_name="GALACTO_ESS",
                  detector_type="SCINTILLATOR", detector_id="SYN-CSI-100",
                  anode_target_material="RHODIUM", filter_thickness_mm=0.025,
                  distance_source_to_detector_mm=660.0),
}
"""Header styles by profile name; :func:`get_header_style` falls back to
:data:`GENERIC_HEADER_STYLE`."""


def get_header_style(profile: VendorProfile) -> HeaderStyle:
    """Return the header style for ``profile`` (by name), or :data:`GENERIC_HEADER_STYLE`."""
    return HEADER_STYLES.get(profile.name, GENERIC_HEADER_STYLE)
