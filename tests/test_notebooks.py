"""The notebooks run top to bottom headless, and are committed without outputs.

Each notebook executes in a fresh kernel with its own directory as the working
directory (as Jupyter starts it), so the paths it uses to find ``examples/``
are the ones a user gets.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
EXPECTED = ["01-size-a-cloud.ipynb", "02-what-if.ipynb", "03-upgrade-rehearsal.ipynb"]
KERNEL = "python3"
# Generous: each notebook takes seconds; this only stops a hung kernel from hanging the suite.
CELL_TIMEOUT_S = 300


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_the_notebooks_the_issue_asks_for_exist():
    assert [p.name for p in _notebooks()] == EXPECTED


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts: clear them before committing"


def _kernel_python() -> None:
    """The kernel must run this interpreter (the project's venv), where cloudplan is installed."""
    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        pytest.fail(f"no '{KERNEL}' Jupyter kernel: install ipykernel in this environment (make venv does)")
    exe = spec.argv[0]
    # jupyter_client runs a spec whose argv[0] is a bare "python" with the current interpreter.
    if exe not in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}") and \
            Path(exe).resolve() != Path(sys.executable).resolve():
        pytest.fail(f"the '{KERNEL}' kernel runs {exe}, not {sys.executable}: run "
                    f"`{sys.executable} -m ipykernel install --sys-prefix`")


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
def test_notebook_runs_headless_without_error(path):
    _kernel_python()
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S, allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except CellExecutionError as err:
        pytest.fail(f"{path.name} failed:\n{err}")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), f"{path.name}: some cells did not run"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    # Every notebook shows something: tables, plots or drawings.
    rich = [o for c in code for o in c.outputs if o.output_type in ("display_data", "execute_result")]
    assert rich, f"{path.name} displayed nothing"
