"""Discovery of methods: every ``*.py`` file under ``methods/`` (and under the folders in
``$BENCHMARK_METHODS_PATH``, separated by ``:``) that defines a ``Method`` subclass with a
``name``. Adding a method is adding a file.

``list`` reads the class attributes statically (AST, no torch import) so it is fast;
``load`` imports the file when a method is about to run.
"""
from __future__ import annotations

import ast
import contextlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

METHODS_DIR = Path(__file__).resolve().parents[1] / "methods"
_FIELDS = ("name", "family", "needs", "privacy_unit", "adjacency", "citation", "hparams")


@dataclass(frozen=True)
class MethodInfo:
    name: str
    family: str
    needs: tuple[str, ...]
    privacy_unit: str
    adjacency: str
    citation: str
    path: Path
    class_name: str


def method_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("BENCHMARK_METHODS_PATH", "").split(os.pathsep) if p]
    return [METHODS_DIR, *extra]


def _static_info(path: Path) -> list[MethodInfo] | None:
    """Class attributes read from the source; None if a method class cannot be read statically."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError:
        return None
    found = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        attrs = {}
        for stmt in node.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                key, value = stmt.targets[0].id, stmt.value
            elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
                key, value = stmt.target.id, stmt.value
            else:
                continue
            if key in _FIELDS:
                try:
                    attrs[key] = ast.literal_eval(value)
                except ValueError:
                    attrs[key] = None
        if "name" not in attrs or not attrs.get("name"):
            continue
        if any(attrs.get(k) is None for k in ("family", "needs", "privacy_unit", "citation")):
            return None  # inherits or computes something: import it instead
        found.append(MethodInfo(attrs["name"], attrs["family"], tuple(sorted(attrs["needs"])), attrs["privacy_unit"],
                                attrs.get("adjacency") or "", attrs["citation"], path, node.name))
    return found


def _import_file(path: Path):
    mod_name = f"benchmark_methods.{path.parent.name}.{path.stem}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[mod_name]
        raise
    return module


def _imported_info(path: Path) -> list[MethodInfo]:
    from .method import Method
    module = _import_file(path)
    out = []
    for obj in vars(module).values():
        if isinstance(obj, type) and issubclass(obj, Method) and obj.__module__ == module.__name__ and obj.name:
            out.append(MethodInfo(obj.name, obj.family, tuple(sorted(obj.needs)), obj.privacy_unit,
                                  obj.adjacency, obj.citation, path, obj.__name__))
    return out


_CACHE: dict[tuple, dict[str, MethodInfo]] = {}


_FROZEN: list = []  # a snapshot in use by ``frozen()``


@contextlib.contextmanager
def frozen():
    """Within this block ``discover`` returns one snapshot instead of looking at the method files
    again: expanding a grid of thousands of cells would otherwise stat every file per cell."""
    _FROZEN.append(discover())
    try:
        yield
    finally:
        _FROZEN.pop()


def discover() -> dict[str, MethodInfo]:
    """All methods, by name. Cached on the method files' names and modification times."""
    if _FROZEN:
        return dict(_FROZEN[-1])
    paths = [p for d in method_dirs() if d.is_dir() for p in sorted(d.glob("*.py")) if not p.name.startswith("_")]
    key = tuple((str(p), p.stat().st_mtime_ns) for p in paths)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = _discover()
    return dict(_CACHE[key])


def _discover() -> dict[str, MethodInfo]:
    registry: dict[str, MethodInfo] = {}
    for directory in method_dirs():
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.py")):
            if path.name.startswith("_"):
                continue
            infos = _static_info(path)
            if infos is None:
                infos = _imported_info(path)
            for info in infos:
                if info.name in registry:
                    raise ValueError(f"method name {info.name!r} is defined in both {registry[info.name].path} "
                                     f"and {info.path}")
                registry[info.name] = info
    return registry


def load(name: str):
    """The Method subclass registered as ``name``."""
    registry = discover()
    if name not in registry:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(sorted(registry))}")
    info = registry[name]
    return getattr(_import_file(info.path), info.class_name)
