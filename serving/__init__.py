"""galacto serving: the torch-free runtime.

DICOM intake, detection pipeline, outputs, API and gateway. Nothing in this package imports
torch, monai or the ``training`` package.
"""

__version__ = "0.1.0"
