"""Coded concepts of the DICOM result objects, taken from pydicom's copy of the PS3.16 code
dictionary (``pydicom.sr.codedict.codes``) wherever it has them, so code values and meanings are
the standard's; the few it lacks (the RFC 5646 language and the UCUM units with annotations,
:data:`MARKS_PER_IMAGE` and :func:`range_unit`) are spelled out with their source.

Value sets (PS3.16 context groups) and where each code is used:

- Finding of a Single Image Finding (TID 4006 row 1) and of a Composite Feature (TID 4004):
  :data:`FINDING_MASS` (129788004, SCT, "Mammographic breast mass"), the lesion concept of
  CID 6016 "Mammography Composite Feature" and CID 6054 "Breast Imaging Finding". CID 6014
  "Mammography Single Image Finding" has no member for a mass or an intraductal lesion (its
  mass-like member, 129793001 "Mammography breast density", reads as breast composition), so
  the single-view finding uses the same lesion concept as the two-view feature. The
  galactographic meaning, :data:`FILLING_DEFECT` (111425, DCM, "Intraluminal filling defect")
  of CID 6057 "Ductography Finding for Breast", is coded in each Individual
  Impression/Recommendation (TID 4002 "Differential Diagnosis/Impression") and is the Finding
  of the TID 1500 measurement groups. README, "DICOM results" > "Coding choices", gives the reasons.
- Laterality: CID 6022 "Side" in the CAD SR image library (TID 4020), CID 244 "Laterality" in
  the TID 1500 image library (TID 1602) and finding sites.
- View: CID 4014 "View for Mammography".
- CAD operating point axes: CID 6048 "CAD Operating Point Axis Label".
"""

from __future__ import annotations

from typing import Final

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code


def _clean(code: Code) -> Code:
    """``code`` with zero-width spaces removed from its meaning (pydicom's dictionary keeps the
    standard's HTML soft breaks, e.g. "Individual Impression/\\u200bRecommendation"; a Code
    Meaning (LO) in the default character set must be plain ASCII)."""
    meaning = code.meaning.replace("\u200b", "")
    return Code(code.value, code.scheme_designator, meaning)


DCM = codes.DCM
SCT = codes.SCT

# Concept names (DCM) -------------------------------------------------------------------------
MAMMOGRAPHY_CAD_REPORT: Final = _clean(DCM.MammographyCADReport)
LANGUAGE_OF_CONTENT: Final = _clean(DCM.LanguageOfContentItemAndDescendants)
IMAGE_LIBRARY: Final = _clean(DCM.ImageLibrary)
IMAGE_LATERALITY: Final = _clean(DCM.ImageLaterality)
IMAGE_VIEW: Final = _clean(DCM.ImageView)
IMAGE_VIEW_MODIFIER: Final = _clean(DCM.ImageViewModifier)
PATIENT_ORIENTATION_ROW: Final = _clean(DCM.PatientOrientationRow)
PATIENT_ORIENTATION_COLUMN: Final = _clean(DCM.PatientOrientationColumn)
STUDY_DATE: Final = _clean(DCM.StudyDate)
STUDY_TIME: Final = _clean(DCM.StudyTime)
CONTENT_DATE: Final = _clean(DCM.ContentDate)
CONTENT_TIME: Final = _clean(DCM.ContentTime)
HORIZONTAL_PIXEL_SPACING: Final = _clean(DCM.HorizontalPixelSpacing)
VERTICAL_PIXEL_SPACING: Final = _clean(DCM.VerticalPixelSpacing)
POSITIONER_PRIMARY_ANGLE: Final = _clean(DCM.PositionerPrimaryAngle)
CAD_PROCESSING_SUMMARY: Final = _clean(DCM.CADProcessingAndFindingsSummary)
INDIVIDUAL_IMPRESSION: Final = _clean(DCM.IndividualImpressionRecommendation)
IMPRESSION_DESCRIPTION: Final = _clean(DCM.ImpressionDescription)
DIFFERENTIAL_DIAGNOSIS: Final = _clean(DCM.DifferentialDiagnosisImpression)
RENDERING_INTENT: Final = _clean(DCM.RenderingIntent)
SINGLE_IMAGE_FINDING: Final = _clean(DCM.SingleImageFinding)
COMPOSITE_FEATURE: Final = _clean(DCM.CompositeFeature)
COMPOSITE_TYPE: Final = _clean(DCM.CompositeType)
SCOPE_OF_FEATURE: Final = _clean(DCM.ScopeOfFeature)
CERTAINTY_OF_FEATURE: Final = _clean(DCM.CertaintyOfFeature)
CERTAINTY_OF_FINDING: Final = _clean(DCM.CertaintyOfFinding)
CENTER: Final = _clean(DCM.Center)
OUTLINE: Final = _clean(DCM.Outline)
ALGORITHM_NAME: Final = _clean(DCM.AlgorithmName)
ALGORITHM_VERSION: Final = _clean(DCM.AlgorithmVersion)
ALGORITHM_PARAMETERS: Final = _clean(DCM.AlgorithmParameters)
CAD_OPERATING_POINT: Final = _clean(DCM.CADOperatingPoint)
MAXIMUM_CAD_OPERATING_POINT: Final = _clean(DCM.MaximumCADOperatingPoint)
RECOMMENDED_CAD_OPERATING_POINT: Final = _clean(DCM.RecommendedCADOperatingPoint)
CAD_OPERATING_POINT_TABLE: Final = _clean(DCM.CADOperatingPointTable)
CAD_OPERATING_POINT_DESCRIPTION: Final = _clean(DCM.CADOperatingPointDescription)
X_CONCEPT: Final = _clean(DCM.XConcept)
Y_CONCEPT: Final = _clean(DCM.YConcept)
SUMMARY_OF_DETECTIONS: Final = _clean(DCM.SummaryOfDetections)
SUCCESSFUL_DETECTIONS: Final = _clean(DCM.SuccessfulDetections)
DETECTION_PERFORMED: Final = _clean(DCM.DetectionPerformed)
SUMMARY_OF_ANALYSES: Final = _clean(DCM.SummaryOfAnalyses)
SUCCESSFUL_ANALYSES: Final = _clean(DCM.SuccessfulAnalyses)
ANALYSIS_PERFORMED: Final = _clean(DCM.AnalysisPerformed)
IMAGE_REGION: Final = _clean(DCM.ImageRegion)
DISTANCE_FROM_NIPPLE: Final = _clean(DCM.DistanceFromNipple)
CLOCKFACE_OR_REGION: Final = _clean(DCM.ClockfaceOrRegion)
QUADRANT_LOCATION: Final = _clean(DCM.QuadrantLocation)
DEPTH: Final = _clean(DCM.Depth)
#: Observer type of the TID 1500 observer context (TID 1002, CID 270 "Observer Type").
DEVICE: Final = _clean(DCM.Device)

# Values --------------------------------------------------------------------------------------
#: CID 5000 "Languages": one language for every SR (highdicom's default for TID 1500 too).
LANGUAGE: Final = Code("en-US", "RFC5646", "English (United States)")
#: CID 6034 "Intended Use of CAD Output".
PRESENTATION_REQUIRED: Final = _clean(DCM.PresentationRequiredRenderingDeviceIsExpectedToPresent)
#: CID 6047 "CAD Processing and Findings Summary".
ALL_SUCCEEDED_WITH_FINDINGS: Final = _clean(DCM.AllAlgorithmsSucceededWithFindings)
ALL_SUCCEEDED_WITHOUT_FINDINGS: Final = _clean(DCM.AllAlgorithmsSucceededWithoutFindings)
#: CID 6042 "Status of Results".
SUCCEEDED: Final = _clean(DCM.Succeeded)
NOT_ATTEMPTED: Final = _clean(DCM.NotAttempted)
#: CID 6035 "Composite Feature Relation" and CID 6036 "Feature Scope".
RELATED_SPATIALLY: Final = _clean(DCM.TargetContentItemsAreRelatedSpatially)
ON_MULTIPLE_IMAGES: Final = _clean(DCM.FeatureDetectedOnMultipleImages)
#: CID 6043 "Mammography CAD Analysis Type".
SPATIAL_COLLOCATION_ANALYSIS: Final = _clean(SCT.SpatialCollocationAnalysis)
#: CID 6048 "CAD Operating Point Axis Label": the FROC axes of the operating point table.
FALSE_MARKERS_PER_IMAGE: Final = _clean(DCM.FalseMarkersPerImage)
LESION_SENSITIVITY: Final = _clean(DCM.LesionSensitivity)
#: The lesion concept written as Single Image Finding and Composite Feature (see above).
FINDING_MASS: Final = _clean(SCT.MammographicBreastMass)
#: CID 6057 "Ductography Finding for Breast": what the model detects.
FILLING_DEFECT: Final = _clean(DCM.IntraluminalFillingDefect)
#: TID 1500 procedure reported (CID 6050) and finding site.
PROCEDURE_REPORTED: Final = _clean(SCT.MammaryDuctogram)
BREAST: Final = _clean(SCT.Breast)
#: Concept name of a laterality modifier (TID 4002 row 4, finding sites).
LATERALITY_CONCEPT: Final = _clean(SCT.Laterality)
#: CID 7005 "Contributing Equipment Purposes of Reference": the Purpose of Reference of the
#: Contributing Equipment entry that names galacto.
PROCESSING_EQUIPMENT: Final = _clean(DCM.ProcessingEquipment)

# Units (UCUM) -------------------------------------------------------------------------------
PERCENT: Final = _clean(codes.UCUM.Percent)
MILLIMETER: Final = _clean(codes.UCUM.Millimeter)
DEGREE: Final = _clean(codes.UCUM.Degree)
ARBITRARY_UNIT: Final = _clean(codes.UCUM.ArbitraryUnit)
#: Unit of False Markers per Image: marks per image. Spelled out: a UCUM expression with
#: annotations, which no PS3.16 table (and so not pydicom's dictionary) lists.
MARKS_PER_IMAGE: Final = Code("{marks}/{image}", "UCUM", "marks per image")


def range_unit(maximum: int) -> Code:
    """UNITS of a CAD operating point, DT ({0:n}, UCUM, "range: 0:n") (TID 4023). Spelled out:
    the code depends on ``maximum``, so pydicom's dictionary cannot hold it."""
    return Code(f"{{0:{maximum}}}", "UCUM", f"range: 0:{maximum}")


#: ``ImageOut.laterality`` -> CID 6022 "Side" (CAD SR image library, TID 4020).
BREAST_SIDE: Final[dict[str, Code]] = {"L": _clean(SCT.LeftBreast), "R": _clean(SCT.RightBreast)}
#: ``ImageOut.laterality`` -> CID 244 "Laterality" (TID 1500 image library and finding sites).
LATERALITY: Final[dict[str, Code]] = {"L": _clean(SCT.Left), "R": _clean(SCT.Right)}
#: ``ImageOut.view`` -> CID 4014 "View for Mammography".
VIEW: Final[dict[str, Code]] = {
    "CC": _clean(SCT.CranioCaudal),
    "MLO": _clean(SCT.MedioLateralObliqueProjection),
    "ML": _clean(SCT.MedioLateralProjection),
    "LM": _clean(SCT.LateroMedial),
    "LMO": _clean(SCT.LateroMedialOblique),
    "FB": _clean(SCT.CaudoCranial),
    "SIO": _clean(SCT.SuperolateralToInferomedialOblique),
    "ISO": _clean(SCT.InferomedialToSuperolateralOblique),
    "XCCL": _clean(SCT.CranioCaudalExaggeratedLaterally),
    "XCCM": _clean(SCT.CranioCaudalExaggeratedMedially),
}
#: CID 6019 "Clockface Location or Region": the whole hours.
CLOCK_POSITION: Final[dict[int, Code]] = {
    hour: _clean(getattr(SCT, f"_{hour}OClockPosition")) for hour in range(1, 13)
}
#: CID 6019 regions that BI-RADS states instead of a clock face.
REGION: Final[dict[str, Code]] = {
    "retroareolar": _clean(SCT.SubareolarRegion),
    "central": _clean(SCT.CentralRegionOfBreast),
}
#: CID 6020 "Quadrant Location".
QUADRANT: Final[dict[str, Code]] = {
    "UOQ": _clean(SCT.UpperOuterQuadrantOfBreast),
    "UIQ": _clean(SCT.UpperInnerQuadrantOfBreast),
    "LOQ": _clean(SCT.LowerOuterQuadrantOfBreast),
    "LIQ": _clean(SCT.LowerInnerQuadrantOfBreast),
}
#: CID 6024 "Depth": thirds of the posterior nipple line.
DEPTH_VALUE: Final[dict[str, Code]] = {
    "anterior": _clean(SCT.Anterior),
    "middle": _clean(codes.NCIt.Middle),
    "posterior": _clean(SCT.Posterior),
}
