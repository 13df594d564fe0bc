"""The ``galacto`` command line.

Subcommands defined in ``serving`` are registered here directly. Subcommands that need the
``train`` extra (``synth``, ``train``, ``evaluate``, ``export``) are contributed by the
``training`` package through the ``galacto.commands`` entry-point group, so that ``serving``
never imports ``training``: when the extra is not installed, those commands are simply absent
(or report which extra is missing).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from serving import __version__
from serving.cli.calibrate import register as register_calibrate
from serving.cli.detect import register as register_detect
from serving.cli.gateway import register as register_gateway
from serving.cli.info import register as register_info
from serving.cli.options import Subparsers
from serving.cli.serve import register as register_serve
from serving.errors import CommandError
from serving.log_filters import quiet_third_party

Register = Callable[[Subparsers], None]

#: Third-party loggers that are chatty at INFO level.
#: Built-in subcommands (always available with the base install).
BUILTIN: tuple[Register, ...] = (register_info, register_detect, register_calibrate,
                                  register_serve, register_gateway)


def _plugin_commands() -> list[tuple[str, Register | None, str | None]]:
    """Load subcommand registrars from the ``galacto.commands`` entry-point group.

    Returns:
        ``(name, register_function_or_None, error_or_None)`` per entry point; a plugin that
        fails to import (its extra is not installed) is returned with the import error text.
    """
    found: list[tuple[str, Register | None, str | None]] = []
    for ep in sorted(entry_points(group="galacto.commands"), key=lambda e: e.name):
        try:
            found.append((ep.name, ep.load(), None))
        except ImportError as exc:  # the extra providing it is not installed
            found.append((ep.name, None, f"{exc}"))
    return found


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="galacto",
        description="Filling-defect detection for galactograms.",
    )
    parser.add_argument("--version", action="version", version=f"galacto {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in BUILTIN:
        register(sub)
    for name, register_plugin, error in _plugin_commands():
        if register_plugin is not None:
            register_plugin(sub)
        else:
            p = sub.add_parser(name, help=f"(unavailable: {error})")
            p.set_defaults(_unavailable=f"'galacto {name}' needs the 'train' extra "
                           f"(pip install 'galacto[train]'): {error}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``galacto`` console script; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:  # codecs log every frame, with tracebacks
        quiet_third_party(handler, verbose=args.verbose)
    if getattr(args, "_unavailable", None):
        print(f"galacto: error: {args._unavailable}", file=sys.stderr)
        return 2
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except CommandError as exc:
        print(f"galacto: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # a command of an extra that is not installed
        print(f"galacto: error: 'galacto {args.command}' needs a module that is not installed "
              f"({exc.name}); install the extra it belongs to, e.g. pip install "
              "'galacto[train]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("galacto: interrupted", file=sys.stderr)
        return 130

