"""House rules of the source tree, beyond :mod:`tests.test_layering`: relative imports resolved
too (``from ..api import x`` inside ``serving/gateway`` is an import of ``serving.api``), no
source file over :data:`MAX_LINES` lines, and no module reaching for another module's private
(``_name``) names."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("serving", "training")
MAX_LINES = 800
"""The most lines one ``.py`` or ``.js`` source file under ``serving/`` or ``training/`` has."""


def _python_files(*packages: str) -> list[Path]:
    return sorted(f for package in packages for f in (ROOT / package).rglob("*.py"))


def _package_of(path: Path) -> list[str]:
    """The dotted package a module file belongs to, as parts (``serving/gateway/scp.py`` and
    ``serving/gateway/__init__.py`` -> ``["serving", "gateway"]``)."""
    return list(path.relative_to(ROOT).parent.parts)


def _base_module(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names, relative levels resolved."""
    if node.level == 0:
        return node.module or ""
    package = _package_of(path)
    parts = package[: len(package) - (node.level - 1)] if node.level > 1 else package
    return ".".join([*parts, *([node.module] if node.module else [])])


def _imports(path: Path) -> Iterator[tuple[str, str | None, int]]:
    """Every import of ``path`` as (absolute module, imported name or None, line): ``import a.b``
    gives ``("a.b", None)``, ``from a import b`` (or ``from . import b``) gives ``("a", "b")``,
    and ``importlib.import_module("a.b")`` with a literal name gives ``("a.b", None)``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = _base_module(path, node)
            for alias in node.names:
                yield base, alias.name, node.lineno
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name)
                       and node.func.id in {"import_module", "__import__"}))):
            yield node.args[0].value, None, node.lineno


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def gateway_imports_of_the_api() -> dict[str, list[str]]:
    """Files of ``serving/gateway`` with the ``serving.api`` modules or names they import."""
    offenders: dict[str, list[str]] = {}
    for f in _python_files("serving/gateway"):
        bad = sorted({f"{module}.{name}" if name else module
                      for module, name, _ in _imports(f)
                      if _within(module, "serving.api")
                      or (name is not None and _within(f"{module}.{name}", "serving.api"))})
        if bad:
            offenders[str(f.relative_to(ROOT))] = bad
    return offenders


def long_source_files() -> dict[str, int]:
    """``.py`` and ``.js`` files under ``serving/`` and ``training/`` longer than
    :data:`MAX_LINES`, with their line counts."""
    offenders: dict[str, int] = {}
    for package in PACKAGES:
        for f in sorted((ROOT / package).rglob("*")):
            if f.suffix in {".py", ".js"} and f.is_file():
                lines = len(f.read_text(encoding="utf-8").splitlines())
                if lines > MAX_LINES:
                    offenders[str(f.relative_to(ROOT))] = lines
    return offenders


def private_name_imports() -> dict[str, list[str]]:
    """Project modules that import a private name (or a private module) of another project
    module: ``from serving.x import _y``, ``from ._x import y``, ``import training._x``."""
    offenders: dict[str, list[str]] = {}
    for f in _python_files(*PACKAGES):
        bad = []
        for module, name, line in _imports(f):
            if not module.startswith(tuple(p + "." for p in PACKAGES)) and module not in PACKAGES:
                continue
            dotted = f"{module}.{name}" if name else module
            if any(_private(part) for part in dotted.split(".")):
                bad.append(f"{dotted} (line {line})")
        if bad:
            offenders[str(f.relative_to(ROOT))] = bad
    return offenders


def test_gateway_imports_nothing_from_the_api_relative_imports_included() -> None:
    assert len(_python_files("serving/gateway")) >= 5
    assert gateway_imports_of_the_api() == {}


def test_no_source_file_is_longer_than_the_limit() -> None:
    assert long_source_files() == {}


def test_no_project_module_imports_a_private_name_of_another() -> None:
    assert len(_python_files(*PACKAGES)) >= 50
    assert private_name_imports() == {}


def test_relative_imports_resolve_to_absolute_modules() -> None:
    """The resolution the rules above rest on."""
    gateway = ROOT / "serving" / "gateway" / "scp.py"
    package = ROOT / "serving" / "gateway" / "__init__.py"

    def base(path: Path, source: str) -> str:
        node = ast.parse(source).body[0]
        assert isinstance(node, ast.ImportFrom)
        return _base_module(path, node)

    assert base(gateway, "from ..api import errors") == "serving.api"
    assert base(gateway, "from .. import api") == "serving"
    assert base(gateway, "from .jobs import Job") == "serving.gateway.jobs"
    assert base(package, "from .service import Gateway") == "serving.gateway.service"
    assert base(gateway, "from ...training import x") == "training"
    assert base(gateway, "from serving.api import errors") == "serving.api"
