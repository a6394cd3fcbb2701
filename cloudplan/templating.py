"""Finding and rendering the jinja2 templates under ``templates/``.

Every rendered artifact (dnsmasq configuration, iPXE scripts, cloud-init
seeds, control-plane manifests) comes from a template in one directory, so a
site can override any of them without touching code. Rendering is strict: a
variable missing from the context is an error, never an empty string.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

import cloudplan
from cloudplan.errors import CloudplanError, ManifestError

# Environment variable naming a templates directory that wins over the built-in one.
TEMPLATES_ENV = "CLOUDPLAN_TEMPLATES"


def _candidates() -> list[Path]:
    pkg = Path(cloudplan.__file__).resolve().parent
    return [
        pkg.parent / "templates",                          # source checkout / editable install
        pkg / "templates",                                 # shipped as package data
        Path(sys.prefix) / "share" / "cloudplan" / "templates",  # shipped as data files
    ]


def templates_dir(override: str | os.PathLike | None = None) -> Path:
    """The directory holding the templates.

    Order: ``override``, then ``$CLOUDPLAN_TEMPLATES``, then the first of the
    source tree's ``templates/``, the package's ``templates/`` and
    ``<prefix>/share/cloudplan/templates`` that exists.
    """
    explicit = override if override is not None else os.environ.get(TEMPLATES_ENV)
    if explicit:
        p = Path(explicit)
        if not p.is_dir():
            raise CloudplanError(f"templates directory {p} does not exist "
                                 f"(from {'argument' if override is not None else TEMPLATES_ENV})")
        return p
    for p in _candidates():
        if p.is_dir():
            return p
    raise CloudplanError(f"no templates directory found; set {TEMPLATES_ENV} to the cloudplan templates/ directory")


def _yaml_str(value: Any) -> str:
    # JSON is a subset of YAML: a JSON-quoted scalar can never break the document.
    return json.dumps(value, ensure_ascii=False)


def environment(override: str | os.PathLike | None = None) -> jinja2.Environment:
    """A jinja2 environment over :func:`templates_dir` with StrictUndefined.

    Autoescaping is off (the outputs are configuration files, not HTML); the
    ``yaml_str`` filter quotes a value safely for YAML.
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir(override))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["yaml_str"] = _yaml_str
    return env


def render(name: str, context: Mapping[str, Any], *, error: type[CloudplanError] = ManifestError,
           env: jinja2.Environment | None = None, **error_kwargs: Any) -> str:
    """Render template ``name`` (path relative to the templates directory).

    A missing template or variable becomes ``error`` (a :class:`CloudplanError`
    subclass, built with ``error_kwargs`` such as ``node=`` and ``step=``) that
    names the template.
    """
    env = env or environment()
    try:
        return env.get_template(name).render(**context)
    except jinja2.TemplateNotFound:
        raise error(f"template {name} not found in {env.loader.searchpath[0]}",  # type: ignore[union-attr]
                    **error_kwargs) from None
    except jinja2.UndefinedError as err:
        raise error(f"template {name}: {err.message}", **error_kwargs) from None
    except jinja2.TemplateSyntaxError as err:
        raise error(f"template {name}:{err.lineno}: {err.message}", **error_kwargs) from None
