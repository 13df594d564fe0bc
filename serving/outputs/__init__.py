"""Result renderings: PNG overlays (and, later, DICOM SR and presentation states)."""
