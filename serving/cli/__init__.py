"""The ``galacto`` command line.

Every subcommand is a module with ``register(sub)``, which adds the subcommand and sets its
handler (``args.func``), and ``run(args) -> int``, which runs it and returns the exit status (a
command with actions dispatches to them in its ``run``). :mod:`serving.cli.runtime` holds what
the commands share when they run (logging, quiet loggers, the mapping from errors to exit
statuses), :mod:`serving.cli.options` the parser pieces.

Subcommands defined in ``serving`` (:data:`BUILTIN`) are registered here directly. Subcommands
of the ``training`` package (``synth``, ``train``, ``export``, ``tomo-points``, ``evaluate``,
``dataset``; most need the ``train`` extra) are contributed through the ``galacto.commands``
entry-point group, so that ``serving`` never imports ``training``: when the extra is not
installed, those commands are simply absent (or report which extra is missing).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from serving import __version__
from serving.cli import calibrate, detect, gateway, info, serve
from serving.cli.options import Subparsers
from serving.cli.runtime import EXIT_USAGE, configure_logging, fail, run_handler

Register = Callable[[Subparsers], None]

#: Built-in subcommands (always available with the base install), in ``--help`` order.
BUILTIN: tuple[Register, ...] = (info.register, detect.register, calibrate.register,
                                  serve.register, gateway.register)


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
    """Entry point of the ``galacto`` console script; returns the process exit status
    (:mod:`serving.cli.runtime`: the command's own, 2 for usage errors, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(verbose=args.verbose)
    if getattr(args, "_unavailable", None):
        return fail(args._unavailable)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    return run_handler(func, args)
