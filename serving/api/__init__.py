"""The HTTP service (FastAPI): ``/v1`` detection API, DICOMweb STOW-RS/WADO-RS, probes,
Prometheus metrics and the viewer page. ``main.create_app`` builds the app."""
