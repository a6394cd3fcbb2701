"""Reading and writing the YAML/JSON files that flow between stages.

Every input file goes through :func:`read_yaml` (and most through
:func:`load_model`), so a syntax error names the file, line and column, and a
schema error names the field path (``flavors[3].ram_gib``) the way the user
wrote it. The same place bounds what an input can cost: text must be UTF-8,
files at most :data:`MAX_INPUT_BYTES`, nesting at most :data:`MAX_DEPTH`, YAML
aliases are refused (no cloudplan format uses them, and they are how a
500-byte file expands to gigabytes), and an error echoes at most
:data:`MAX_ECHO_CHARS` of a value.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from cloudplan.errors import CloudplanError, SpecError

M = TypeVar("M", bound=BaseModel)

MAX_INPUT_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 64
MAX_ECHO_CHARS = 80


def short_repr(value: Any, limit: int = MAX_ECHO_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters; never builds the repr of a huge value."""
    if isinstance(value, (dict, list, tuple, set)) and len(value) > limit:
        return f"<{type(value).__name__} of {len(value)} items>"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class _NoAliasLoader(yaml.SafeLoader):
    """The safe loader, refusing aliases (``*name``) where they appear."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not allowed in cloudplan "
                                              "files; write the value out", event.start_mark)
        return super().compose_node(parent, index)


# YAML 1.1 reads 52:54:00:12:34:56 as a base-60 integer, so an unquoted MAC address (or a
# time like 12:30) would arrive as a number. YAML 1.2 dropped base 60; so do cloudplan's files.
_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_NoAliasLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_NoAliasLoader.add_implicit_resolver(_INT_TAG, re.compile(r"""^(?:[-+]?0b[0-1_]+
    |[-+]?0[0-7_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+)$""", re.X), list("-+0123456789"))
_NoAliasLoader.add_implicit_resolver(_FLOAT_TAG, re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))


def _check_depth(data: Any, path: str) -> None:
    """Refuse structures nested deeper than :data:`MAX_DEPTH` (no recursion: a deep one would blow the stack)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SpecError(f"nested more than {MAX_DEPTH} levels deep", path=path)
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def field_path(loc: tuple[Any, ...]) -> str:
    """Turn a pydantic error location into ``flavors[3].ram_gib``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out:
            out += f".{part}"
        else:
            out = str(part)
    return out


def _first_error(err: ValidationError) -> tuple[str, str]:
    # A misspelt key also makes the real one "missing": report the misspelling.
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    # Union members and tagged models add their type name to the location; drop
    # those so the path is the one written in the file.
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and p[:1].isupper()))
    msg = first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if len(msg) > 4 * MAX_ECHO_CHARS:  # a validator may have quoted the value whole
        msg = msg[:4 * MAX_ECHO_CHARS] + "..."
    if first["type"] == "enum" and "expected" in first.get("ctx", {}):
        msg = f"{short_repr(first['input'])} is not valid; expected {first['ctx']['expected']}"
    elif first["type"] in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
              "less_than_equal": "<="}[first["type"]]
        bound = next(iter(first["ctx"].values()))
        msg = f"must be {op} {bound:g} (got {short_repr(first['input'])})"
    elif first["type"] == "extra_forbidden":
        msg = "unknown field"
    return field_path(loc), msg


def validate(model: type[M], data: Any, *, path: str | os.PathLike | None = None) -> M:
    """Validate ``data`` as ``model``; a failure becomes a :class:`SpecError` naming the field."""
    try:
        return model.model_validate(data)
    except RecursionError:
        raise SpecError(f"nested too deeply to validate (more than {MAX_DEPTH} levels?)",
                        path=str(path) if path else None) from None
    except ValidationError as err:
        fld, msg = _first_error(err)
        more = len(err.errors()) - 1
        if more:
            msg += f" (and {more} more error{'s' if more > 1 else ''})"
        raise SpecError(msg, path=str(path) if path else None, field=fld or None) from None


def read_yaml(path: str | os.PathLike) -> Any:
    """Parse a YAML (or JSON) file; errors name the file, line and column."""
    p = Path(path)
    text = read_text(p)
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise SpecError(f"nested more than {MAX_DEPTH} levels deep", path=str(p)) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = err.problem or err.context or "invalid YAML"
        raise SpecError(f"YAML syntax error: {problem}", path=str(p),
                        line=mark.line + 1 if mark else None,
                        column=mark.column + 1 if mark else None) from None
    except yaml.YAMLError as err:
        raise SpecError(f"YAML syntax error: {short_repr(str(err), 200)}", path=str(p)) from None
    _check_depth(data, str(p))
    return data


def read_text(path: str | os.PathLike, *, what: str = "file") -> str:
    """An input file's text: a regular file of at most :data:`MAX_INPUT_BYTES`, in UTF-8.
    Every failure is a :class:`SpecError` naming the file (and the line of a bad byte)."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise SpecError(f"not a regular {what}", path=str(p))
            raw = fh.read(MAX_INPUT_BYTES + 1)
    except FileNotFoundError:
        raise SpecError("file not found", path=str(p)) from None
    except IsADirectoryError:
        raise SpecError("is a directory, expected a file", path=str(p)) from None
    except OSError as err:
        raise SpecError(f"cannot read: {err.strerror}", path=str(p)) from None
    if len(raw) > MAX_INPUT_BYTES:
        raise SpecError(f"larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB", path=str(p))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        col = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise SpecError(f"not UTF-8 text (byte 0x{raw[err.start]:02x})", path=str(p), line=line,
                        column=col) from None


def load_model(model: type[M], path: str | os.PathLike) -> M:
    """Read ``path`` and validate it as ``model``."""
    data = read_yaml(path)
    if data is None:
        raise SpecError("file is empty", path=str(path))
    return validate(model, data, path=path)


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def write_model(obj: BaseModel, path: str | os.PathLike) -> Path:
    """Write a model as YAML (or JSON when the suffix is .json), atomically."""
    p = Path(path)
    data = obj.model_dump(mode="json", exclude_none=True)
    text = json.dumps(data, indent=2) + "\n" if p.suffix == ".json" else dump_yaml(data)
    return write_text_atomic(p, text)


def write_text_atomic(path: Path, text: str, mode: int | None = None) -> Path:
    """Write ``text`` to ``path`` so that a crash never leaves half a file."""
    return write_bytes_atomic(Path(path), text.encode("utf-8"), mode)


def write_bytes_atomic(path: Path, data: bytes, mode: int | None = None) -> Path:
    """Write via a new temporary file beside ``path``, then rename it over ``path``.

    The temporary file gets an unpredictable name and is created with ``O_EXCL``
    and ``O_NOFOLLOW`` (``mkstemp``), with mode 0600 until it is complete, so
    whoever can write the directory can neither redirect it through a symlink
    nor read a secret while it is written; the rename replaces a symlink at
    ``path`` itself instead of writing through it. ``mode`` defaults to 0644."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise CloudplanError(f"{path}: cannot write: {err.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode if mode is not None else 0o644)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise CloudplanError(f"{path}: cannot write: {err.strerror}") from None
    return path
