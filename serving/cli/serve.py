"""``galacto serve``: the HTTP service (FastAPI on uvicorn) with the bundled model.

Settings come from ``GALACTO_*`` environment variables (see :mod:`serving.settings` and, for
the embedded gateway, :mod:`serving.gateway.settings`); the flags override the most common
ones, and the settings objects so made are passed to the app (the environment is left as it
is). A listen address other than loopback without API keys refuses to start (exit status 2)
unless ``--no-auth`` / ``GALACTO_AUTH=off`` says so. uvicorn runs with the connection, header
and body bounds of :mod:`serving.api.server`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.cli.options import Subparsers, add_command
from serving.cli.runtime import configure_service_logging
from serving.errors import CommandError

if TYPE_CHECKING:
    from serving.gateway.settings import GatewaySettings
    from serving.settings import Settings


def register(sub: Subparsers) -> None:
    """Add ``galacto serve``."""
    p = add_command(sub, "serve", func=run, help="run the HTTP service",
                    description="Serve the detector over HTTP: /v1/detect, DICOMweb "
                                "STOW-RS/WADO-RS, /v1/models, /healthz, /readyz, /metrics "
                                "and a viewer page at /. Configured by GALACTO_* "
                                "environment variables; flags override them.")
    p.add_argument("--host", default=None, help="listen address (GALACTO_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (GALACTO_PORT, 8000)")
    p.add_argument("--no-auth", action="store_true",
                   help="serve without API keys even on a non-loopback --host "
                        "(GALACTO_AUTH=off; refused by default)")
    p.add_argument("--model", type=Path, default=None,
                   help="models/<name>/<version> (GALACTO_MODEL, the bundled galacto-small)")
    p.add_argument("--operating-point", default=None,
                   help="default operating point (GALACTO_OPERATING_POINT, the card's)")
    p.add_argument("--calibration", type=Path, default=None, metavar="FILE",
                   help="site calibration from `galacto calibrate` (GALACTO_CALIBRATION)")
    p.add_argument("--results-dir", type=Path, default=None,
                   help="where STOW-RS results are kept (GALACTO_RESULTS_DIR)")
    p.add_argument("--gateway", action="store_true",
                   help="also run the DICOM gateway in this process (GALACTO_GATEWAY_ENABLED; "
                        "configured by GALACTO_GATEWAY_*)")
    p.add_argument("--plain-logs", action="store_true",
                   help="human-readable log lines instead of JSON (GALACTO_LOG_JSON=false)")


def _check_calibration(settings: Settings) -> None:
    """Refuse, before listening, a GALACTO_CALIBRATION file that is unreadable or made for
    another model (the model itself loads in the background)."""
    from serving.pipeline.calibration import check_file_for_folder
    from serving.pipeline.model import ModelError, default_model_dir

    if settings.calibration is None:
        return
    try:
        check_file_for_folder(settings.calibration, settings.model or default_model_dir())
    except ModelError as exc:
        raise CommandError(str(exc)) from None


def _check_operating_point(settings: Settings) -> None:
    """Refuse, before listening, an operating point the model (or its site calibration) does
    not have: the model loads in the background, and a server that can never be ready is
    worse than a clear error."""
    from serving.pipeline.calibration import read_calibration
    from serving.pipeline.model import ModelError, default_model_dir, read_card

    if not settings.operating_point:
        return
    try:
        folder = settings.model or default_model_dir()
        names = set(read_card(folder).get("operating_points") or {})
        if settings.calibration is not None:
            names = set(read_calibration(settings.calibration).points)
    except (ModelError, OSError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    if settings.operating_point not in names:
        raise CommandError(f"--operating-point {settings.operating_point!r}: the model has "
                           f"{', '.join(sorted(names))}")


def _gateway_settings(args: argparse.Namespace) -> GatewaySettings:
    """The embedded gateway's settings: ``GALACTO_GATEWAY_*``, enabled by ``--gateway`` too,
    and applying ``--calibration`` when given (else ``GALACTO_CALIBRATION``), as the HTTP API
    does.

    Raises:
        CommandError: the settings are invalid, or the gateway is enabled and they would
            expose it (non-loopback without an allow-list) or its port cannot be listened on:
            the same check ``galacto gateway run`` makes, as a message and exit status 2
            instead of a failed start-up.
    """
    from pydantic import ValidationError

    from serving.gateway.settings import GatewaySettings

    overrides: dict[str, Any] = {}
    if args.gateway:
        overrides["enabled"] = True
    if args.calibration is not None:
        overrides["calibration"] = args.calibration
    try:
        settings = GatewaySettings(**overrides)
    except ValidationError as exc:
        raise CommandError(f"invalid gateway settings: {exc}") from None
    if not settings.enabled:
        return settings
    exposure = settings.exposure_error()
    if exposure is not None:
        raise CommandError(f"the gateway refuses to start: {exposure}")
    _check_port(settings.host, settings.port)
    return settings


def _check_port(host: str, port: int) -> None:
    """Refuse, before loading anything, an address that cannot be listened on (in use, or
    not an address of this machine)."""
    import socket

    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (another "
                           "server there? choose one with --port)") from None


def run(args: argparse.Namespace) -> int:
    """Start uvicorn; returns when the server stops."""
    import logging

    import uvicorn
    from pydantic import ValidationError

    from serving.api.main import create_app
    from serving.api.server import uvicorn_config
    from serving.settings import Settings, SettingsError

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port),
                                   ("model", args.model),
                                   ("operating_point", args.operating_point),
                                   ("calibration", args.calibration),
                                   ("results_dir", args.results_dir)) if v is not None}
    if args.plain_logs:
        overrides["log_json"] = False
    if args.no_auth:
        overrides["auth"] = False
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise CommandError(f"invalid settings: {exc}") from None
    configure_service_logging(json_lines=settings.log_json, verbose=args.verbose)
    if settings.model is not None and not (settings.model / "model.json").is_file():
        raise CommandError(f"{settings.model}: not a model folder (no model.json)")
    _check_calibration(settings)
    _check_operating_point(settings)
    _check_port(settings.host, settings.port)
    gateway_settings = _gateway_settings(args)
    try:
        app = create_app(settings, gateway_settings=gateway_settings)
    except SettingsError as exc:
        raise CommandError(str(exc)) from None
    config = uvicorn_config(app, settings)
    logging.getLogger("galacto.api").info(
        "serving on http://%s:%d (docs at /docs, viewer at /)", settings.host, settings.port)
    uvicorn.Server(config).run()
    return 0
