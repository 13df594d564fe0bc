"""Test-time flips: the flipped passes are mapped back onto the plain pass's anchors exactly.

With flips averaged in, the detector is equivariant: detecting on an upside-down (or mirrored)
input gives the upside-down boxes with the same scores. That only holds when un-flipping
reverses the right axes of every output level and negates the right box-coder delta.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from serving.pipeline.dicom_in import read_image
from serving.pipeline.model import DetectorModel, ModelError, load_model
from serving.pipeline.postprocess import FLIP_AXES, DecodeConfig, decode, unflip_outputs
from serving.pipeline.preprocess import prepare


@pytest.fixture(scope="module")
def array(galactogram_files: list[Path], bundled_model: DetectorModel) -> np.ndarray:
    """The preprocessed CC view (rows and columns multiples of 32)."""
    image = read_image(galactogram_files[0])
    x = prepare(image, bundled_model.preprocess).array
    assert x.shape[0] % 32 == 0 and x.shape[1] % 32 == 0
    return x


def _detect(model: DetectorModel, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cls, reg = model.run(x)
    boxes, scores, _ = decode(cls, reg, x.shape, model.anchors, model.decode)
    return boxes, scores


def _flip_boxes(boxes: np.ndarray, axes: tuple[int, ...], shape: tuple[int, int]) -> np.ndarray:
    """``[x1, y1, x2, y2]`` (x = column) boxes of an image whose ``axes`` were reversed."""
    out = boxes.copy()
    if 0 in axes:
        out[:, [1, 3]] = shape[0] - boxes[:, [3, 1]]
    if 1 in axes:
        out[:, [0, 2]] = shape[1] - boxes[:, [2, 0]]
    return out


@pytest.mark.parametrize("flip", sorted(FLIP_AXES))
def test_flip_averaging_makes_detection_equivariant(bundled_model: DetectorModel,
                                                    array: np.ndarray, flip: str) -> None:
    axes = FLIP_AXES[flip]
    model = replace(bundled_model, decode=replace(bundled_model.decode, test_time_flips=(flip,)))
    flipped = np.ascontiguousarray(np.flip(array, axis=axes))
    boxes, scores = _detect(model, array)
    boxes_f, scores_f = _detect(model, flipped)
    assert len(scores) >= 3, "the study has lesions: expect candidates above score_thresh"
    assert len(scores_f) == len(scores)
    np.testing.assert_allclose(scores_f, scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(boxes_f, _flip_boxes(boxes, axes, array.shape), atol=1e-3)


def test_plain_pass_is_not_equivariant(bundled_model: DetectorModel, array: np.ndarray) -> None:
    """The network alone is not flip-symmetric, so the test above is not trivially true."""
    cls, _ = bundled_model.run_once(array)
    cls_f, _ = bundled_model.run_once(np.ascontiguousarray(array[::-1]))
    assert np.abs(cls[0] - cls_f[0][:, :, ::-1]).max() > 1e-2


def test_averaging_uses_every_pass(bundled_model: DetectorModel, array: np.ndarray) -> None:
    model = replace(bundled_model, decode=replace(bundled_model.decode,
                                                  test_time_flips=("rows", "cols")))
    plain_c, plain_r = bundled_model.run_once(array)
    passes = [(plain_c, plain_r)]
    for name in ("rows", "cols"):
        axes = FLIP_AXES[name]
        c, r = bundled_model.run_once(np.ascontiguousarray(np.flip(array, axis=axes)))
        passes.append(unflip_outputs(c, r, axes, array.shape, model.anchors.num_anchors))
    cls, reg = model.run(array)
    for level in range(len(cls)):
        np.testing.assert_allclose(cls[level], np.mean([p[0][level] for p in passes], axis=0),
                                   atol=1e-5)
        np.testing.assert_allclose(reg[level], np.mean([p[1][level] for p in passes], axis=0),
                                   atol=1e-5)


def test_unflip_needs_even_strides() -> None:
    cls = [np.zeros((1, 3, 5, 4), np.float32)]
    reg = [np.zeros((1, 12, 5, 4), np.float32)]
    with pytest.raises(ValueError, match="input axis 0 has 35 pixels but an output level has 5"):
        unflip_outputs(cls, reg, (0,), (35, 32), 3)


@pytest.mark.parametrize("flips", [["diagonal"], ["rows", "rows"], "rows"])
def test_config_refuses_bad_flips(flips: object) -> None:
    with pytest.raises(ValueError, match="test_time_flips must be a list of distinct values"):
        DecodeConfig(test_time_flips=flips)  # type: ignore[arg-type]


def test_card_with_bad_flip_is_refused(bundled_model: DetectorModel, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(bundled_model.path, folder)
    card = json.loads((folder / "model.json").read_text())
    card["decode"]["test_time_flips"] = ["sideways"]
    (folder / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="sideways"):
        load_model(folder)
    card["decode"]["test_time_flips"] = ["rows"]
    (folder / "model.json").write_text(json.dumps(card))
    assert load_model(folder).decode.test_time_flips == ("rows",)
