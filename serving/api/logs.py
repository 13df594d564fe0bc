"""Structured logs: one JSON object per line, carrying the request id.

Nothing from a DICOM object is ever logged (no names, IDs, dates or UIDs); request log lines
name the route template (``/dicomweb/studies/{study}``), never the concrete path, which can
hold a Study Instance UID.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import traceback
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "galacto_request_id", default=None)

#: LogRecord attributes that are not "extra" fields.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message",
                                                                              "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "request_id", ...extra}`` per line. Exception
    tracebacks are reduced to the exception type and the frames (file, line, function): an
    exception message may quote data."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id_var.get(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in ("request_id", "color_message"):
                out[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            etype, _, tb = record.exc_info
            out["exc_type"] = etype.__name__
            out["exc_frames"] = [f"{f.filename}:{f.lineno} {f.name}"
                                 for f in traceback.extract_tb(tb)][-8:]
        return json.dumps(out, default=str)


class PlainFormatter(logging.Formatter):
    """Human-readable lines with the request id; tracebacks reduced as in JSON."""

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None) or request_id_var.get() or "-"
        line = (f"{self.formatTime(record, '%H:%M:%S')} {record.levelname} {record.name} "
                f"[{rid}] {record.getMessage()}")
        if record.exc_info and record.exc_info[0] is not None:
            line += f" ({record.exc_info[0].__name__})"
        return line


#: Loggers of libraries that quote values read from a DICOM object in their messages, e.g.
#: pydicom's ``Invalid value for VR DA: '1947-03-12'`` (a birth date) or ``... VR UI: ...``
#: (an instance UID); ``py.warnings`` carries the same text when it is also a warning.
QUOTING_LOGGERS = ("pydicom", "highdicom", "pynetdicom", "py.warnings")
_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")


class RedactQuotedValues(logging.Filter):
    """Replace every quoted string in the messages of :data:`QUOTING_LOGGERS` by
    ``'<redacted>'`` (found by tests/test_security.py: malformed dates and UIDs of uploaded
    instances reached the log through pydicom's validation warnings)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if any(record.name == n or record.name.startswith(n + ".") for n in QUOTING_LOGGERS):
            record.msg = _QUOTED.sub("'<redacted>'", record.getMessage())
            record.args = None
        return True


def configure(json_lines: bool = True, level: int = logging.INFO) -> None:
    """Route the root logger to stderr with the JSON (or plain) formatter; Python warnings
    go through it too (as ``py.warnings``), third-party messages with quoted values are
    redacted (:class:`RedactQuotedValues`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else PlainFormatter())
    handler.addFilter(RedactQuotedValues())
    logging.captureWarnings(True)  # not raw on stderr: pydicom warns with the values too
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("openjpeg", "pydicom", "jpeg_ls", "PIL", "pylibjpeg", "libjpeg", "rle",
                  "python_multipart", "highdicom", "pynetdicom"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # raw paths can hold UIDs
