"""Imports point down only: the sans-I/O core imports no I/O, and every module imports alone."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import p2pchat
import p2pchat.proto

PROTO_DIR = Path(p2pchat.proto.__file__).parent
PROTO_FILES = sorted(PROTO_DIR.glob("*.py"))

#: top-level modules that mean I/O, concurrency, clocks or ambient randomness
FORBIDDEN = frozenset(
    {
        "asyncio",
        "socket",
        "selectors",
        "ssl",
        "threading",
        "time",
        "os",
        "pathlib",
        "io",
        "zeroconf",
        "prompt_toolkit",
        "random",
        "secrets",
        # the same, by other doors
        "subprocess",
        "multiprocessing",
        "concurrent",
        "signal",
        "shutil",
        "tempfile",
        "importlib",
        "platformdirs",
    }
)
#: the only p2pchat modules the core may use
ALLOWED_OURS = ("p2pchat.proto", "p2pchat.errors", "p2pchat.config")


def imported_modules(source: str, module: str) -> set[str]:
    """Every module name ``source`` (the text of ``module``) imports, relative ones resolved."""
    package = module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            # "from p2pchat import session" imports p2pchat.session
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            found.add("__import__")
    return found


def allowed(name: str) -> bool:
    top = name.split(".")[0]
    if name == "__import__" or top in FORBIDDEN:
        return False
    if top == "p2pchat" and name != "p2pchat":
        return any(name == a or name.startswith(a + ".") for a in ALLOWED_OURS)
    return True


def violations(source: str, module: str) -> list[str]:
    return [name for name in sorted(imported_modules(source, module)) if not allowed(name)]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import os", ["os"]),
        ("import os.path as p", ["os.path"]),
        ("from time import monotonic", ["time", "time.monotonic"]),
        ("import asyncio, msgpack", ["asyncio"]),
        ("from p2pchat import session", ["p2pchat.session"]),
        ("from p2pchat.relay import Relay", ["p2pchat.relay", "p2pchat.relay.Relay"]),
        ("from .. import cli", ["p2pchat.cli"]),
        ("from ..identity import load", ["p2pchat.identity", "p2pchat.identity.load"]),
        ("def f():\n    import secrets", ["secrets"]),
        ("x = __import__('socket')", ["__import__"]),
        ("from . import framing\nfrom .kdf import sha256", []),
        ("from p2pchat.errors import DecryptError\nfrom p2pchat.config import MAX_FRAME", []),
        ("from p2pchat.proto.record import RecordSender", []),
        ("import hashlib, hmac, struct, enum, dataclasses, msgpack, cryptography", []),
    ],
)
def test_the_import_checker_itself(source: str, expected: list[str]) -> None:
    assert violations(source, "p2pchat.proto.example") == expected


def test_proto_modules_are_found() -> None:
    names = {p.stem for p in PROTO_FILES}
    assert {"framing", "messages", "handshake", "record", "kdf", "oaep", "keys"} <= names


@pytest.mark.parametrize("path", PROTO_FILES, ids=lambda p: p.name)
def test_proto_module_imports_no_io(path: Path) -> None:
    module = f"p2pchat.proto.{path.stem}" if path.stem != "__init__" else "p2pchat.proto.__init__"
    assert violations(path.read_text(encoding="utf-8"), module) == []


# ------------------------------------------------------------------ in fresh interpreters

HEAVY = ("zeroconf", "prompt_toolkit", "asyncio", "socket", "selectors", "ssl", "threading")


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return {m.split(".")[0] for m in out.stdout.split()}


def test_importing_the_package_loads_nothing_heavy() -> None:
    loaded = _loaded_after("import p2pchat")
    assert "p2pchat" in loaded
    assert loaded.isdisjoint({"zeroconf", "prompt_toolkit", "asyncio", "cryptography", "msgpack"})


def test_importing_the_core_loads_no_io() -> None:
    stmt = "; ".join(f"import p2pchat.proto.{p.stem}" for p in PROTO_FILES if p.stem != "__init__")
    loaded = _loaded_after(stmt)
    assert "cryptography" in loaded  # the statement did import the core
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


ALL_MODULES = sorted(
    [p2pchat.__name__]
    + [m.name for m in pkgutil.walk_packages(p2pchat.__path__, prefix=p2pchat.__name__ + ".")]
)


def test_module_discovery_sees_the_core() -> None:
    assert {"p2pchat.errors", "p2pchat.config", "p2pchat.proto.handshake"} <= set(ALL_MODULES)


@pytest.mark.parametrize("module", ALL_MODULES)
def test_each_module_imports_alone(module: str) -> None:
    """A fresh interpreter per module catches circular imports hidden by import order."""
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]


# ------------------------------------------------------------------ layers

PACKAGE_DIR = Path(p2pchat.__file__).parent

#: each layer and the p2pchat modules it may import (besides its own layer).
#: The floor (errors, config) and the core (proto) are below everything; net
#: and store are side by side; room uses both; faces use only the room
#: package's public surface (``p2pchat.room`` itself, never its submodules).
LAYER_RULES: dict[str, tuple[str, ...]] = {
    "proto": ("p2pchat.errors", "p2pchat.config"),
    "net": ("p2pchat.errors", "p2pchat.config", "p2pchat.proto"),
    "store": ("p2pchat.errors", "p2pchat.config", "p2pchat.proto"),
    "room": (
        "p2pchat.errors",
        "p2pchat.config",
        "p2pchat.proto",
        "p2pchat.net",
        "p2pchat.store",
    ),
    "faces": ("p2pchat.errors", "=p2pchat.room", "=p2pchat"),
}


def layer_of(path: Path) -> str | None:
    rel = path.relative_to(PACKAGE_DIR).parts
    return rel[0] if len(rel) > 1 else None


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR).with_suffix("")
    parts = ["p2pchat", *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    """``p2pchat.x.y`` names a module or package of ours (not a name inside one)."""
    rel = PACKAGE_DIR.joinpath(*name.split(".")[1:])
    return rel.is_dir() or rel.with_suffix(".py").is_file()


def layer_violations(source: str, module: str, layer: str) -> list[str]:
    """The p2pchat imports of ``module`` (in ``layer``) that point sideways or up."""
    rules = (*LAYER_RULES[layer], f"p2pchat.{layer}")
    exact = {r[1:] for r in rules if r.startswith("=")}
    prefixes = [r for r in rules if not r.startswith("=")]
    bad = []
    for name in sorted(imported_modules(source, module)):
        if name.split(".")[0] != "p2pchat":
            continue
        if name in exact or any(name == p or name.startswith(p + ".") for p in prefixes):
            continue
        # "from p2pchat.room import Room" also yields p2pchat.room.Room: a name, not a module
        if name.rpartition(".")[0] in exact and not is_module(name):
            continue
        bad.append(name)
    return bad


LAYERED_FILES = sorted(p for p in PACKAGE_DIR.rglob("*.py") if layer_of(p) in LAYER_RULES)


@pytest.mark.parametrize(
    ("layer", "source", "expected"),
    [
        ("faces", "from p2pchat.room import Room, Delivered", []),
        (
            "faces",
            "from p2pchat.room.participant import Participant",
            ["p2pchat.room.participant", "p2pchat.room.participant.Participant"],
        ),
        (
            "faces",
            "from p2pchat.net.relay import Relay",
            ["p2pchat.net.relay", "p2pchat.net.relay.Relay"],
        ),
        ("faces", "from p2pchat import room", []),
        ("faces", "from p2pchat.faces.lines import sanitize", []),
        (
            "store",
            "from p2pchat.net.discovery import x",
            ["p2pchat.net.discovery", "p2pchat.net.discovery.x"],
        ),
        (
            "net",
            "from p2pchat.room.bus import EventBus",
            ["p2pchat.room.bus", "p2pchat.room.bus.EventBus"],
        ),
        (
            "room",
            "from p2pchat.faces.lines import sanitize",
            ["p2pchat.faces.lines", "p2pchat.faces.lines.sanitize"],
        ),
        ("room", "from p2pchat.store.identity import Identity", []),
        (
            "proto",
            "from p2pchat.store.identity import Identity",
            ["p2pchat.store.identity", "p2pchat.store.identity.Identity"],
        ),
    ],
)
def test_the_layer_checker_itself(layer: str, source: str, expected: list[str]) -> None:
    assert layer_violations(source, f"p2pchat.{layer}.example", layer) == expected


def test_every_layer_has_modules() -> None:
    assert {layer_of(p) for p in LAYERED_FILES} == set(LAYER_RULES)


@pytest.mark.parametrize("path", LAYERED_FILES, ids=lambda p: str(p.relative_to(PACKAGE_DIR)))
def test_each_layer_imports_only_the_layers_below(path: Path) -> None:
    layer = layer_of(path)
    assert layer is not None
    module = module_name(path)
    if path.name == "__init__.py":
        module += ".__init__"
    assert layer_violations(path.read_text(encoding="utf-8"), module, layer) == []
