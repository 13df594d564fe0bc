"""Training data: images run once through serving's preprocessing, cached, then sampled as
patches augmented by :func:`training.augment.augment`.

Every image goes through ``serving.pipeline.dicom_in.read_image`` and
``serving.pipeline.preprocess.prepare`` (decode, canonical orientation, breast crop, resample to
the model spacing, normalisation): the network is trained on exactly what the service feeds it.
The result is cached as ``.npz`` (float16 array, boxes in model pixels) keyed by the file and the
preprocessing settings.

Boxes here are ``[x1, y1, x2, y2]`` model pixels (x = column) until
:func:`serving.pipeline.boxes.xyxy_to_monai` turns them into MONAI order for the loss.

Tomosynthesis volumes (items with ``frames``) become a few 2D frame items each when
:func:`load_split` is given ``dbt_frames_per_volume`` (:mod:`training.data_dbt`: which frames,
and which boxes each frame carries); a frame is cached like an image, keyed also by its index.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from serving.pipeline.boxes import box_areas, box_centres, xyxy_to_monai
from serving.pipeline.dicom_in import read_image
from serving.pipeline.preprocess import PreprocessConfig, Transform, prepare
from training.augment import augment
from training.config import AugmentConfig, PreprocessSection
from training.data_dbt import expand_dbt_items, is_frame_item, read_frame, release_volumes
from training.datasets import SPLITS, load_index

CACHE_VERSION = "1"


@dataclass
class CachedImage:
    """One preprocessed image.

    Attributes:
        array: ``(H, W)`` float32 network input (padded to the size divisor).
        valid: ``(h, w)`` valid (unpadded) extent.
        boxes: ``(M, 4)`` lesion boxes, model pixels ``[x1, y1, x2, y2]``.
        mimics: ``(K, 4)`` mimic boxes, model pixels.
        transform: stored-image <-> model-pixel mapping.
        item: the dataset.json item (ground truth in stored pixels).
    """

    array: np.ndarray
    valid: tuple[int, int]
    boxes: np.ndarray
    mimics: np.ndarray
    transform: Transform
    item: dict[str, Any]


def preprocess_config(section: PreprocessSection) -> PreprocessConfig:
    """The serving ``PreprocessConfig`` equal to the training config's section."""
    return PreprocessConfig.from_dict(section.model_dump())


def load_split(root: Path, split: str, *, dbt_frames_per_volume: int | None = None,
               seed: int = 0, epoch: int = 0, dbt_slab: int = 1) -> list[dict[str, Any]]:
    """Items of ``split`` in ``root/dataset.json``, after validating the whole file against
    the dataset schema (:mod:`training.datasets.schema`).

    Args:
        root: the dataset folder.
        split: ``training``, ``validation`` or ``test``.
        dbt_frames_per_volume: ``None`` keeps tomosynthesis volumes as items (evaluation);
            a number replaces each by that many frame items
            (:func:`training.data_dbt.expand_dbt_items`, drawn with ``seed`` and ``epoch``).
            2D items are the same either way.
        dbt_slab: frames averaged around each drawn frame (``data.dbt_slab``; 1: the frame
            alone).

    Returns:
        The split's items as plain dicts (every key kept) plus ``_root`` (the folder).

    Raises:
        DatasetError: (a ValueError) the file is missing, unreadable or breaks the schema;
            every problem is listed with its location.
        ValueError: ``split`` is not ``training``, ``validation`` or ``test``.
    """
    raw, _ = load_index(root)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    items = [dict(it, _root=str(root)) for it in raw.get(split, [])]
    if dbt_frames_per_volume is None:
        return items
    return expand_dbt_items(items, dbt_frames_per_volume, seed=seed, epoch=epoch,
                            slab=dbt_slab)


def dataset_fingerprint(roots: Sequence[Path]) -> str:
    """sha256 over the ``dataset.json`` files (order-sensitive), first 16 hex digits."""
    h = hashlib.sha256()
    for r in roots:
        h.update((r / "dataset.json").read_bytes())
    return h.hexdigest()[:16]


def _cache_key(item: dict[str, Any], cfg: PreprocessConfig) -> str:
    path = Path(item["_root"]) / item["image"]
    st = path.stat()
    key: list[Any] = [CACHE_VERSION, str(path.resolve()), st.st_size, st.st_mtime_ns,
                      cfg.to_dict()]
    if is_frame_item(item):  # one volume, many cached frames
        key.append({"frame": int(item["_frame"]), "slab": int(item.get("_slab", 1))})
    raw = json.dumps(key, sort_keys=True)
    return hashlib.sha1(raw.encode()).hexdigest()


def _boxes(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(-1, 4)


def _build_one(args: tuple[dict[str, Any], PreprocessConfig, Path]) -> Path:
    item, cfg, out = args
    if out.exists():
        return out
    if is_frame_item(item):
        image = read_frame(item)
    else:
        image = read_image(Path(item["_root"]) / item["image"])
    prep = prepare(image, cfg)
    boxes = prep.transform.stored_to_model(_boxes(item["boxes"]))
    mimics = prep.transform.stored_to_model(_boxes([m["box"] for m in item.get("mimics", [])]))
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, array=prep.array.astype(np.float16), valid=np.array(prep.transform.model_shape),
             boxes=boxes, mimics=mimics,
             transform=np.frombuffer(json.dumps(prep.transform.to_dict()).encode(), np.uint8))
    tmp.replace(out)
    return out


def build_cache(items: list[dict[str, Any]], cfg: PreprocessConfig, cache_dir: Path,
                workers: int = 1, progress: Any = None) -> list[Path]:
    """Preprocess every item once (skipping those already cached); return the cache files."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(it, cfg, cache_dir / f"{_cache_key(it, cfg)}.npz") for it in items]
    if workers <= 1:
        paths = []
        for job in jobs:
            paths.append(_build_one(job))
            if progress is not None:
                progress()
        release_volumes()
        return paths
    with ProcessPoolExecutor(max_workers=workers) as pool:
        paths = []
        for p in pool.map(_build_one, jobs, chunksize=2):
            paths.append(p)
            if progress is not None:
                progress()
        return paths


def load_cached(path: Path, item: dict[str, Any]) -> CachedImage:
    """Read one cache file back."""
    with np.load(path) as z:
        tr = Transform.from_dict(json.loads(bytes(z["transform"]).decode()))
        valid = (int(z["valid"][0]), int(z["valid"][1]))
        return CachedImage(array=z["array"].astype(np.float32), valid=valid,
                           boxes=z["boxes"].astype(np.float32),
                           mimics=z["mimics"].astype(np.float32), transform=tr, item=item)


# --------------------------------------------------------------------------- patches


def _crop(img: CachedImage, center: tuple[float, float], size: int,
          boxes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``size x size`` crop centred near ``center`` (x, y), zero-padded outside the image.

    ``boxes`` ``(M, 4)`` model-pixel xyxy default to the image's lesion boxes. They are
    clipped and kept when at least 60 % of their area stays inside. Returns the patch, the
    kept boxes ``(M', 4)`` and their indices into ``boxes`` ``(M',)``."""
    h, w = img.array.shape
    x0 = int(np.clip(round(center[0] - size / 2), -size // 4, max(w - size + size // 4, 0)))
    y0 = int(np.clip(round(center[1] - size / 2), -size // 4, max(h - size + size // 4, 0)))
    patch = np.zeros((size, size), np.float32)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + size, w), min(y0 + size, h)
    if sx1 > sx0 and sy1 > sy0:
        patch[sy0 - y0: sy1 - y0, sx0 - x0: sx1 - x0] = img.array[sy0:sy1, sx0:sx1]
    src = img.boxes if boxes is None else boxes
    b = src.reshape(-1, 4) - np.array([x0, y0, x0, y0], np.float32)
    clipped = np.clip(b, 0, size)
    area = np.prod(np.maximum(b[:, 2:] - b[:, :2], 1e-6), axis=1)
    kept_area = box_areas(clipped)
    keep = kept_area >= 0.6 * area
    return patch, clipped[keep], np.flatnonzero(keep)


def class_targets(img: CachedImage, class_names: Sequence[str]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """All labelled boxes of ``img`` for a model with ``class_names``: the lesions (class 0)
    and the mimics whose ``kind`` is one of the other names (class index of that name).
    Mimics of kinds the model does not name are left out (background).

    Returns:
        ``(M, 4)`` model-pixel xyxy boxes and ``(M,)`` int64 class indices.
    """
    index = {name: k for k, name in enumerate(class_names) if k > 0}
    kinds = [m.get("kind") if isinstance(m, dict) else None
             for m in img.item.get("mimics", [])]
    mimic_labels = np.array([index.get(str(k), -1) for k in kinds], np.int64)
    if len(mimic_labels) != len(img.mimics):  # a cache that does not match its item
        mimic_labels = np.full(len(img.mimics), -1, np.int64)
    named = mimic_labels >= 0
    boxes = np.concatenate([img.boxes.reshape(-1, 4), img.mimics.reshape(-1, 4)[named]])
    labels = np.concatenate([np.zeros(len(img.boxes), np.int64), mimic_labels[named]])
    return boxes.astype(np.float32), labels


class PatchSampler:
    """Deterministic batches of augmented patches: batch ``(epoch, step)`` depends only on the
    seed, so CPU runs repeat exactly and a resumed run continues the same sequence.

    A patch is centred on a random lesion with probability ``positive_fraction`` (when some
    image has one), on a random labelled mimic (air bubble, cyst, extravasation: a hard
    negative) with probability ``mimic_fraction`` (when some image has one), otherwise on a
    random point of the breast (normal tissue, and mimics by chance). Centres are jittered by
    up to 35 % of the patch so the object is not always in the middle; a patch keeps every
    lesion box it overlaps, so a mimic patch that catches a lesion is still a positive.
    With ``class_names`` beyond the lesion class, mimics of those kinds are targets of their
    own class (e.g. ``air_bubble``) instead of background.
    """

    def __init__(self, images: list[CachedImage], patch: int, positive_fraction: float,
                 augment: AugmentConfig, seed: int, mimic_fraction: float = 0.0,
                 class_names: Sequence[str] = ("filling_defect",)) -> None:
        if not images:
            raise ValueError("no training images")
        if positive_fraction + mimic_fraction > 1.0:
            raise ValueError(f"positive_fraction + mimic_fraction must be at most 1, got "
                             f"{positive_fraction:g} + {mimic_fraction:g}")
        self.images = images
        self.patch = patch
        self.positive_fraction = positive_fraction
        self.mimic_fraction = mimic_fraction
        self.augment = augment
        self.seed = seed
        self.positives = [i for i, im in enumerate(images) if len(im.boxes)]
        self.with_mimics = [i for i, im in enumerate(images) if len(im.mimics)]
        self.targets = [class_targets(im, class_names) for im in images]

    def _around(self, boxes: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
        """A jittered centre near one of ``boxes`` ``(K, 4)`` xyxy (model pixels)."""
        cx, cy = box_centres(boxes[int(rng.integers(len(boxes)))])[0]
        jitter = rng.uniform(-0.35, 0.35, 2) * self.patch
        return float(cx + jitter[0]), float(cy + jitter[1])

    def _random_point(self, img: CachedImage, rng: np.random.Generator) -> tuple[float, float]:
        """A random centre, preferring breast (non-background) pixels."""
        h, w = img.valid
        for _ in range(10):
            x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
            if img.array[int(y), int(x)] > 0.05:
                return x, y
        return x, y

    def _pick(self, rng: np.random.Generator) -> tuple[int, tuple[float, float]]:
        """The image index and the patch centre (x, y model pixels) of the next sample."""
        u = rng.random()
        if self.positives and u < self.positive_fraction:
            i = self.positives[int(rng.integers(len(self.positives)))]
            return i, self._around(self.images[i].boxes, rng)
        if self.with_mimics and u < self.positive_fraction + self.mimic_fraction:
            i = self.with_mimics[int(rng.integers(len(self.with_mimics)))]
            return i, self._around(self.images[i].mimics, rng)
        i = int(rng.integers(len(self.images)))
        return i, self._random_point(self.images[i], rng)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One augmented patch ``(P, P)``, its boxes ``(M, 4)`` model-pixel xyxy and their
        class indices ``(M,)``."""
        i, center = self._pick(rng)
        boxes, labels = self.targets[i]
        patch, kept, idx = _crop(self.images[i], center, self.patch, boxes)
        return augment(patch, kept, self.augment, rng, labels[idx])

    def batch(self, epoch: int, step: int, size: int, rank: int = 0
              ) -> tuple[torch.Tensor, list[np.ndarray], list[np.ndarray]]:
        """``(B, 1, P, P)`` images, MONAI-order boxes and labels per patch."""
        rng = np.random.default_rng([self.seed, epoch, step, rank])
        patches, boxes, labels = [], [], []
        for _ in range(size):
            p, b, lab = self.sample(rng)
            patches.append(p)
            boxes.append(xyxy_to_monai(b, np.float32))
            labels.append(lab.astype(np.int64))
        return torch.from_numpy(np.stack(patches)[:, None]), boxes, labels
