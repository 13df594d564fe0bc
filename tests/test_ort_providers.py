"""ONNX Runtime execution providers (GALACTO_ORT_PROVIDERS): CPU by default and always as the
fallback, GPU providers only when the installed ONNX Runtime has them, with a clear error
otherwise. (A GPU is never needed by a test.)"""

from __future__ import annotations

import onnxruntime as ort
import pytest

from serving.pipeline.model import (
    ModelError,
    default_model_dir,
    load_model,
    resolve_providers,
)


def test_default_and_cpu_are_the_cpu_provider() -> None:
    assert resolve_providers(None) == ["CPUExecutionProvider"]
    assert resolve_providers(["cpu"]) == ["CPUExecutionProvider"]
    assert resolve_providers(["CPUExecutionProvider", "cpu"]) == ["CPUExecutionProvider"]


def test_unknown_provider_is_refused_by_name() -> None:
    with pytest.raises(ModelError, match="unknown ONNX Runtime provider 'tpu'"):
        resolve_providers(["tpu"])


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(),
                    reason="this ONNX Runtime has CUDA")
def test_cuda_without_the_gpu_package_says_what_is_available() -> None:
    with pytest.raises(ModelError, match="CUDAExecutionProvider is not available") as exc:
        resolve_providers(["cuda"])
    assert "CPUExecutionProvider" in str(exc.value) and "onnxruntime-gpu" in str(exc.value)


def test_model_loads_on_the_requested_providers() -> None:
    model = load_model(default_model_dir(), providers=["cpu"])
    assert model.session.get_providers() == ["CPUExecutionProvider"]


def test_settings_refuse_a_provider_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from serving.gateway.settings import GatewaySettings
    from serving.settings import Settings

    assert Settings().ort_providers == ["cpu"]
    monkeypatch.setenv("GALACTO_ORT_PROVIDERS", "cpu")
    assert Settings().ort_providers == ["cpu"]
    monkeypatch.setenv("GALACTO_ORT_PROVIDERS", "tpu")
    with pytest.raises(ValidationError, match="unknown ONNX Runtime provider"):
        Settings()
    monkeypatch.setenv("GALACTO_GATEWAY_ORT_PROVIDERS", "tpu,cpu")
    with pytest.raises(ValidationError, match="unknown ONNX Runtime provider"):
        GatewaySettings()
