"""Reading and writing ``DIR/dataset.json`` (validated on the way in)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from training.datasets.schema import DatasetError, DatasetIndex, validate_index

INDEX_NAME = "dataset.json"


def load_index(root: Path) -> tuple[dict[str, Any], DatasetIndex]:
    """Read and validate ``root/dataset.json``.

    Returns:
        The parsed JSON (items as plain dicts, every key kept, for the training code) and its
        validated :class:`DatasetIndex`.

    Raises:
        DatasetError: the file is missing, is not JSON, or breaks the schema (every problem
            listed, each with its location and what was expected).
    """
    path = root / INDEX_NAME
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(str(path), ["no such file; expected a dataset folder with a "
                                       "dataset.json (galacto synth or galacto dataset "
                                       "import writes one)"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(str(path), [f"cannot read: {exc}"]) from None
    except json.JSONDecodeError as exc:
        raise DatasetError(str(path), [f"line {exc.lineno} column {exc.colno}: not valid "
                                       f"JSON ({exc.msg})"]) from None
    return raw, validate_index(raw, str(path))


def write_index(root: Path, raw: dict[str, Any]) -> Path:
    """Validate ``raw`` and write it to ``root/dataset.json`` atomically; return the path.

    Raises:
        DatasetError: ``raw`` breaks the schema (nothing is written).
    """
    path = root / INDEX_NAME
    validate_index(raw, str(path))
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(raw, indent=1) + "\n")
    os.replace(tmp, path)
    return path
