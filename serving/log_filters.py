"""What third-party libraries may put in galacto's output.

pydicom, its codec plugins and the DICOM libraries log (and warn) about every odd file: a
plugin that fails on a frame logs an ERROR with the whole traceback, although the intake then
refuses the object with its own typed code (``galacto info`` on pydicom's own test files
printed five tracebacks). In galacto's output their records are one line, without traceback,
and below ERROR unless the user asked for debug logging; Python warnings go through logging
(``py.warnings``) rather than raw to stderr.
"""

from __future__ import annotations

import logging
from typing import Final

#: Loggers of the libraries galacto calls.
THIRD_PARTY_LOGGERS: Final = ("pydicom", "highdicom", "pynetdicom", "PIL", "pylibjpeg",
                              "libjpeg", "openjpeg", "jpeg_ls", "rle", "imagecodecs",
                              "python_multipart", "py.warnings")


def is_third_party(name: str) -> bool:
    """Whether a logger name belongs to :data:`THIRD_PARTY_LOGGERS`."""
    return any(name == n or name.startswith(n + ".") for n in THIRD_PARTY_LOGGERS)


class OneLineThirdParty(logging.Filter):
    """Drop the traceback and stack of third-party records, and show their ERRORs as
    WARNINGs (the intake states the failure itself, with a code)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if is_third_party(record.name):
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_third_party(handler: logging.Handler, *, verbose: bool) -> None:
    """Install :class:`OneLineThirdParty` on ``handler``, send Python warnings through
    logging, and (unless ``verbose``) let only third-party ERRORs through (shown as one-line
    WARNINGs)."""
    handler.addFilter(OneLineThirdParty())
    logging.captureWarnings(True)
    if not verbose:
        for name in THIRD_PARTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
