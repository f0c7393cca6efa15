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
