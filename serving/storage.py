"""What the gateway's spool and the API's result store share about files: DICOM UIDs checked
before they name anything on disk, write-then-rename with fsyncs, directory creation, and the
Part 10 encoding of result objects.

A UID (PS3.5 9.1) is digits and dots, at most 64 characters, no component with a leading zero:
checked with :func:`is_uid`, so a crafted UID (``../..``, an absolute path, a NUL byte, a
trailing newline) cannot leave the folder it names a file in.

A file written by :func:`write_durably` is either absent or complete after a crash: the bytes
go to a temporary file that is fsynced, renamed to its final name, and the directory is
fsynced.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import uuid
from pathlib import Path
from typing import Final

from pydicom import dcmwrite
from pydicom.dataset import Dataset

#: A DICOM UID: digits and dots, no component with a leading zero (PS3.5 9.1).
UID_RE: Final = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
#: Longest UID (PS3.5 9.1).
MAX_UID_LENGTH: Final = 64


def is_uid(text: str) -> bool:
    """Whether ``text`` is a DICOM UID (``fullmatch``: with ``match``, ``$`` also matched
    before a trailing newline, and ``1.2.3\\n`` passed)."""
    return len(text) <= MAX_UID_LENGTH and UID_RE.fullmatch(text) is not None


def fsync_dir(path: Path) -> None:
    """fsync a directory, so a rename or a new entry in it survives a crash."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(data: bytes, tmp_dir: Path, final: Path) -> None:
    """Write ``data`` to ``final``: temporary file in ``tmp_dir``, fsync, rename, fsync the
    directory of ``final`` (created, and made durable in its parent, when missing)."""
    tmp = tmp_dir / f"{uuid.uuid4().hex}.part"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        ensure_dir(final.parent)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)


def ensure_dir(path: Path) -> None:
    """Create ``path`` (and parents) if missing, fsyncing each parent of a new directory."""
    if path.is_dir():
        return
    ensure_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        path.mkdir()
    fsync_dir(path.parent)


def encode(ds: Dataset) -> bytes:
    """Part 10 bytes of a result object (it carries its file meta)."""
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()
