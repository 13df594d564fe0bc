"""Round-trip and conformance tests for the synthetic MG DICOM writer.

Every combination of transfer syntax, photometric interpretation and For Presentation/For
Processing is written with the tiny ``test`` profile, read back with pydicom and validated
with dicom3tools' ``dciodvfy`` (no line may start with ``Error``). dciodvfy cannot read
Deflated Explicit VR Little Endian, so deflated files are inflated first (with dcmtk's
``dcmconv +te`` when installed, which also proves another toolkit reads the deflate stream).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_voi_lut
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from training.synth.dicom_out import (
    MG_FOR_PRESENTATION,
    MG_FOR_PROCESSING,
    SYNTH_TRANSFER_SYNTAXES,
    build_dataset,
    default_transfer_syntax_weights,
    sample_transfer_syntax,
    write_dicom,
    write_view,
)
from training.synth.profiles import PROFILES, get_header_style, get_profile
from training.synth.types import CaseHeader, Photometric, RenderedView, VendorProfile, ViewName

VIEW_CODES = {"CC": "399162004", "MLO": "399368009", "ML": "399260004"}


def _uid(*parts: object) -> str:
    return str(generate_uid(entropy_srcs=["galacto-test-dicom-out", *map(str, parts)]))


def make_case() -> CaseHeader:
    return CaseHeader(
        patient_id="SYN0000001",
        patient_name="SYNTHETIC^TEST",
        patient_birth_date="19720305",
        patient_age="052Y",
        study_instance_uid=_uid("study"),
        study_id="00001",
        accession_number="GX0000001",
        study_date="20240412",
        study_time="093000",
        contrast_agent="Iohexol 300 mgI/mL",
        contrast_volume_ml=1.2,
    )


def make_view(
    profile: VendorProfile,
    *,
    laterality: str = "L",
    view: ViewName = "CC",
    orientation: tuple[str, str] = ("A", "R"),
    seed: int = 0,
) -> RenderedView:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(
        0, 1 << profile.bits_stored, (profile.rows, profile.cols), dtype=np.uint16
    )
    pixels[:, : profile.cols // 4] = 0  # air next to the breast, a run for RLE/JPEG-LS
    pixels[0, -1] = (1 << profile.bits_stored) - 1  # full range present
    return RenderedView(
        pixels=pixels,
        bits_stored=profile.bits_stored,
        laterality="L" if laterality == "L" else "R",
        view=view,
        patient_orientation=orientation,
        series_instance_uid=_uid("series", seed),
        sop_instance_uid=_uid("sop", seed),
        series_number=1,
        instance_number=1,
        kvp=29.0,
        exposure_mas=87.5,
        body_part_thickness_mm=48.0,
        compression_force_n=95.0,
        positioner_primary_angle_deg=0.0,
        acquisition_time="093412",
    )


def imager_profile() -> VendorProfile:
    """The test geometry with a GE-style header (no PixelSpacing) and magnification 1.1."""
    return dataclasses.replace(
        get_profile("test"), name="test_imager", pixel_spacing_attribute="imager", magnification=1.1
    )


def dciodvfy_output(path: Path, tmp_path: Path) -> str:
    """dciodvfy's combined output for ``path`` (inflated first when deflated)."""
    if shutil.which("dciodvfy") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("dciodvfy (dicom3tools) is not installed, and CI=true requires it")
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    target = path
    meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    if meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian:
        target = tmp_path / f"inflated_{path.name}"
        if shutil.which("dcmconv") is not None:
            subprocess.run(["dcmconv", "+te", str(path), str(target)], check=True)
        else:
            ds = pydicom.dcmread(path)
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.save_as(target, enforce_file_format=True)
    result = subprocess.run(
        ["dciodvfy", str(target)], capture_output=True, text=True, check=False, timeout=60
    )
    return result.stdout + result.stderr


def assert_no_dciodvfy_errors(path: Path, tmp_path: Path) -> None:
    output = dciodvfy_output(path, tmp_path)
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert not errors, f"dciodvfy reported errors for {path.name}:\n{output}"


@pytest.mark.parametrize("for_processing", [False, True], ids=["presentation", "processing"])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("transfer_syntax", SYNTH_TRANSFER_SYNTAXES)
def test_round_trip_and_dciodvfy(
    tmp_path: Path, transfer_syntax: str, photometric: Photometric, for_processing: bool
) -> None:
    profile = get_profile("test")
    view = make_view(profile)
    case = make_case()
    path = tmp_path / "view.dcm"
    write_view(
        view,
        case,
        profile,
        path,
        photometric=photometric,
        transfer_syntax=transfer_syntax,
        for_processing=for_processing,
    )

    raw = path.read_bytes()
    assert raw[128:132] == b"DICM"
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == transfer_syntax
    assert ds.file_meta.MediaStorageSOPInstanceUID == view.sop_instance_uid
    assert ds.SOPInstanceUID == view.sop_instance_uid
    expected_class = MG_FOR_PROCESSING if for_processing else MG_FOR_PRESENTATION
    assert ds.SOPClassUID == expected_class
    assert ds.file_meta.MediaStorageSOPClassUID == expected_class
    assert ds.PresentationIntentType == ("FOR PROCESSING" if for_processing else "FOR PRESENTATION")

    max_value = (1 << profile.bits_stored) - 1
    expected = view.pixels if photometric == "MONOCHROME2" else max_value - view.pixels
    np.testing.assert_array_equal(ds.pixel_array, expected)
    assert ds.PhotometricInterpretation == photometric
    assert ds.PresentationLUTShape == ("INVERSE" if photometric == "MONOCHROME1" else "IDENTITY")
    assert ds.PixelIntensityRelationshipSign == (1 if photometric == "MONOCHROME1" else -1)
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, 12, 11)
    assert (ds.Rows, ds.Columns) == (profile.rows, profile.cols)
    assert ds.LossyImageCompression == "00"
    assert ("WindowCenter" in ds) is not for_processing

    assert ds.Modality == "MG"
    assert ds.ImageLaterality == "L"
    assert list(ds.PatientOrientation) == ["A", "R"]
    assert ds.ViewCodeSequence[0].CodeValue == VIEW_CODES["CC"]
    assert ds.ViewCodeSequence[0].CodingSchemeDesignator == "SCT"
    assert ds.StudyInstanceUID == case.study_instance_uid
    assert [float(v) for v in ds.PixelSpacing] == [0.4, 0.4]
    assert [float(v) for v in ds.ImagerPixelSpacing] == [0.4, 0.4]

    assert_no_dciodvfy_errors(path, tmp_path)


@pytest.mark.parametrize(
    ("laterality", "view", "orientation"),
    [("R", "MLO", ("P", "FL")), ("L", "ML", ("A", "F")), ("R", "CC", ("P", "L"))],
)
@pytest.mark.parametrize("style", ["both", "imager"])
def test_views_and_spacing_attributes(
    tmp_path: Path,
    laterality: str,
    view: ViewName,
    orientation: tuple[str, str],
    style: str,
) -> None:
    profile = get_profile("test") if style == "both" else imager_profile()
    rendered = make_view(profile, laterality=laterality, view=view, orientation=orientation)
    path = tmp_path / "view.dcm"
    write_view(rendered, make_case(), profile, path, transfer_syntax=JPEG2000Lossless)
    ds = pydicom.dcmread(path)

    assert ds.ImageLaterality == laterality
    assert ds.ViewPosition == view
    assert ds.ViewCodeSequence[0].CodeValue == VIEW_CODES[view]
    assert len(ds.ViewCodeSequence[0].ViewModifierCodeSequence) == 0
    assert tuple(ds.PatientOrientation) == orientation
    assert ds.SeriesDescription == f"{laterality} {view}"
    assert [float(v) for v in ds.ImagerPixelSpacing] == [0.4, 0.4]
    assert float(ds.EstimatedRadiographicMagnificationFactor) == profile.magnification
    if style == "both":
        assert [float(v) for v in ds.PixelSpacing] == [0.4, 0.4]
    else:
        assert "PixelSpacing" not in ds
    np.testing.assert_array_equal(ds.pixel_array, rendered.pixels)
    assert_no_dciodvfy_errors(path, tmp_path)


@pytest.mark.parametrize("transfer_syntax", SYNTH_TRANSFER_SYNTAXES)
def test_same_inputs_give_identical_bytes(tmp_path: Path, transfer_syntax: str) -> None:
    profile = get_profile("test")
    paths = [tmp_path / "a.dcm", tmp_path / "b.dcm"]
    for path in paths:  # fresh objects each time: nothing may depend on identity or clock
        write_view(
            make_view(profile),
            make_case(),
            profile,
            path,
            photometric="MONOCHROME1",
            transfer_syntax=transfer_syntax,
        )
    assert paths[0].read_bytes() == paths[1].read_bytes()


def _dataset_offset(raw: bytes) -> int:
    """Byte offset where the dataset starts: after preamble, "DICM" and the file meta group."""
    group_length = int.from_bytes(raw[140:144], "little")  # (0002,0000) UL value
    return 144 + group_length


def test_deflated_stream_is_the_explicit_little_endian_dataset(tmp_path: Path) -> None:
    profile = get_profile("test")
    ds = build_dataset(make_view(profile), make_case(), profile)
    write_dicom(ds, tmp_path / "explicit.dcm", ExplicitVRLittleEndian)
    write_dicom(ds, tmp_path / "deflated.dcm", DeflatedExplicitVRLittleEndian)
    explicit = (tmp_path / "explicit.dcm").read_bytes()
    deflated = (tmp_path / "deflated.dcm").read_bytes()
    assert len(deflated) % 2 == 0
    inflated = zlib.decompressobj(-zlib.MAX_WBITS).decompress(deflated[_dataset_offset(deflated) :])
    assert inflated == explicit[_dataset_offset(explicit) :]


@pytest.mark.parametrize(
    ("transfer_syntax", "tool"), [(JPEGLSLossless, "dcmdjpls"), (RLELossless, "dcmdrle")]
)
def test_dcmtk_decodes_to_the_same_pixels(tmp_path: Path, transfer_syntax: str, tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} (dcmtk) is not installed")
    profile = get_profile("test")
    view = make_view(profile)
    path = tmp_path / "compressed.dcm"
    write_view(view, make_case(), profile, path, transfer_syntax=transfer_syntax)
    decoded = tmp_path / "decoded.dcm"
    subprocess.run([tool, str(path), str(decoded)], check=True, capture_output=True)
    ds = pydicom.dcmread(decoded)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    np.testing.assert_array_equal(ds.pixel_array, view.pixels)


def test_write_dicom_leaves_dataset_unchanged(tmp_path: Path) -> None:
    profile = get_profile("test")
    ds = build_dataset(make_view(profile), make_case(), profile)
    before = copy.deepcopy(ds)
    for ts in SYNTH_TRANSFER_SYNTAXES:
        write_dicom(ds, tmp_path / "out.dcm", ts)
    assert ds == before
    assert ds.file_meta == before.file_meta
    assert not ds["PixelData"].is_undefined_length


def test_monochrome1_window_is_the_inverse_of_monochrome2() -> None:
    profile = get_profile("test")
    view = make_view(profile)
    case = make_case()
    m2 = build_dataset(view, case, profile, photometric="MONOCHROME2")
    m1 = build_dataset(view, case, profile, photometric="MONOCHROME1")
    assert float(m1.WindowWidth) == float(m2.WindowWidth)
    out2 = apply_voi_lut(m2.pixel_array, m2).astype(np.float64)
    out1 = apply_voi_lut(m1.pixel_array, m1).astype(np.float64)
    # LINEAR windowing of the inverted store is the inverted output; the Presentation LUT
    # Shape INVERSE then makes both display the same.
    total = out1 + out2
    np.testing.assert_allclose(total, total.flat[0])


def test_window_from_extra_is_used() -> None:
    profile = get_profile("test")
    view = make_view(profile)
    view.extra["window"] = (1000.0, 501.0)
    m2 = build_dataset(view, make_case(), profile)
    m1 = build_dataset(view, make_case(), profile, photometric="MONOCHROME1")
    assert (float(m2.WindowCenter), float(m2.WindowWidth)) == (1000.0, 501.0)
    assert (float(m1.WindowCenter), float(m1.WindowWidth)) == (4096 - 1000.0, 501.0)


def test_header_content() -> None:
    profile = get_profile("test")
    ds = build_dataset(make_view(profile), make_case(), profile)
    assert ds.ImageType[:2] == ["ORIGINAL", "PRIMARY"]
    assert ds.PatientSex == "F"
    assert ds.StudyDescription == "Galactography"
    procedure = ds.ProcedureCodeSequence[0]
    assert (procedure.CodeValue, procedure.CodingSchemeDesignator) == ("77053", "C4")
    assert len(procedure.CodeMeaning) <= 64
    assert ds.ContrastBolusAgent == "Iohexol 300 mgI/mL"
    assert ds.ContrastBolusAgentSequence[0].CodeValue == codes.SCT.Iohexol.value
    assert float(ds.ContrastBolusIngredientConcentration) == 300.0
    assert float(ds.ContrastBolusVolume) == 1.2
    assert ds.AnatomicRegionSequence[0].CodeValue == codes.SCT.Breast.value
    assert (ds.ExposureInuAs, ds.Exposure) == (87500, 88)
    assert ds.InstanceCreationDate == ds.StudyDate == "20240412"
    assert ds.InstanceCreationTime == ds.AcquisitionTime == "093412"
    assert ds.BreastImplantPresent == "NO"
    assert ds.DetectorType == get_header_style(profile).detector_type


def test_unknown_agent_keeps_free_text_without_code() -> None:
    profile = get_profile("test")
    case = make_case()
    case.contrast_agent = "Contrast X"
    ds = build_dataset(make_view(profile), case, profile)
    assert ds.ContrastBolusAgent == "Contrast X"
    assert "ContrastBolusAgentSequence" not in ds
    assert "ContrastBolusIngredient" not in ds


def test_coded_values_match_the_dicom_context_groups() -> None:
    from training.synth import dicom_out

    views = {c.value: c.meaning for c in _cid_codes(4014)}
    for value, meaning in dicom_out._VIEW_CODES.values():
        assert views[value] == meaning
    agents = {c.value: c.meaning for c in _cid_codes(12)}
    for value, meaning in dicom_out._CONTRAST_AGENT_CODES.values():
        assert agents[value] == meaning
    routes = {c.value: c.meaning for c in _cid_codes(11)}
    assert routes[dicom_out._ROUTE_CODE[0]] == dicom_out._ROUTE_CODE[1]


def _cid_codes(cid: int) -> list[Code]:
    from pydicom.sr._cid_dict import cid_concepts

    return [
        getattr(getattr(codes, scheme), keyword)
        for scheme, keywords in cid_concepts[cid].items()
        for keyword in keywords
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pixels": np.zeros((10, 10), np.uint16)}, "shape"),
        ({"pixels": np.full((256, 192), 4096, np.uint16)}, "exceeds"),
        ({"pixels": np.zeros((256, 192), np.int32)}, "uint16"),
        ({"bits_stored": 14}, "bits_stored"),
        ({"patient_orientation": ("A", "X")}, "patient_orientation"),
        ({"patient_orientation": ("A",)}, "patient_orientation"),
        ({"view": "XCCL"}, "view.view"),
        ({"sop_instance_uid": "1.2.abc"}, "sop_instance_uid"),
        ({"acquisition_time": "9:30"}, "acquisition_time"),
    ],
)
def test_inconsistent_inputs_are_rejected(change: dict[str, object], message: str) -> None:
    profile = get_profile("test")
    view = dataclasses.replace(make_view(profile), **change)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        build_dataset(view, make_case(), profile)


def test_unsupported_transfer_syntax_is_rejected(tmp_path: Path) -> None:
    profile = get_profile("test")
    ds = build_dataset(make_view(profile), make_case(), profile)
    with pytest.raises(ValueError, match="unsupported transfer syntax"):
        write_dicom(ds, tmp_path / "x.dcm", "1.2.840.10008.1.2.4.50")


def test_profiles() -> None:
    assert {"hologic", "hologic_small", "ge", "test"} <= set(PROFILES)
    for name, profile in PROFILES.items():
        assert profile.name == name
        assert profile.rows > profile.cols  # portrait: the chest wall is a vertical edge
        assert profile.magnification >= 1.0
        assert profile.bits_stored in (12, 14)
    hologic, ge = get_profile("hologic"), get_profile("ge")
    assert (hologic.rows, hologic.cols, hologic.detector_spacing_mm) == (4096, 3328, 0.07)
    assert (ge.rows, ge.cols, ge.detector_spacing_mm) == (2294, 1914, 0.1)
    assert ge.pixel_spacing_attribute == "imager"
    with pytest.raises(ValueError, match="ge, hologic, hologic_small, test"):
        get_profile("siemens")


def test_transfer_syntax_weights() -> None:
    weights = default_transfer_syntax_weights()
    assert set(weights) == set(SYNTH_TRANSFER_SYNTAXES)
    assert sum(weights.values()) == pytest.approx(1.0)
    assert weights[ExplicitVRLittleEndian] == pytest.approx(0.7)
    draws = [sample_transfer_syntax(np.random.default_rng(7)) for _ in range(3)]
    assert len(set(draws)) == 1  # same generator state, same draw
    rng = np.random.default_rng(0)
    assert sample_transfer_syntax(rng, {JPEG2000Lossless: 1.0}) == JPEG2000Lossless
    with pytest.raises(ValueError, match="unsupported"):
        sample_transfer_syntax(rng, {"1.2.3": 1.0})
