"""OpenStackClient's own command table and options, read from its wheel, for the day-2 plan tests.

The python-openstackclient wheel is fetched once with ``pip download`` into
``.cache/osc-wheels/`` and never installed: its ``openstack.*`` entry points
give the command table (``server migrate`` is ``server_migrate``), and the
``add_argument`` calls of each command's class (read with :mod:`ast`, through
the classes it inherits from in the same module) its options. Options every
command takes come from ``openstackclient/shell.py`` and the compute client
module (``--os-compute-api-version``), plus cliff's output formatter options
(``-f``/``-c``) that list and show commands print with.
"""

from __future__ import annotations

import ast
import configparser
import subprocess
import sys
import zipfile
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / ".cache" / "osc-wheels"
# cliff's formatter options (cliff/display.py), on every Lister and ShowOne.
CLIFF_FORMATTER_OPTIONS = {"-f", "--format", "-c", "--column"}


@lru_cache(maxsize=None)
def wheel() -> Path:
    found = sorted(WHEELS.glob("python_openstackclient-*.whl"))
    if not found:
        WHEELS.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                               "python-openstackclient", "-d", str(WHEELS)], capture_output=True, text=True,
                              timeout=600)
        found = sorted(WHEELS.glob("python_openstackclient-*.whl"))
        if proc.returncode != 0 or not found:
            pytest.fail(f"cannot download python-openstackclient (pip download --no-deps): {proc.stderr[-500:]}")
    return found[-1]


@lru_cache(maxsize=None)
def _read(member: str) -> str:
    with zipfile.ZipFile(wheel()) as z:
        name = next((n for n in z.namelist() if n == member or n.endswith("/" + member)), None)
        assert name is not None, f"{wheel().name} has no {member}"
        return z.read(name).decode()


@lru_cache(maxsize=None)
def commands() -> dict[str, str]:
    """``openstack`` command (words joined by spaces) -> ``module:Class`` implementing it."""
    cp = configparser.ConfigParser(delimiters=("=",))
    cp.optionxform = str
    cp.read_string(_read("entry_points.txt"))
    out = {}
    for section in cp.sections():
        if section.startswith("openstack.") and section not in ("openstack.cli", "openstack.cli.base"):
            for key, value in cp[section].items():
                out.setdefault(key.strip().replace("_", " "), value.strip())
    return out


def _options(tree: ast.AST) -> set[str]:
    return {a.value for node in ast.walk(tree) if isinstance(node, ast.Call)
            and getattr(node.func, "attr", "") == "add_argument"
            for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("-")}


@lru_cache(maxsize=None)
def common_options() -> set[str]:
    return (_options(ast.parse(_read("openstackclient/shell.py")))
            | _options(ast.parse(_read("openstackclient/compute/client.py"))) | CLIFF_FORMATTER_OPTIONS)


@lru_cache(maxsize=None)
def command_options(command: str) -> set[str]:
    """Options ``openstack COMMAND`` accepts: its class's (and its same-module bases') and the common ones."""
    module, cls = commands()[command].split(":")
    tree = ast.parse(_read(module.replace(".", "/") + ".py"))
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    opts, todo, seen = set(), [cls], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in classes:
            continue
        seen.add(name)
        opts |= _options(classes[name])
        todo += [b.id for b in classes[name].bases if isinstance(b, ast.Name)]
    return opts | common_options()


def check(tokens: list[str]) -> str:
    """The command ``tokens`` (``openstack ...``) run; fails unless it is real and accepts their options."""
    assert tokens[0] == "openstack", tokens
    words = [t for t in tokens[1:5] if not t.startswith("-")]
    for n in (4, 3, 2, 1):
        command = " ".join(words[:n])
        if command in commands():
            break
    else:
        pytest.fail(f"openstack {' '.join(words)}: no such command in {wheel().name}")
    used = {t.split("=")[0] for t in tokens[1:] if t.startswith("-")}
    assert used <= command_options(command), (tokens, used - command_options(command))
    return command
