"""Each release's own Kolla-Ansible CLI and playbooks, read from its wheel, for the plan tests.

* the command table: the wheel's ``kolla_ansible.cli`` entry points (the
  cliff commands 21.x and later register) and its console scripts;
* each command's options: the ``add_argument`` calls of its class in
  ``kolla_ansible/cli/commands.py`` plus the Ansible and Kolla-Ansible
  options every command takes (``kolla_ansible/ansible.py``), read with
  :mod:`ast` so nothing of the wheel is installed or run;
* the plays ``--tags`` selects: ``ansible-playbook site.yml --tags X
  --list-tasks`` on the unpacked playbooks with an ansible-core inside the
  range the release's docs give (the project's own when it fits, else one
  installed once into ``.cache/`` in a Python 3.12 virtualenv).
"""

from __future__ import annotations

import ast
import configparser
import re
import shutil
import subprocess
import sys
import zipfile
from functools import lru_cache
from pathlib import Path

import pytest

from kolla_fixture import CACHE, ansible_env, share, wheel


@lru_cache(maxsize=None)
def _read(release: str, member: str) -> str:
    with zipfile.ZipFile(wheel(release)) as z:
        name = next((n for n in z.namelist() if n == member or n.endswith("/" + member)), None)
        assert name is not None, f"{wheel(release).name} has no {member}"
        return z.read(name).decode()


@lru_cache(maxsize=None)
def entry_points(release: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(delimiters=("=",))
    cp.optionxform = str
    cp.read_string(_read(release, "entry_points.txt"))
    return cp


def subcommands(release: str) -> dict[str, str]:
    """kolla-ansible subcommand -> the class that implements it."""
    return {k.strip(): v.strip().split(":")[1] for k, v in entry_points(release)["kolla_ansible.cli"].items()}


def console_scripts(release: str) -> dict[str, str]:
    return {k.strip(): v.strip().split(":")[0] for k, v in entry_points(release)["console_scripts"].items()}


def _arguments(tree: ast.AST) -> tuple[set[str], set[str]]:
    """(option strings, required option strings) of every add_argument call under ``tree``."""
    opts, required = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            names = {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                     and a.value.startswith("-")}
            opts |= names
            if any(k.arg == "required" and isinstance(k.value, ast.Constant) and k.value.value is True
                   for k in node.keywords):
                required |= names
    return opts, required


@lru_cache(maxsize=None)
def command_options(release: str, command: str) -> tuple[set[str], set[str]]:
    """(accepted options, required options) of ``kolla-ansible COMMAND`` in ``release``."""
    common, _ = _arguments(ast.parse(_read(release, "kolla_ansible/ansible.py")))
    cls = subcommands(release)[command]
    tree = ast.parse(_read(release, "kolla_ansible/cli/commands.py"))
    klass = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    own, required = _arguments(klass)
    return common | own, required


@lru_cache(maxsize=None)
def tool_options(release: str, script: str) -> set[str]:
    """Options of a console script such as kolla-genpwd (its module's add_argument calls)."""
    module = console_scripts(release)[script]
    opts, _ = _arguments(ast.parse(_read(release, module.replace(".", "/") + ".py")))
    return opts


def wheel_version(release: str) -> str:
    return re.search(r"^Version: (\S+)", _read(release, "METADATA"), re.M).group(1)


def docs_ansible_core(release: str) -> tuple[str, str]:
    """ANSIBLE_CORE_VERSION_MIN/MAX of the release's doc/source/conf.py."""
    text = (share(release) / "doc" / "source" / "conf.py").read_text()
    lo = re.search(r"^ANSIBLE_CORE_VERSION_MIN = '([\d.]+)'", text, re.M).group(1)
    hi = re.search(r"^ANSIBLE_CORE_VERSION_MAX = '([\d.]+)'", text, re.M).group(1)
    return lo, hi


# --- ansible-playbook in the release's supported range ----------------------------------------

PY312_FIX = ("Python 3.12 is needed for the ansible-core this release supports: put python3.12 on PATH "
             "(e.g. `pyenv install 3.12` and `pyenv global system 3.12`)")


def _python312() -> str:
    candidates = [shutil.which("python3.12")]
    pyenv = shutil.which("pyenv")
    if pyenv:
        out = subprocess.run([pyenv, "versions", "--bare"], capture_output=True, text=True).stdout.split()
        for v in sorted((v for v in out if v.startswith("3.12")), reverse=True):
            candidates.append(str(Path(subprocess.run([pyenv, "prefix", v], capture_output=True, text=True)
                                       .stdout.strip()) / "bin" / "python3.12"))
    for c in candidates:
        if c and subprocess.run([c, "-c", "import sys; assert sys.version_info[:2] == (3, 12)"],
                                capture_output=True).returncode == 0:
            return c
    pytest.fail(PY312_FIX)


def _version_of(ansible_playbook: str) -> tuple[int, int]:
    out = subprocess.run([ansible_playbook, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"core ([\d]+)\.([\d]+)", out)
    assert m, out
    return int(m.group(1)), int(m.group(2))


def _in_range(version: tuple[int, int], lo: str, hi: str) -> bool:
    as_tuple = lambda s: tuple(int(x) for x in s.split(".")[:2])  # noqa: E731
    return as_tuple(lo) <= version <= as_tuple(hi)


@lru_cache(maxsize=None)
def ansible_playbook(release: str) -> str:
    lo, hi = docs_ansible_core(release)
    own = Path(sys.executable).parent / "ansible-playbook"
    if own.exists() and _in_range(_version_of(str(own)), lo, hi):
        return str(own)
    venv = CACHE / f"ansible-core-{lo}-py312"
    exe = venv / "bin" / "ansible-playbook"
    if not exe.exists():
        py = _python312()
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([py, "-m", "venv", str(venv)], check=True, capture_output=True)
        proc = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"ansible-core>={lo},<{hi}.99"],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            pytest.fail(f"cannot install ansible-core>={lo},<{hi}.99 into {venv}: {proc.stderr[-500:]}")
    assert _in_range(_version_of(str(exe)), lo, hi)
    return str(exe)


_PLAY = re.compile(r"^\s+play #\d+ \((?P<hosts>[^)]*)\): (?P<name>.*?)\tTAGS: \[(?P<tags>.*)\]$")
_TASK = re.compile(r"^      \S.*\tTAGS: \[(?P<tags>.*)\]$")


@lru_cache(maxsize=None)
def _listing(release: str, tags: str | None, tmp: Path) -> tuple[tuple[str, frozenset[str], bool], ...]:
    """(play name, tags of its listed tasks, play runs always) for every play of site.yml, in order."""
    playbooks = share(release) / "ansible"
    cmd = [ansible_playbook(release), "-i", str(playbooks / "inventory" / "multinode"), str(playbooks / "site.yml"),
           "--list-tasks"] + (["--tags", tags] if tags else [])
    env = ansible_env(tmp)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plays: list[list] = []
    for line in proc.stdout.splitlines():
        m = _PLAY.match(line)
        if m:
            plays.append([m["name"], set(), "always" in {t.strip() for t in m["tags"].split(",")}])
            continue
        t = _TASK.match(line)
        if t and plays:
            plays[-1][1] |= {x.strip() for x in t["tags"].split(",") if x.strip()} or {"untagged"}
    return tuple((name, frozenset(tags_), always) for name, tags_, always in plays)


def play_order(release: str, tmp: Path) -> list[str]:
    return [name for name, _, _ in _listing(release, None, tmp)]


def selected_plays(release: str, tags: str, tmp: Path) -> list[str]:
    """The plays ``--tags`` gives tasks to, as ``ansible-playbook --tags TAGS --list-tasks`` lists them,
    leaving out the ones that always run (fact gathering and grouping)."""
    return [name for name, task_tags, always in _listing(release, tags, tmp) if task_tags and not always]


def selected_from_full_listing(release: str, tags: str, tmp: Path) -> list[str]:
    """The same from one listing of every task with its effective tags (a task runs under --tags X when
    its tags hold X or 'always'): one ansible-playbook run answers every step."""
    wanted = set(tags.split(",")) | {"always"}
    return [name for name, task_tags, always in _listing(release, None, tmp) if task_tags & wanted and not always]
