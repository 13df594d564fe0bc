"""``galacto gateway run|jobs|resend|purge``: the DICOM gateway from the command line.

Settings come from ``GALACTO_GATEWAY_*`` environment variables (see
:mod:`serving.gateway.settings`); the flags override the common ones, and the resulting
:class:`~serving.gateway.settings.GatewaySettings` is what the actions are given. ``jobs``,
``resend`` and ``purge`` work on the spool folder directly, whether or not a gateway is
running on it.

Each action has its handler (:data:`ACTIONS`; argparse sets the action's as ``args.func``);
:func:`run`, the command's handler, dispatches to them and shows the help (exit status 2)
when no action is given. ``python -m serving.cli.gateway ACTION ...`` (:func:`main`) is
``galacto gateway ACTION ...``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serving.cli.options import Handler, Subparsers, add_command, add_model_option
from serving.cli.runtime import EXIT_USAGE, configure_service_logging
from serving.errors import CommandError


def register(sub: Subparsers) -> None:
    """Add ``galacto gateway`` and its actions."""
    p = add_command(sub, "gateway", func=run, help="DICOM gateway: C-STORE in, results back",
                    description="A DICOM node for PACS: receives studies by C-STORE, keeps them "
                                "in a durable spool, runs the detector once a study is complete, "
                                "and sends the results back by C-STORE (or STOW-RS). Configured "
                                "by GALACTO_GATEWAY_* variables.")
    actions = p.add_subparsers(dest="gateway_action", metavar="ACTION")
    _add_run(actions)
    _add_jobs(actions)
    _add_resend(actions)
    _add_purge(actions)


def _spool_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spool-dir", type=Path, default=None,
                   help="spool folder (GALACTO_GATEWAY_SPOOL_DIR, ./galacto-spool)")


def _add_run(actions: Subparsers) -> None:
    p = add_command(actions, "run", func=cmd_run, help="run the gateway (until Ctrl-C or SIGTERM)")
    p.add_argument("--ae-title", default=None, help="our AE title (GALACTO_GATEWAY_AE_TITLE)")
    p.add_argument("--host", default=None, help="listen address (127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="DICOM port (11112; 0: any free)")
    _spool_flag(p)
    p.add_argument("--destination", default=None, metavar="AE@HOST:PORT",
                   help="where results are sent by C-STORE (GALACTO_GATEWAY_DESTINATION_*)")
    p.add_argument("--stow-url", default=None, help="send results by STOW-RS to this "
                   "DICOMweb base URL instead (GALACTO_GATEWAY_STOW_URL)")
    p.add_argument("--allowed-callers", default=None, metavar="AE[@HOST],...",
                   help="calling AE titles allowed, AE@HOST being the secure form "
                        "(GALACTO_GATEWAY_ALLOWED_CALLERS; default: anyone, which only a "
                        "loopback --host or GALACTO_GATEWAY_ALLOW_ANY=true accepts)")
    p.add_argument("--quiet-period", type=float, default=None, metavar="SECONDS",
                   help="seconds without a new instance before a study is processed (10)")
    p.add_argument("--workers", type=int, default=None, help="studies processed at once (1)")
    p.add_argument("--results", default=None, metavar="KINDS",
                   help="result objects, comma list of sr, tid1500, gsps (sr)")
    add_model_option(p, help="models/<name>/<version>")
    p.add_argument("--operating-point", default=None, help="operating point name")
    p.add_argument("--plain-logs", action="store_true",
                   help="human-readable log lines instead of JSON")


def _add_jobs(actions: Subparsers) -> None:
    p = add_command(actions, "jobs", func=cmd_jobs, help="list the study jobs of a spool")
    _spool_flag(p)
    p.add_argument("--state", default=None, help="only jobs in this state")
    p.add_argument("--limit", type=int, default=50, help="newest N jobs (50)")
    p.add_argument("--uids", action="store_true",
                   help="show Study Instance UIDs (default: a short hash of them)")
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")


def _add_resend(actions: Subparsers) -> None:
    p = add_command(actions, "resend", func=cmd_resend, help="send a job's results again",
                    description="Queue a sent, kept or failed job for sending again. When a "
                                "gateway runs on the spool it sends the job; otherwise this "
                                "command sends it itself (one attempt).")
    p.add_argument("job", type=int, help="job number (see `galacto gateway jobs`)")
    _spool_flag(p)
    p.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                   help="how long to wait for a running gateway to finish it (60)")


def _add_purge(actions: Subparsers) -> None:
    p = add_command(actions, "purge", func=cmd_purge, help="release the files of finished jobs",
                    description="Delete the instance and result files of finished jobs (the "
                                "job records stay; a released job cannot be re-sent, and a "
                                "study sent again after it is analysed again). A running "
                                "gateway does this by itself for jobs older than "
                                "GALACTO_GATEWAY_RETAIN_HOURS.")
    _spool_flag(p)
    p.add_argument("--older-than", default=None, metavar="AGE",
                   help="only jobs finished at least AGE ago: 90m, 36h, 7d, or seconds "
                        "(default: GALACTO_GATEWAY_RETAIN_HOURS, 168h; 0: all)")
    p.add_argument("--state", default=None, metavar="STATES",
                   help="comma list of sent, kept, skipped, failed (default: all four)")
    p.add_argument("--dry-run", action="store_true",
                   help="list what would be released; delete nothing")
    p.add_argument("--uids", action="store_true",
                   help="show Study Instance UIDs (default: a short hash of them)")


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Any:
    """GatewaySettings from the environment and the flags present in ``args``."""
    from pydantic import ValidationError

    from serving.gateway.settings import GatewaySettings, parse_destination

    flags = {"ae_title": "ae_title", "host": "host", "port": "port", "spool_dir": "spool_dir",
             "stow_url": "stow_url", "allowed_callers": "allowed_callers",
             "quiet_period": "quiet_period_s", "workers": "workers", "results": "results",
             "model": "model", "operating_point": "operating_point"}
    overrides: dict[str, Any] = {field: getattr(args, flag) for flag, field in flags.items()
                                 if getattr(args, flag, None) is not None}
    try:
        if getattr(args, "destination", None):
            ae, host, port = parse_destination(args.destination)
            overrides.update(destination_ae_title=ae, destination_host=host,
                             destination_port=port)
        return GatewaySettings(**overrides)
    except (ValidationError, ValueError) as exc:
        raise CommandError(f"invalid gateway settings: {exc}") from None


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """Run the gateway until SIGINT/SIGTERM."""
    from serving.gateway.service import Gateway, GatewayError
    from serving.pipeline.model import ModelError

    settings = _settings(args)
    configure_service_logging(json_lines=not args.plain_logs, verbose=args.verbose)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        gateway = Gateway(settings).start()
    except (GatewayError, ModelError, OSError) as exc:
        raise CommandError(str(exc)) from None
    try:
        stop.wait()
    finally:
        logging.getLogger("galacto.gateway").info("stopping")
        gateway.stop()
    return 0


# --------------------------------------------------------------------------------------------
# jobs
# --------------------------------------------------------------------------------------------


def _open_spool(args: argparse.Namespace) -> Any:
    from serving.gateway.settings import GatewaySettings
    from serving.gateway.spool import Spool

    folder = args.spool_dir or GatewaySettings().spool_dir
    _require_spool(Path(folder))
    return Spool(Path(folder))


def _require_spool(folder: Path) -> None:
    """:class:`CommandError` unless ``folder`` holds a gateway spool (nothing is created)."""
    from serving.gateway.spool import DB_NAME

    if not (folder / DB_NAME).is_file():
        raise CommandError(f"{folder}: not a gateway spool (no {DB_NAME}); pass --spool-dir")


def _when(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _job_json(job: Any) -> str:
    from dataclasses import asdict

    data = asdict(job)
    data["state"] = job.state.value
    return json.dumps(data, default=str)


def cmd_jobs(args: argparse.Namespace) -> int:
    """Print the spool's jobs as a table (or JSON lines)."""
    from rich.console import Console
    from rich.table import Table

    from serving.gateway.spool import JobState, uid_tag

    try:
        state = JobState(args.state) if args.state else None
    except ValueError:
        raise CommandError(f"unknown state {args.state!r}; expected one of "
                           f"{', '.join(s.value for s in JobState)}") from None
    spool = _open_spool(args)
    try:
        jobs = spool.jobs(state=state, limit=args.limit)
        counts = spool.counts()
    finally:
        spool.close()
    if args.json:
        for job in jobs:
            print(_job_json(job))
        return 0
    summary = ", ".join(f"{s.value} {n}" for s, n in counts.items() if n) or "none"
    table = Table(title=f"gateway jobs ({summary})")
    for column in ("job", "state", "study", "received", "instances", "findings", "results",
                   "attempts", "duration", "reason"):
        table.add_column(column, justify="right" if column in (
            "job", "instances", "findings", "results", "attempts", "duration") else "left")
    for job in jobs:
        duration = "" if job.finished_at is None else f"{job.finished_at - job.created_at:.1f} s"
        table.add_row(str(job.id), job.state.value,
                      job.study_instance_uid if args.uids else uid_tag(job.study_instance_uid),
                      _when(job.created_at),
                      f"{job.instances_analysed}/{job.instances_received}"
                      + (f" ({len(job.skipped)} skipped)" if job.skipped else ""),
                      str(job.findings), f"{job.results_sent}/{job.results_total}",
                      str(job.attempts), duration, (job.reason or "")[:80])
    Console().print(table)
    return 0


# --------------------------------------------------------------------------------------------
# resend
# --------------------------------------------------------------------------------------------


def cmd_resend(args: argparse.Namespace) -> int:
    """Queue the job again; send it here when no gateway runs on the spool."""
    from serving.gateway.service import Gateway, GatewayError, spool_in_use
    from serving.gateway.spool import TERMINAL, JobState, SpoolError

    settings = _settings(args)
    _require_spool(Path(settings.spool_dir))  # a typo must not create an empty spool
    if spool_in_use(settings.spool_dir):
        spool = _open_spool(args)
        try:
            job = spool.resend(args.job)
            print(f"job {job.id} queued for re-send; the running gateway sends it")
            job = _wait(spool, args.job, args.wait)
        except SpoolError as exc:
            raise CommandError(str(exc)) from None
        finally:
            spool.close()
    else:
        gateway = Gateway(settings, listen=False)
        try:
            gateway.open()
            gateway.resend(args.job)
            job = gateway.process_now(args.job)
        except (SpoolError, GatewayError) as exc:
            raise CommandError(str(exc)) from None
        finally:
            gateway.close()
    print(f"job {job.id}: {job.state.value}" + (f" ({job.reason})" if job.reason else ""))
    return 0 if job.state in TERMINAL and job.state is not JobState.FAILED else 1


# --------------------------------------------------------------------------------------------
# purge
# --------------------------------------------------------------------------------------------


def _purge_options(args: argparse.Namespace) -> tuple[float, list[Any]]:
    """``(older than, seconds; states)`` from the flags; :class:`CommandError` when bad."""
    from serving.gateway.jobs import TERMINAL
    from serving.gateway.retention import parse_age, parse_states

    try:
        older = (parse_age(args.older_than) if args.older_than is not None
                 else _settings(args).retain_s)
        states = parse_states(args.state) if args.state is not None else sorted(TERMINAL)
    except ValueError as exc:
        raise CommandError(f"purge: {exc}") from None
    return older, states


def cmd_purge(args: argparse.Namespace) -> int:
    """Release the files of finished jobs; print each job and the total."""
    from serving.gateway.retention import purge
    from serving.gateway.spool import uid_tag

    older, states = _purge_options(args)
    spool = _open_spool(args)
    try:
        report = purge(spool, older, states, dry_run=args.dry_run)
    finally:
        spool.close()
    verb = "would release" if report.dry_run else "released"
    for held in report.jobs:
        study = held.study_instance_uid if args.uids else uid_tag(held.study_instance_uid)
        print(f"job {held.job_id} {held.state.value} study {study} finished "
              f"{_when(held.finished_at)}: {verb} {held.instance_files} instance file(s), "
              f"{held.result_files} result file(s), {held.size / 2**20:.1f} MiB")
    print(f"{verb} {len(report.jobs)} job(s), {report.bytes / 2**20:.1f} MiB "
          f"(states {','.join(s.value for s in states)}, finished at least "
          f"{older / 3600:g} h ago)")
    return 0


def _wait(spool: Any, job_id: int, timeout_s: float) -> Any:
    from serving.gateway.spool import TERMINAL

    deadline = time.monotonic() + timeout_s
    job = spool.job(job_id)
    while job.state not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.2)
        job = spool.job(job_id)
    return job


#: The handler of each action of ``galacto gateway``.
ACTIONS: dict[str, Handler] = {"run": cmd_run, "jobs": cmd_jobs, "resend": cmd_resend,
                               "purge": cmd_purge}


def run(args: argparse.Namespace) -> int:
    """Run ``galacto gateway ACTION``: the action's handler (:data:`ACTIONS`); without an
    action, print the command's help and return 2."""
    handler = ACTIONS.get(getattr(args, "gateway_action", None) or "")
    if handler is None:
        _command_parser().print_help()
        return EXIT_USAGE
    return handler(args)


def _command_parser() -> argparse.ArgumentParser:
    """The parser of ``galacto gateway`` (for its help)."""
    parser = argparse.ArgumentParser(prog="galacto")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    return sub.choices["gateway"]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m serving.cli.gateway ACTION ...``: ``galacto gateway ACTION ...`` (the same
    parser, logging and exit statuses: :func:`serving.cli.main`); ``argv`` defaults to
    ``sys.argv[1:]``."""
    from serving.cli import main as galacto

    return galacto(["gateway", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
