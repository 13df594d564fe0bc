"""The gateway's job table (:mod:`serving.gateway.job_store`): a re-send that races a
release (retention or ``galacto gateway purge``, possibly in another process) is refused and
changes nothing, instead of queueing a job whose files are gone."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from serving.gateway.job_store import JobStateError, JobStore
from serving.gateway.jobs import JobState
from serving.gateway.spool import Spool

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _finished_job(spool: Spool) -> int:
    """One job stored, analysed and finished as ``sent`` (its instance kept)."""
    job_id = spool.store(b"\0" * 132, study_uid=generate_uid(), sop_uid=generate_uid(),
                         sop_class_uid=SECONDARY_CAPTURE, calling_ae="X",
                         now=time.time() - 3600).job_id
    store = spool.job_store
    assert store.mark_waiting(job_id)
    assert store.claim_job(job_id)
    store.finish(job_id, JobState.SENT)
    return job_id


def test_resend_queues_a_finished_job(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", keep_instances=True)
    try:
        job_id = _finished_job(spool)
        assert spool.job_store.resend(job_id).state is JobState.WAITING
    finally:
        spool.close()


def test_resend_racing_a_release_is_refused_and_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path / "spool", keep_instances=True)
    try:
        job_id = _finished_job(spool)
        store = spool.job_store
        seen = store.job(job_id)  # what resend's checks read: finished, not released,
        present = store.instances(job_id)  # its instance files still there
        other = JobStore(tmp_path / "spool")  # another process releases the job meanwhile
        try:
            assert other.release(job_id)
        finally:
            other.close()
        monkeypatch.setattr(store, "job", lambda _id: seen)
        monkeypatch.setattr(store, "instances", lambda _id: present)
        with pytest.raises(JobStateError, match="changed while it was being queued again"):
            store.resend(job_id)
        monkeypatch.undo()
        after = store.job(job_id)
        assert after.state is JobState.SENT and after.released_at is not None
    finally:
        spool.close()
