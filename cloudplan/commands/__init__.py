"""CLI command groups. Each module defines ``register(app)``; ``cloudplan.cli``
discovers them, so adding a command never means editing a shared list.

Commands stay thin: parse options, call one library function, render.
"""

from __future__ import annotations

import typer
from rich.console import Console

# Shared sub-apps, so several modules can add `bench ...` or `upgrade ...` commands.
bench_app = typer.Typer(help="Benchmarks that print the figures quoted in the README.", no_args_is_help=True)

def _console(**kw) -> Console:
    # Piped output (CI logs, `| less`) gets a width that fits the tables instead of rich's 80.
    probe = Console(soft_wrap=True, **kw)
    return probe if probe.is_terminal else Console(width=160, soft_wrap=True, **kw)


out = _console()
err = _console(stderr=True)
