"""Detection pipeline stages: DICOM intake, preprocessing, inference, post-processing, location."""
