"""Architecture rules: ``serving`` never imports torch, monai, torchvision, scipy or
``training`` (the container ships without them)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import serving

FORBIDDEN = ("torch", "monai", "torchvision", "training", "scipy")
SERVING = Path(serving.__file__).parent


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_forbidden_import_statement_in_serving() -> None:
    files = sorted(SERVING.rglob("*.py"))
    assert len(files) >= 5
    offenders = {str(f.relative_to(SERVING)): sorted(_imported_roots(f) & set(FORBIDDEN))
                 for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_every_serving_module_loads_no_torch_monai_or_training() -> None:
    code = (
        "import importlib, pkgutil, sys, serving\n"
        "for m in pkgutil.walk_packages(serving.__path__, 'serving.'):\n"
        "    importlib.import_module(m.name)\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == ""


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_inner_layers_do_not_reach_the_transports() -> None:
    """The gateway imports nothing from the HTTP API, and the pipeline and the result
    objects import no transport (API, gateway, CLI)."""
    rules = {"gateway": ("serving.api", "serving.cli"),
             "pipeline": ("serving.api", "serving.gateway", "serving.cli", "serving.outputs"),
             "outputs": ("serving.api", "serving.gateway", "serving.cli")}
    offenders = {}
    for package, banned in rules.items():
        for f in sorted((SERVING / package).rglob("*.py")):
            bad = sorted(m for m in _imported_modules(f) if m.startswith(banned))
            if bad:
                offenders[str(f.relative_to(SERVING))] = bad
    assert offenders == {}
