"""Parser pieces shared by the ``galacto`` subcommands: adding a subcommand with its handler,
and the options several subcommands take in the same form."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

#: What ``add_subparsers()`` returns: the ``galacto`` subcommands, or a command's actions.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
#: A subcommand's handler: the parsed arguments -> the exit status.
Handler: TypeAlias = Callable[[argparse.Namespace], int]

#: ``--model`` help of the commands that load the model in this process.
MODEL_HELP = "models/<name>/<version> (default: $GALACTO_MODEL or the bundled galacto-small)"


def add_command(
    sub: Subparsers,
    name: str,
    *,
    help: str,
    description: str | None = None,
    epilog: str | None = None,
    func: Handler | None = None,
) -> argparse.ArgumentParser:
    """Add the subcommand ``name`` to ``sub`` and return its parser.

    Args:
        sub: the subcommands (or a command's actions) to add it to.
        name: what is typed on the command line.
        help: one line in the parent's list of subcommands.
        description: the text atop the subcommand's own ``--help``.
        epilog: the text below its options in ``--help``.
        func: the handler run for it (``args.func``); None to set it later.
    """
    p = sub.add_parser(name, help=help, description=description, epilog=epilog)
    if func is not None:
        p.set_defaults(func=func)
    return p


def add_model_option(p: argparse.ArgumentParser, help: str = MODEL_HELP) -> None:
    """Add ``--model DIR`` (a path, default None: the commands resolve the default model)."""
    p.add_argument("--model", type=Path, default=None, help=help)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (otherwise a usage error naming the value)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
