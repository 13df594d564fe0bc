"""A model whose tomosynthesis volumes run a network of their own (the card's
``tomosynthesis.network``, :mod:`serving.pipeline.tomo_network`): volumes run it, 2D images
keep ``model.onnx``, the card is refused by key when the entry or its file is wrong, and
``galacto tomo-points --network-from`` builds one end to end (on copies: the committed
``models/`` folder is never written).

The source network is the default model's with every classification logit raised by a known
constant (an ``Add`` after each ``cls_*`` output), so which network ran shows in the numbers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from serving.cli import main
from serving.pipeline.detect_volume import TomoSettings, analyse_volume
from serving.pipeline.dicom_in import read_volume
from serving.pipeline.model import (
    ModelError,
    default_model_dir,
    load_model,
    sha256_file,
)
from serving.pipeline.tomo_network import TOMO_NETWORK_FILE
from tests.dbt_files import make_bto, tiny_dbt_set
from tests.dicomgen import to_bytes
from tests.served_app import app_client
from training.tomo_network import network_section
from training.tomo_points import write_tomo_section

#: What the source network adds to every classification logit.
SHIFT = 1.5


def _plain_copy(src: Path, dst: Path) -> Path:
    """``src``'s 2D network and card in ``dst``, without a ``tomosynthesis`` section."""
    dst.mkdir(parents=True)
    card = json.loads((src / "model.json").read_text())
    card.pop("tomosynthesis", None)
    shutil.copyfile(src / card["onnx"]["file"], dst / card["onnx"]["file"])
    (dst / "model.json").write_text(json.dumps(card, indent=1) + "\n")
    return dst


def _shifted_copy(src: Path, dst: Path, version: str = "9.9.9-shifted",
                  shift: float = SHIFT, channels: int | None = None) -> Path:
    """A copy of ``src`` whose classification logits are all raised by ``shift``; with
    ``channels``, only the first ``channels`` of each level are kept (another class count)."""
    _plain_copy(src, dst)
    card = json.loads((dst / "model.json").read_text())
    graph_path = dst / card["onnx"]["file"]
    m = onnx.load(str(graph_path))
    m.graph.initializer.extend([
        numpy_helper.from_array(np.array(shift, np.float32), "logit_shift"),
        numpy_helper.from_array(np.array([0], np.int64), "keep_from"),
        numpy_helper.from_array(np.array([channels or 0], np.int64), "keep_to"),
        numpy_helper.from_array(np.array([1], np.int64), "keep_axis")])
    for name in card["outputs"]["classification"]:
        for node in m.graph.node:
            node.output[:] = [f"{o}_raw" if o == name else o for o in node.output]
        if channels is None:
            m.graph.node.append(helper.make_node("Add", [f"{name}_raw", "logit_shift"], [name]))
            continue
        m.graph.node.append(helper.make_node("Slice", [f"{name}_raw", "keep_from", "keep_to",
                                                       "keep_axis"], [name]))
        out = next(o for o in m.graph.output if o.name == name)
        out.type.tensor_type.shape.dim[1].dim_value = channels
    onnx.save(m, str(graph_path))
    card["version"] = version
    card["onnx"]["sha256"] = sha256_file(graph_path)
    (dst / "model.json").write_text(json.dumps(card, indent=1) + "\n")
    return dst


def _section(network: dict[str, Any]) -> dict[str, Any]:
    """A hand-made tomosynthesis section naming ``network``."""
    return {"slab": 3, "stride": 3, "slab_mode": "mean", "spacing_mm": 0.3,
            "operating_points": {"balanced": {"score_threshold": 0.5, "fp_per_volume": 1.0,
                                              "sensitivity": 0.5}},
            "validation": {"data": "hand-made"}, "network": network}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a composite model folder whose volumes run the shifted network, the shifted source)."""
    root = tmp_path_factory.mktemp("network")
    source = _shifted_copy(default_model_dir(), root / "source")
    model = _plain_copy(default_model_dir(), root / "model")
    entry, _ = network_section(load_model(model, threads=1), source)
    write_tomo_section(model, _section(entry), network_from=source)
    return model, source


def test_volumes_run_the_card_network_and_2d_images_keep_theirs(
        pair: tuple[Path, Path]) -> None:
    folder, source_dir = pair
    model = load_model(folder, threads=1)
    source = load_model(source_dir, threads=1)
    plain = load_model(_plain_copy(default_model_dir(), folder.parent / "plain-check"),
                       threads=1)
    assert model.tomo_network is not None and model.tomo_network.file == TOMO_NETWORK_FILE
    assert model.tomo_network.label == "galacto-small 9.9.9-shifted"
    assert (folder / TOMO_NETWORK_FILE).is_file()
    x = np.random.default_rng(0).random((128, 96), np.float32)
    volumes = model.for_volumes()
    cls_2d, _ = model.run_once(x)
    cls_plain, _ = plain.run_once(x)
    cls_vol, reg_vol = volumes.run_once(x)
    cls_src, reg_src = source.run_once(x)
    for a, b in zip(cls_2d, cls_plain, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b, p in zip(cls_vol, cls_src, cls_plain, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a - p, SHIFT, atol=1e-4)
    for a, b in zip(reg_vol, reg_src, strict=True):
        np.testing.assert_array_equal(a, b)
    # the section's spacing, the source's decoding, one pass per slab
    assert volumes.preprocess.spacing_mm == 0.3
    assert volumes.decode == source.single_pass().decode
    assert volumes.for_volumes() is volumes


def test_a_volume_analysed_with_the_composite_is_the_source_networks_analysis(
        pair: tuple[Path, Path], tmp_path: Path) -> None:
    folder, source_dir = pair
    path = tmp_path / "bto.dcm"
    path.write_bytes(to_bytes(make_bto(frames=9, rows=160, cols=128, seed=3)))
    volume = read_volume(path)
    settings = TomoSettings(spacing_mm=0.3)
    composite = analyse_volume(volume, load_model(folder, threads=1), settings)
    source = analyse_volume(volume, load_model(source_dir, threads=1), settings)
    plain = analyse_volume(volume, load_model(_plain_copy(default_model_dir(),
                                                          tmp_path / "plain"), threads=1),
                           settings)
    assert composite.scores == source.scores and len(composite.lesions) > 0
    assert max(composite.scores) > max(plain.scores)  # the raised logits


def _edited(pair: tuple[Path, Path], dst: Path, **change: Any) -> Path:
    """A copy of the composite whose ``network`` entry has ``change`` applied (None
    removes a key)."""
    shutil.copytree(pair[0], dst)
    card = json.loads((dst / "model.json").read_text())
    net = card["tomosynthesis"]["network"]
    for key, value in change.items():
        if value is None:
            net.pop(key, None)
        else:
            net[key] = value
    (dst / "model.json").write_text(json.dumps(card, indent=1) + "\n")
    return dst


@pytest.mark.parametrize(("change", "message"), [
    ({"file": "../model.onnx"}, "network.file must be a plain .onnx file name"),
    ({"file": None}, "network.file must be a plain .onnx file name"),
    ({"sha256": "12345"}, "network.sha256 must be 64 lowercase hex digits"),
    ({"sha256": "0" * 64}, "sha256 differs from the card's tomosynthesis.network.sha256"),
    ({"file": "elsewhere.onnx"}, "ONNX file missing"),
    ({"decode": {"nms_thresh": "high"}}, "network.decode"),
    ({"preprocess": {"spacing_mm": 0.0}}, "network.preprocess"),
    ({"preprocess": None}, "network.preprocess must be an object"),
    ({"source": "0.8.0"}, "network.source must be an object naming the model"),
    ({"source": None}, "network.source must be an object naming the model"),
    ({"source": {"name": "galacto-small"}}, "network.source must be an object naming"),
])
def test_a_wrong_network_entry_is_refused_by_key(
        pair: tuple[Path, Path], tmp_path: Path, change: dict[str, Any], message: str) -> None:
    bad = _edited(pair, tmp_path / "bad", **change)
    with pytest.raises(ModelError, match="tomosynthesis") as err:
        load_model(bad, threads=1)
    assert message in str(err.value)


def test_a_volume_network_of_another_class_count_is_refused_at_load(
        pair: tuple[Path, Path], tmp_path: Path) -> None:
    """The same input and output names but 3 classification channels per level instead of
    12 (one class instead of four): its outputs cannot be decoded with this card."""
    other = _shifted_copy(default_model_dir(), tmp_path / "one-class", channels=3)
    bad = _edited(pair, tmp_path / "bad", sha256=sha256_file(other / "model.onnx"))
    shutil.copyfile(other / "model.onnx", bad / TOMO_NETWORK_FILE)
    with pytest.raises(ModelError, match="output shapes differ from the 2D network's") as err:
        load_model(bad, threads=1)
    assert "'batch', 3" in str(err.value) and "'batch', 12" in str(err.value)


def test_an_interrupted_write_leaves_the_card_and_its_network_as_they_were(
        pair: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import training.tomo_points as tomo_points

    folder = _edited(pair, tmp_path / "model")
    card_before = (folder / "model.json").read_bytes()
    net_before = sha256_file(folder / TOMO_NETWORK_FILE)
    other = _shifted_copy(default_model_dir(), tmp_path / "other", "9.9.9-other", shift=-1.0)
    entry, _ = network_section(load_model(folder, threads=1), other)

    def interrupted(*_: Any, **__: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tomo_points, "load_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_tomo_section(folder, _section(entry), network_from=other)
    assert (folder / "model.json").read_bytes() == card_before
    assert sha256_file(folder / TOMO_NETWORK_FILE) == net_before
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.onnx",
                                                        TOMO_NETWORK_FILE]


def test_a_truncated_volume_network_is_refused(pair: tuple[Path, Path], tmp_path: Path) -> None:
    bad = _edited(pair, tmp_path / "bad")
    data = (bad / TOMO_NETWORK_FILE).read_bytes()
    (bad / TOMO_NETWORK_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="file was changed or truncated"):
        load_model(bad, threads=1)


def test_a_source_of_another_architecture_or_with_its_own_network_is_refused(
        pair: tuple[Path, Path], tmp_path: Path) -> None:
    folder, _ = pair
    model = load_model(folder, threads=1)
    with pytest.raises(ValueError, match="name that model instead"):
        network_section(model, folder)
    with pytest.raises(ValueError, match="2D network already"):
        network_section(model, _plain_copy(default_model_dir(), tmp_path / "itself"))
    other = _plain_copy(default_model_dir(), tmp_path / "other")
    card = json.loads((other / "model.json").read_text())
    card["classes"] = [*card["classes"][:-1], "calcification"]
    (other / "model.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="its classes differ"):
        network_section(model, other)
    with pytest.raises(ValueError, match=r"network source .*model card missing"):
        network_section(model, tmp_path)


def test_models_endpoint_names_the_volume_network(pair: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    folder, _ = pair
    with app_client(tmp_path, model=folder) as client:
        [info] = client.get("/v1/models").json()
    net = info["tomosynthesis_network"]
    assert net == {"file": TOMO_NETWORK_FILE,
                   "sha256": sha256_file(folder / TOMO_NETWORK_FILE),
                   "source": "galacto-small 9.9.9-shifted", "spacing_mm": 0.3}
    assert info["sha256"] == sha256_file(folder / "model.onnx") != net["sha256"]


def _galacto(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serving.cli", *args], capture_output=True,
                          text=True, timeout=900, check=False)


def test_tomo_points_network_from_end_to_end(tmp_path: Path) -> None:
    """``--network-from`` copies the source's network in and fits the section on it; a refit
    without it keeps that network; bad sources are refused before any volume is run."""
    source = _shifted_copy(default_model_dir(), tmp_path / "source")
    model = _plain_copy(default_model_dir(), tmp_path / "model")
    data = tiny_dbt_set(tmp_path / "dbt-val")
    r = _galacto("tomo-points", "--model", str(model), "--val", str(data),
                 "--network-from", str(source), "--no-rescore", "--spacing-mm", "0.9")
    assert r.returncode == 0, r.stderr
    assert "volumes run the network of galacto-small 9.9.9-shifted" in r.stdout
    sec = json.loads((model / "model.json").read_text())["tomosynthesis"]
    shifted_sha = sha256_file(source / "model.onnx")
    assert sec["network"]["sha256"] == shifted_sha == sha256_file(model / TOMO_NETWORK_FILE)
    assert sec["network"]["source"]["version"] == "9.9.9-shifted"
    assert sec["validation"]["model_sha256"] == shifted_sha
    first = sec["validation"]["cpm"], sec["operating_points"]
    r = _galacto("tomo-points", "--model", str(model), "--val", str(data), "--no-rescore")
    assert r.returncode == 0, r.stderr
    again = json.loads((model / "model.json").read_text())["tomosynthesis"]
    assert again["network"] == sec["network"]
    assert sec["spacing_mm"] == again["spacing_mm"] == 0.9  # a refit keeps the spacing too
    assert (again["validation"]["cpm"], again["operating_points"]) == first
    assert sha256_file(model / "model.onnx") == sha256_file(default_model_dir() / "model.onnx")


def test_network_options_refuse_bad_input_at_once(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    model = _plain_copy(default_model_dir(), tmp_path / "model")
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset.json").write_text("{}")
    assert main(["tomo-points", "--model", str(model), "--val", str(data),
                 "--network-from", str(tmp_path)]) != 0
    assert "--network-from" in (err := capsys.readouterr().err) and "no model.json" in err
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"")
    assert main(["export", "--checkpoint", str(checkpoint), "--version", "9.9.9",
                 "--out", str(tmp_path / "models"), "--dbt-network", str(model)]) != 0
    assert "--dbt-network needs --dbt-val" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(checkpoint), "--version", "9.9.9",
                 "--out", str(tmp_path / "models"), "--dbt-val", str(data),
                 "--dbt-network", str(tmp_path)]) != 0
    assert "--dbt-network" in capsys.readouterr().err
    # a source that cannot be one is refused before the checkpoint is read or exported
    composite = tmp_path / "composite"
    shutil.copytree(default_model_dir(), composite)
    card = json.loads((composite / "model.json").read_text())
    if "network" not in card.get("tomosynthesis", {}):  # make the copy name a volume network
        source = _shifted_copy(default_model_dir(), tmp_path / "src")
        entry, _ = network_section(load_model(_plain_copy(default_model_dir(),
                                                          tmp_path / "plain"), threads=1),
                                   source)
        shutil.copyfile(source / "model.onnx", composite / TOMO_NETWORK_FILE)
        card["tomosynthesis"] = _section(entry)
        (composite / "model.json").write_text(json.dumps(card))
    assert main(["export", "--checkpoint", str(checkpoint), "--version", "9.9.9",
                 "--out", str(tmp_path / "models"), "--dbt-val", str(data),
                 "--dbt-network", str(composite)]) != 0
    err = capsys.readouterr().err
    assert "--dbt-network" in err and "name that model instead" in err
    assert not (tmp_path / "models").exists()
