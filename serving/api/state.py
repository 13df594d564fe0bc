"""What the app holds between requests: settings, the model (loaded in the background at
startup), the inference limiter, the triage thread pool, the result store, the volumes kept
for ``GET /v1/render/{render_id}`` and the metrics."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from starlette.requests import Request

from serving.api.errors import ApiError
from serving.api.limiter import InferenceLimiter
from serving.api.metrics import Metrics
from serving.api.render_cache import RenderCache
from serving.api.store import ResultStore
from serving.api.turns import Turns
from serving.pipeline.calibration import calibrated_model
from serving.pipeline.model import DetectorModel, ModelError, default_model_dir, load_model
from serving.settings import Settings

log = logging.getLogger("galacto.api")


class AppState:
    """Per-app state; ``ready`` once the model is loaded and has run one warm-up inference."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model: DetectorModel | None = None
        self.ready = False
        self.load_error: str | None = None
        self.limiter = InferenceLimiter(settings.max_concurrent_inferences, settings.max_queue,
                                        settings.retry_after_s,
                                        per_client=settings.max_admitted_per_client,
                                        suspect_hold_s=settings.suspect_hold_s)
        self.triage_pool = ThreadPoolExecutor(max_workers=settings.triage_workers,
                                              thread_name_prefix="triage")
        self.triage_turns = Turns(settings.triage_workers)
        self.store = ResultStore(settings.results_dir)
        self.render_cache = RenderCache(settings.render_cache_bytes)
        self.metrics = Metrics()
        self._thread: threading.Thread | None = None

    def start_loading(self) -> None:
        """Load and warm up the model in a background thread (``/readyz`` tells when done)."""
        self._thread = threading.Thread(target=self._load, name="model-load", daemon=True)
        self._thread.start()

    def wait_loaded(self, timeout: float | None = None) -> None:
        """Block until loading finished (or failed)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _load(self) -> None:
        t0 = time.perf_counter()
        try:
            folder = self.settings.model or default_model_dir()
            model = calibrated_model(load_model(folder, threads=self.settings.ort_threads,
                                                providers=self.settings.ort_providers),
                                     self.settings.calibration)
            model.operating_point(self.settings.operating_point)  # refuse an unknown name now
            d = max(int(model.preprocess.size_divisible), 32)
            model.run(np.zeros((4 * d, 4 * d), np.float32))  # warm-up
            if model.tomo_network is not None:  # and the network volumes run
                model.for_volumes().run_once(np.zeros((4 * d, 4 * d), np.float32))
        except (ModelError, OSError) as exc:
            self.load_error = str(exc)
            log.error("model could not be loaded: %s", exc)
            return
        self.model = model
        self.metrics.model.info({"name": model.name, "version": model.version,
                                 "operating_point": model.operating_point(
                                     self.settings.operating_point).name})
        self.ready = True
        net = model.tomo_network
        log.info("model %s %s loaded and warmed up in %.1f s; operating points from %s%s",
                 model.name, model.version, time.perf_counter() - t0,
                 model.operating_points_source,
                 "" if net is None else f"; tomosynthesis volumes run the network of "
                 f"{net.label} ({net.file})")

    def require_model(self) -> DetectorModel:
        """The model, or 503 ``not_ready`` while it is loading (or failed to load)."""
        if self.model is None or not self.ready:
            why = f"the model failed to load: {self.load_error}" if self.load_error else \
                "the model is still loading"
            raise ApiError(503, "not_ready", why, headers={"Retry-After": "5"})
        return self.model


def get_state(request: Request) -> AppState:
    """The :class:`AppState` of the app serving ``request``."""
    state: AppState = request.app.state.galacto
    return state
