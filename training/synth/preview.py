"""Contact sheets of a generated dataset, so a person can look at what the simulator makes.

Images are read back through ``serving.pipeline.dicom_in`` (the same intake the service uses),
so MONOCHROME1 files come out the right way round and the boxes drawn from ``dataset.json``
prove the stored-pixel box convention. Colours: red = filling defect (with its lesion kind and
size), yellow = mimic (air bubble, extravasation, cyst), green = nipple.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image as PILImage
from PIL import ImageDraw

from serving.outputs.overlay import display_window
from serving.pipeline.dicom_in import read_image

TILE = 360  # tile height in pixels


def render_tile(root: Path, item: dict[str, Any], height: int = TILE) -> PILImage.Image:
    """One annotated thumbnail of a dataset item (boxes scaled to the thumbnail)."""
    img = read_image(root / item["image"])
    scale = height / img.rows
    step = max(int(1 / scale), 1)
    thumb = PILImage.fromarray(display_window(img.pixels[::step, ::step])).convert("RGB")
    width = max(round(img.cols * scale), 1)
    thumb = thumb.resize((width, height), PILImage.Resampling.BILINEAR)
    draw = ImageDraw.Draw(thumb)
    for m in item.get("mimics", []):
        draw.rectangle([v * scale for v in m["box"]], outline=(255, 220, 0), width=1)
    for box, kind, size in zip(item["boxes"], item.get("lesion_kind", []),
                               item.get("lesion_size_mm", []), strict=False):
        b = [v * scale for v in box]
        pad = 3
        draw.rectangle([b[0] - pad, b[1] - pad, b[2] + pad, b[3] + pad], outline=(255, 40, 40),
                       width=2)
        draw.text((b[2] + 5, b[1]), f"{kind} {size:.1f}mm", fill=(255, 80, 80))
    if "nipple_xy" in item:
        nx, ny = (v * scale for v in item["nipple_xy"])
        draw.ellipse([nx - 3, ny - 3, nx + 3, ny + 3], outline=(0, 255, 0))
    label = (f"{item.get('laterality', '?')} {item.get('view', '?')} "
             f"{item.get('patient_orientation', '')} {item.get('profile', '')} "
             f"{img.photometric_interpretation[-1:]}")
    draw.text((4, 4), label, fill=(120, 200, 255))
    return thumb


def contact_sheet(root: Path, out: Path, *, max_images: int = 16, columns: int = 8,
                  height: int = TILE) -> Path:
    """Write a PNG contact sheet of the first ``max_images`` images of ``root/dataset.json``
    (training, then validation, then test), two views of a case side by side."""
    index = json.loads((root / "dataset.json").read_text())
    items = [it for s in ("training", "validation", "test") for it in index.get(s, [])]
    items = items[:max_images]
    if not items:
        raise ValueError(f"{root / 'dataset.json'} lists no images")
    tiles = [render_tile(root, it, height) for it in items]
    tw = max(t.width for t in tiles)
    rows = -(-len(tiles) // columns)
    sheet = PILImage.new("RGB", (tw * min(columns, len(tiles)), height * rows), (20, 20, 20))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % columns) * tw, (i // columns) * height))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
