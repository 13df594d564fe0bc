"""Triage: each part parsed once by the guarded intake and its header checked, in a small
thread pool of its own, before the request waits for an inference slot.

A part is parsed whole (:func:`serving.pipeline.intake.parse.parsed`: deflate bombs and
element floods are refused before they are inflated or parsed whole) and its header checked:
a tomosynthesis volume, or raw DBT projections (:func:`serving.gateway.volumes.
reads_as_volume`), by :func:`serving.pipeline.dicom_in.read_volume_header` (SOP class, frames
and pixels within ``GALACTO_MAX_FRAMES`` and ``GALACTO_MAX_VOLUME_PIXELS``, functional
groups, spacing, and every check of a 2D header; projections refused naming what to send),
anything else by :func:`serving.pipeline.dicom_in.read_header` (SOP class, transfer syntax,
grayscale single frame, pixel format and size, spacing); then the UIDs the request's results
need (:func:`uid_problem`). A refused part is listed with the header that was
parsed, if any, and never parsed again; an accepted part keeps its parsed data set, which the
inference slot decodes (:func:`serving.api.analysis.read_parts`) without a second parse, and
its bytes are dropped. A request whose parts are all refused is answered from triage and
never waits for the slot, so refused bodies cannot hold up the valid requests queued there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from serving.api.body import Part
from serving.api.errors import intake_status, public_message
from serving.api.schemas import RejectedOut
from serving.gateway.volumes import IntakeLimits, reads_as_volume
from serving.pipeline.dicom_in import read_header, read_volume_header
from serving.pipeline.errors import IntakeError
from serving.pipeline.intake.parse import (
    SharedBudget,
    guard,
    header_of,
    parsed,
    shared_budget,
)
from serving.pipeline.intake.values import attr
from serving.settings import Settings
from serving.storage import is_uid

#: Which source UIDs triage checks: none (JSON results), those DICOM results copy
#: (``outputs``: one value of UI syntax), or those and a Study Instance UID the result store
#: can file (``store``: also no leading zeros, :func:`serving.storage.is_uid`).
UidCheck = Literal["none", "outputs", "store"]
#: Source attributes every DICOM result copies or references.
RESULT_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
#: The UI value representation: digits and dots, at most 64 characters (PS3.5 6.2).
UI_RE = re.compile(r"[0-9.]{1,64}")


@dataclass
class Checked:
    """A part that passed triage: the part (without its bytes), its parsed data set, and
    whether it is a tomosynthesis volume (read with ``read_volume`` in the slot)."""

    part: Part
    dataset: Dataset
    volume: bool = False


@dataclass
class Triaged:
    """The parts of one request after triage, refused ones with the header parsed, if any."""

    accepted: list[Checked] = field(default_factory=list)
    rejected: list[RejectedOut] = field(default_factory=list)
    rejected_headers: list[Dataset | None] = field(default_factory=list)

    def refuse(self, rejected: RejectedOut, header: Dataset | None) -> None:
        """List a refused part."""
        self.rejected.append(rejected)
        self.rejected_headers.append(header)


def limits_of(settings: Settings) -> IntakeLimits:
    """The intake bounds of the service's settings: ``GALACTO_MAX_PIXELS``,
    ``GALACTO_MAX_FRAMES``, ``GALACTO_MAX_VOLUME_PIXELS`` (default: ``GALACTO_MAX_PIXELS``)."""
    return IntakeLimits(max_pixels=settings.max_pixels, max_frames=settings.max_frames,
                        max_volume_pixels=settings.volume_pixels)


def uid_problem(ds: Dataset, check: UidCheck) -> str | None:
    """What is wrong with the result UIDs of ``ds`` (naming the attribute, never quoting
    its value), or None."""
    if check == "none":
        return None
    for keyword in RESULT_UIDS:
        try:
            value = ds.get(keyword)
        except Exception:  # a value pydicom cannot convert
            return f"{attr(keyword)} cannot be read"
        if isinstance(value, MultiValue | list):
            return f"{attr(keyword)} has {len(value)} values"
        text = "" if value is None else str(value)
        if not text:
            return f"{attr(keyword)} is {'empty' if keyword in ds else 'absent'}"
        if not UI_RE.fullmatch(text):
            return f"{attr(keyword)} is not a valid UID"
        if check == "store" and keyword == "StudyInstanceUID" and not is_uid(text):
            return f"{attr(keyword)} is not a UID results can be stored under (no empty " \
                   "components, no leading zeros)"
    return None


def intake_refusal(part: Part, exc: IntakeError) -> RejectedOut:
    """The listing of a part the intake refused."""
    return RejectedOut(part=part.index, name=part.name, detail=exc.code,
                       status=intake_status(exc), message=public_message(exc))


def invalid_uid(part: Part, problem: str) -> RejectedOut:
    """The listing of a part whose result UIDs fail the check."""
    return RejectedOut(part=part.index, name=part.name, detail="invalid_uid", status=400,
                       message=f"{problem}; expected one DICOM UID (digits and dots, at most 64 "
                               "characters)")


def _header_or_none(ds: Dataset) -> Dataset | None:
    """The header of parsed ``ds`` to name a refused part, or None when even that fails
    (the element budget is spent: a flood). Called inside the guarded parse."""
    try:
        with guard():
            return header_of(ds)
    except IntakeError:
        return None


def check_part(part: Part, limits: IntakeLimits, uids: UidCheck, out: Triaged) -> None:
    """Parse ``part`` once and check its header (as a volume or as a 2D image) and UIDs; add
    it to ``out``. Every element (nested sequences too) is converted inside the guarded parse,
    under its element budget: a flood hidden in sequences is refused here, not later in the
    inference slot."""
    try:
        with parsed(part.data, header_only=False, max_pixels=limits.parse_pixels) as ds:
            try:
                volume = reads_as_volume(ds)
                if volume:
                    read_volume_header(ds, max_frames=limits.max_frames,
                                       max_pixels=limits.max_volume_pixels)
                else:
                    read_header(ds, max_pixels=limits.max_pixels)
                header = header_of(ds)
            except IntakeError as exc:
                out.refuse(intake_refusal(part, exc), _header_or_none(ds))
                return
    except IntakeError as exc:  # the bytes could not be parsed
        out.refuse(intake_refusal(part, exc), None)
        return
    problem = uid_problem(header, uids)
    if problem is not None:
        out.refuse(invalid_uid(part, problem), header)
        return
    out.accepted.append(Checked(replace(part, data=b""), ds, volume))


#: Data elements and sequence items all parts of one request may hold together (about 16 us
#: each to parse: 1.6 s at most; an image header has a few hundred).
REQUEST_ELEMENTS = 100_000


def triage(parts: Sequence[Part], limits: IntakeLimits, uids: UidCheck = "none",
           held_bytes: int | None = None) -> Triaged:
    """Every part through :func:`check_part`, in order, under one :class:`SharedBudget` for
    the request: :data:`REQUEST_ELEMENTS` elements, and ``held_bytes`` (default: the bodies'
    size limit, ``GALACTO_MAX_UPLOAD_MB``) of data sets held, inflated where deflated. Once it
    is spent the remaining parts are refused without being parsed."""
    out = Triaged()
    budget = SharedBudget(elements=REQUEST_ELEMENTS,
                          held_bytes=held_bytes if held_bytes is not None else 2**62)
    with shared_budget(budget):
        for part in parts:
            check_part(part, limits, uids, out)
    return out
