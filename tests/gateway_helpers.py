"""Starting in-process DICOM gateways for the gateway tests: on a free localhost port, with
tiny timings, and with no ``GALACTO_GATEWAY_*`` variable of the environment leaking into their
settings."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from serving.gateway import Gateway, GatewaySettings
from serving.pipeline.model import DetectorModel

#: Quiet period of the test gateways, seconds.
QUIET_S = 0.5


def clear_gateway_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every ``GALACTO_GATEWAY_*`` environment variable for the current test."""
    for key in list(os.environ):
        if key.startswith("GALACTO_GATEWAY_"):
            monkeypatch.delenv(key)


@contextmanager
def gateway_factory(spool_dir: Path, model: DetectorModel,
                    **defaults: Any) -> Iterator[Callable[..., Gateway]]:
    """A function that starts a gateway with ``model`` and its spool in ``spool_dir``, on a
    free port with tiny timings (quiet period :data:`QUIET_S`, backoff 0.1 s, 2 send retries,
    5 s network timeout); ``defaults`` replace those settings, and the function's keyword
    arguments replace both. Every gateway it started is stopped on exit."""
    started: list[Gateway] = []

    def make(**overrides: Any) -> Gateway:
        values: dict[str, Any] = {"port": 0, "spool_dir": spool_dir,
                                  "quiet_period_s": QUIET_S, "backoff_s": 0.1,
                                  "send_retries": 2, "network_timeout_s": 5}
        values.update(defaults)
        values.update(overrides)
        gateway = Gateway(GatewaySettings(**values), model=model).start()
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        gateway.stop()
