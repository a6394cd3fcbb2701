"""The `cloudplan` command: a thin typer app over the library.

Errors are caught here, in one place: a :class:`CloudplanError` prints one
``Error: ...`` line and exits 1 (2 for usage errors); any other exception is a
bug, printed as one ``Error: internal error ...`` line with exit code 70; a
traceback only with ``--debug``.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys

import typer

from cloudplan import __version__, commands
from cloudplan.commands import bench_app, err
from cloudplan.errors import CloudplanError

app = typer.Typer(
    name="cloudplan",
    help="Plan, cost and bring up bare-metal private clouds.\n\n"
         "Example: cloudplan size examples/medium.yaml",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(bench_app, name="bench")

_debug = {"on": False}
INTERNAL_ERROR_EXIT = 70   # sysexits.h EX_SOFTWARE; 3 is taken (upgrade rehearse: no-go)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cloudplan {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show progress logs."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    _debug["on"] = debug
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _register_commands() -> None:
    for mod in sorted(m.name for m in pkgutil.iter_modules(commands.__path__)):
        module = importlib.import_module(f"cloudplan.commands.{mod}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_commands()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point. Typer handles usage errors (exit 2) and --help;
    cloudplan's own errors become one ``Error:`` line here. Returns the exit code
    when ``argv`` is given (tests, notebooks), else exits with it."""
    try:
        app(args=argv, prog_name="cloudplan")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except CloudplanError as e:
        if _debug["on"]:
            raise
        err.print(f"Error: {e}", markup=False, highlight=False)
        code = e.exit_code
    except Exception as e:  # a bug: one line and exit code 70, the traceback with --debug
        if _debug["on"]:
            raise
        text = str(e).splitlines()[0][:200] if str(e) else ""
        err.print(f"Error: internal error ({type(e).__name__}: {text}); this is a bug in cloudplan, "
                  "run again with --debug for the traceback", markup=False, highlight=False)
        code = INTERNAL_ERROR_EXIT
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
