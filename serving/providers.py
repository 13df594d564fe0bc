"""The ``ort_providers`` setting of the service and the gateway, checked when the settings are
read (so a provider the installed ONNX Runtime lacks stops the start with a clear message)."""

from __future__ import annotations


def check_providers(names: list[str]) -> list[str]:
    """``names`` unchanged when :func:`serving.pipeline.model.resolve_providers` accepts them.

    Raises:
        ValueError: an unknown provider, or one this ONNX Runtime does not have (the message
            lists the available ones).
    """
    from serving.pipeline.model import ModelError, resolve_providers

    try:
        resolve_providers(names)
    except ModelError as exc:
        raise ValueError(str(exc)) from None
    return names
