"""Tomosynthesis volumes kept between ``POST /v1/render`` and ``GET /v1/render/{render_id}``,
so that the viewer uploads a volume (100-500 MB) once and then scrolls through its frames.

``POST /v1/render`` of a volume keeps the parsed :class:`~serving.pipeline.dicom_in.Volume`
(its stored pixel data as received; frames are decoded one at a time, when asked for) under
a random, unguessable id (:func:`secrets.token_urlsafe`, never derived from the content), sent
back in the ``X-Galacto-Render-Id`` header (:data:`RENDER_ID_HEADER`). ``GET
/v1/render/{render_id}?frame=N`` draws frame N of that volume without the upload.

Bounds (:class:`RenderCache`): at most :data:`MAX_VOLUMES` volumes and at most
``GALACTO_RENDER_CACHE_MB`` MiB of stored pixel data (plus :data:`ENTRY_OVERHEAD` bytes per
volume for its header data sets); the least recently used volume goes first when one more is
kept, a volume bigger than the whole byte bound is not kept at all, and a volume not asked for
in :data:`IDLE_S` seconds is forgotten. ``GALACTO_RENDER_CACHE_MB=0`` keeps nothing (no id is
sent; the viewer then re-sends the file for every frame, as before).

When authentication is on, a volume is bound to the client that sent it (a digest of its API
key, :func:`serving.api.admission.client_of`): another key asking for its id is answered
exactly as for an unknown id, 404 ``render_expired``. With authentication off, the id alone
grants access (it is unguessable, 192 random bits). Every method takes a lock: the cache is
filled from the inference worker threads and read from the event loop.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from pydicom.dataset import Dataset

from serving.api.errors import ApiError
from serving.pipeline.dicom_in import Volume

__all__ = ["ENTRY_OVERHEAD", "IDLE_S", "MAX_VOLUMES", "RENDER_EXPIRED", "RENDER_ID_HEADER",
           "RenderCache", "render_expired", "stored_size"]

#: Response header of ``POST /v1/render`` naming the kept volume.
RENDER_ID_HEADER = "X-Galacto-Render-Id"
#: ``detail`` of the 404 for an id that is unknown, expired, evicted or another key's.
RENDER_EXPIRED = "render_expired"
#: Most volumes kept at once.
MAX_VOLUMES = 8
#: Seconds a kept volume that nobody asks for stays kept.
IDLE_S = 15 * 60.0
#: Bytes counted per kept volume beside its stored pixel data (header data sets, plan).
ENTRY_OVERHEAD = 16 * 1024
#: Random bytes of an id (192 bits; 32 URL-safe characters).
ID_BYTES = 24


def render_expired() -> ApiError:
    """404 ``render_expired``: no volume is kept under this id (for this client)."""
    return ApiError(404, RENDER_EXPIRED,
                    "no volume is kept under this render id: it expired, was evicted, or "
                    "was never issued to this client; send the file to POST /v1/render again")


def stored_size(volume: Volume, dataset: Dataset | None) -> int:
    """Bytes a kept ``volume`` holds (its stored pixel data plus :data:`ENTRY_OVERHEAD`):
    the length of the Pixel Data value of ``dataset`` (the parsed data set the volume was
    read from, which shares that value), else NumberOfFrames x Rows x Columns x
    BitsAllocated / 8 (the size of uncompressed data, more than compressed data holds)."""
    value: object = None  # None as well for a value left unread (deferred)
    if dataset is not None and "PixelData" in dataset:
        value = getattr(dataset.get_item("PixelData", keep_deferred=True), "value", None)
    if isinstance(value, bytes | bytearray | memoryview):
        size = len(value)
    else:
        image = volume.header.image
        size = len(volume) * image.rows * image.cols * image.bits_allocated // 8
    return size + ENTRY_OVERHEAD


@dataclass
class _Entry:
    volume: Volume
    owner: str | None
    size: int
    used: float


class RenderCache:
    """Kept volumes by id: bounded in number, bytes and idle time, least recently used
    evicted first; safe to use from several threads.

    Attributes:
        max_bytes: most bytes held (:func:`stored_size` summed); 0 disables keeping.
        max_volumes: most volumes held.
        idle_s: seconds after its last use a volume is forgotten.
        kept: volumes kept so far; ``served``: successful look-ups; ``evicted``: volumes
            dropped for room; ``expired``: volumes dropped for idleness (counters, for the
            metrics and the tests).
    """

    def __init__(self, max_bytes: int, max_volumes: int = MAX_VOLUMES, idle_s: float = IDLE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_bytes < 0 or max_volumes < 0 or idle_s <= 0:
            raise ValueError(f"need max_bytes >= 0, max_volumes >= 0 and idle_s > 0, got "
                             f"{max_bytes}, {max_volumes}, {idle_s}")
        self.max_bytes = max_bytes
        self.max_volumes = max_volumes
        self.idle_s = idle_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._held = 0
        self.kept = 0
        self.served = 0
        self.evicted = 0
        self.expired = 0

    @property
    def enabled(self) -> bool:
        """Whether volumes are kept at all."""
        return self.max_bytes > 0 and self.max_volumes > 0

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._entries)

    @property
    def held_bytes(self) -> int:
        """Bytes held now (:func:`stored_size` of every kept volume)."""
        with self._lock:
            self._expire(self._clock())
            return self._held

    def keep(self, volume: Volume, owner: str | None, size: int) -> str | None:
        """Keep ``volume`` (``size`` bytes, :func:`stored_size`) for ``owner`` (the client
        when authentication is on, else None), evicting the least recently used volumes
        until it fits.

        Returns:
            Its new id, or None when nothing is kept (disabled, or ``size`` exceeds
            ``max_bytes`` alone).
        """
        if not self.enabled or size > self.max_bytes:
            return None
        render_id = secrets.token_urlsafe(ID_BYTES)
        with self._lock:
            now = self._clock()
            self._expire(now)
            while self._entries and (len(self._entries) >= self.max_volumes
                                     or self._held + size > self.max_bytes):
                _, oldest = self._entries.popitem(last=False)
                self._held -= oldest.size
                self.evicted += 1
            self._entries[render_id] = _Entry(volume, owner, size, now)
            self._held += size
            self.kept += 1
        return render_id

    def get(self, render_id: str, owner: str | None) -> Volume:
        """The volume kept under ``render_id`` for ``owner`` (now the most recently used).

        Raises:
            ApiError: 404 ``render_expired`` when no volume is kept under that id, it was
                idle longer than ``idle_s`` or evicted, or another client kept it.
        """
        with self._lock:
            now = self._clock()
            self._expire(now)
            entry = self._entries.get(render_id)
            if entry is None or not _same_owner(entry.owner, owner):
                raise render_expired()
            entry.used = now
            self._entries.move_to_end(render_id)
            self.served += 1
            return entry.volume

    def clear(self) -> None:
        """Forget every kept volume."""
        with self._lock:
            self._entries.clear()
            self._held = 0

    def _expire(self, now: float) -> None:
        """Drop the volumes idle for longer than ``idle_s`` (the lock held)."""
        while self._entries:
            render_id, oldest = next(iter(self._entries.items()))
            if now - oldest.used <= self.idle_s:
                return
            del self._entries[render_id]
            self._held -= oldest.size
            self.expired += 1


def _same_owner(kept: str | None, asking: str | None) -> bool:
    """Whether ``asking`` may use a volume kept by ``kept`` (compared in constant time)."""
    if kept is None:
        return True
    return asking is not None and hmac.compare_digest(kept.encode(), asking.encode())
