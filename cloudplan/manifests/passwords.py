"""Kolla-Ansible's ``passwords.yml``: every key of the release, strong random values, kept across runs.

Values come from :mod:`secrets`; the kind of each key (UUID, SSH key pair,
Fernet key, HMAC key, bcrypt salt, plain password, or left blank) is shipped
per release. A second run keeps every existing value and fills only missing
keys. Values are never logged or printed; the file is written mode 0600.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import string
import uuid
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cloudplan.errors import ManifestError
from cloudplan.io import write_text_atomic
from cloudplan.manifests.release import ReleaseData

log = logging.getLogger(__name__)

# Kolla-Ansible's own generator uses 4096-bit RSA pairs (OpenSSH public key, PKCS#8 private key).
SSH_KEY_BITS = 4096
ALNUM = string.ascii_letters + string.digits
BCRYPT_SALT_CHARS = ALNUM + "./"
BCRYPT_SALT_LENGTH = 22
# Long scalars are split over lines so the file stays within yamllint's line length.
CHUNK = 64
MAX_LINE = 80


def ssh_key_pair(bits: int = SSH_KEY_BITS) -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return {"private_key": private, "public_key": public}


def new_value(kind: str, length: int) -> Any:
    """A fresh secret of ``kind``."""
    if kind == "ssh_key":
        return ssh_key_pair()
    if kind == "uuid":
        return str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))
    if kind == "fernet":
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    if kind == "hmac_md5":
        return secrets.token_hex(16)
    if kind == "bcrypt_salt":
        return "".join(secrets.choice(BCRYPT_SALT_CHARS) for _ in range(BCRYPT_SALT_LENGTH))
    if kind == "blank":
        # Only the user knows it (e.g. a private registry's password): left empty, as Kolla-Ansible does.
        return None
    return "".join(secrets.choice(ALNUM) for _ in range(length))


def _missing(value: Any, kind: str) -> bool:
    if kind == "ssh_key":
        return not isinstance(value, dict) or not value.get("private_key") or not value.get("public_key")
    return value is None


def fill(data: ReleaseData, existing: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Every key of the release: existing values kept, missing ones generated. Returns (values, added keys)."""
    existing = dict(existing or {})
    out: dict[str, Any] = {}
    added = []
    for key, kind in data.password_kinds.items():
        if key in existing and not _missing(existing[key], kind):
            out[key] = existing.pop(key)
            continue
        existing.pop(key, None)
        out[key] = new_value(kind, data.password_length)
        if out[key] is not None:
            added.append(key)
    # Keys the release no longer has stay: an upgrade may still need them, and removing is the operator's call.
    out.update(existing)
    return out, added


def _scalar(value: Any, indent: int, prefix: int) -> str:
    """One YAML value after ``key:`` (``prefix`` characters): literal blocks for multi-line
    strings; a value that would pass yamllint's 80 columns is split with escaped line breaks,
    which join the pieces with nothing between them. The value always starts on the key's line:
    Kolla's precheck takes a line ending in ``key:`` for an empty password (and so writes a
    blank one as ``null``, as kolla-genpwd does)."""
    pad = " " * indent
    if value is None:
        return " null"
    if not isinstance(value, str):
        return " " + json.dumps(value)
    # A literal block cannot hold leading spaces on its first line or several trailing newlines.
    if "\n" in value.rstrip("\n") and not value.startswith(" ") and not value.endswith("\n\n"):
        chomp = "" if value.endswith("\n") else "-"
        return f" |{chomp}\n" + "\n".join(f"{pad}{line}" if line else "" for line in value.rstrip("\n").split("\n"))
    quoted = json.dumps(value)
    if prefix + 1 + len(quoted) <= MAX_LINE:
        return " " + quoted
    inner = quoted[1:-1]
    room = max(1, MAX_LINE - prefix - 3)  # ' "' before the first piece, the backslash after it
    pieces = [inner[:room]] + [inner[i:i + CHUNK] for i in range(room, len(inner), CHUNK)]
    # The next line's leading spaces are dropped, and an escape must not be cut in two.
    if "\\" in inner or any(p.startswith(" ") for p in pieces[1:]):
        return " " + quoted
    return ' "' + f"\\\n{pad}".join(pieces) + '"'


def dump(values: dict[str, Any]) -> str:
    """The passwords file text (YAML that yamllint accepts)."""
    lines = ["---"]
    for key, value in values.items():
        if isinstance(value, dict):
            lines.append(f"{key}:")
            for sub, subval in value.items():
                lines.append(f"  {sub}:{_scalar(subval, 4, len(sub) + 3)}")
        else:
            lines.append(f"{key}:{_scalar(value, 2, len(key) + 1)}")
    return "\n".join(lines) + "\n"


def read_existing(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        # The message never quotes the file's content: it holds secrets.
        raise ManifestError(f"{path}{where}: existing passwords file is not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: existing passwords file is not a key/value mapping")
    return data


def write_passwords(path: Path, data: ReleaseData, site_values: dict[str, str] | None = None) -> list[str]:
    """Create or complete ``path``; returns the keys added (names only, never values).

    ``site_values`` are secrets the site supplies (the registry password): they replace the file's value.
    """
    values, added = fill(data, read_existing(path))
    for key, value in (site_values or {}).items():
        if key not in data.password_kinds:
            raise ManifestError(f"{key} is not a key of passwords.yml in OpenStack {data.release}")
        values[key] = value
    write_text_atomic(path, dump(values), mode=0o600)
    os.chmod(path, 0o600)
    log.info("%s: %d key(s) added, %d kept", path, len(added), len(values) - len(added))
    return added
