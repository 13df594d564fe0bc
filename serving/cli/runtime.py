"""What every ``galacto`` command shares when it runs: the logging set-up, the loggers kept
quiet, and the mapping from errors to exit statuses.

Exit statuses: what the command's ``run`` returns (0 success; 1 where a command gives it a
meaning, e.g. ``galacto info`` with a rejected file); :data:`EXIT_USAGE` (2) for usage errors:
argparse's own, a :class:`~serving.errors.CommandError`, a command whose extra is not
installed, no subcommand; :data:`EXIT_INTERRUPTED` (130) after Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Final

from serving.cli.options import Handler
from serving.errors import CommandError
from serving.log_filters import quiet_third_party

#: Exit status of a usage error, a :class:`CommandError` or a missing extra.
EXIT_USAGE: Final = 2
#: Exit status after Ctrl-C.
EXIT_INTERRUPTED: Final = 130
#: Loggers the long-running commands keep at WARNING unless ``-v`` (pynetdicom logs every
#: request; at DEBUG it logs UIDs).
QUIET_LOGGERS: Final = ("pynetdicom", "highdicom")


def configure_logging(*, verbose: bool) -> None:
    """Log to stderr at DEBUG (``verbose``) or INFO, third-party records on one line and,
    unless ``verbose``, only their errors (:func:`serving.log_filters.quiet_third_party`)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:  # codecs log every frame, with tracebacks
        quiet_third_party(handler, verbose=verbose)


def configure_service_logging(*, json_lines: bool, verbose: bool) -> None:
    """The logging of a long-running command (``serve``, ``gateway run``): JSON (or plain)
    lines on stderr (:func:`serving.api.logs.configure`) at DEBUG (``verbose``) or INFO, and
    :data:`QUIET_LOGGERS` at WARNING unless ``verbose``."""
    from serving.api.logs import configure

    configure(json_lines=json_lines, level=logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def fail(message: str) -> int:
    """Print ``galacto: error: MESSAGE`` on stderr; returns :data:`EXIT_USAGE`."""
    print(f"galacto: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def run_handler(func: Handler, args: argparse.Namespace) -> int:
    """Run a command's handler and return its exit status; the errors a command may end with
    are printed as one line on stderr and mapped to a status: :class:`CommandError` and
    :class:`ModuleNotFoundError` (the command's extra is not installed) to
    :data:`EXIT_USAGE`, :class:`KeyboardInterrupt` to :data:`EXIT_INTERRUPTED`."""
    try:
        return int(func(args) or 0)
    except CommandError as exc:
        return fail(str(exc))
    except ModuleNotFoundError as exc:  # a command of an extra that is not installed
        return fail(f"'galacto {getattr(args, 'command', None)}' needs a module that is not "
                    f"installed ({exc.name}); install the extra it belongs to, e.g. pip "
                    "install 'galacto[train]'")
    except KeyboardInterrupt:
        print("galacto: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
