"""What `provision` refuses before it touches anything: duplicate identities, bad password sources."""

from __future__ import annotations

import copy
import os
import stat
from pathlib import Path

import pytest
import yaml

from cloudplan.cli import main
from cloudplan.errors import SpecError
from cloudplan.inventory import read_password_file

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = yaml.safe_load((REPO / "examples" / "inventory.yaml").read_text())


def _dry_run(tmp_path: Path, data: dict, capsys) -> tuple[int, str]:
    inv = tmp_path / "inventory.yaml"
    inv.write_text(yaml.safe_dump(data))
    code = main(["provision", str(inv), "--state", str(tmp_path / "s.db"), "--dry-run"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("what", ["bmc", "mac", "uuid", "uuid-swapped", "ip"])
def test_duplicate_identities_are_refused_naming_both_nodes(tmp_path, capsys, what):
    data = copy.deepcopy(EXAMPLE)
    a, b = data["nodes"][0], data["nodes"][3]
    if what == "bmc":
        b["bmc"].update(address=a["bmc"]["address"], port=a["bmc"].get("port", 623))
    elif what == "mac":
        a["mac"], b["mac"] = "52:54:00:00:00:01", "52-54-00-00-00-01"
    elif what == "uuid":
        a["uuid"] = b["uuid"] = "4c4c4544-0042-3510-8054-b4c04f563532"
    elif what == "uuid-swapped":   # the same SMBIOS UUID as firmware with the other byte order reports it
        a["uuid"], b["uuid"] = "4c4c4544-0042-3510-8054-b4c04f563532", "44454c4c-4200-1035-8054-b4c04f563532"
    else:
        b["addresses"]["api"] = a["addresses"]["api"]
    code, err = _dry_run(tmp_path, data, capsys)
    assert code == 1, err
    assert f"nodes {a['name']} and {b['name']} have the same" in err and err.count("\n") == 1, err


def _secret(tmp_path: Path, content: bytes = b"s3cret-pw\n", mode: int = 0o600) -> Path:
    p = tmp_path / "bmc-password"
    p.write_bytes(content)
    p.chmod(mode)
    return p


def test_password_file_checks(tmp_path):
    with pytest.raises(SpecError, match="group or others"):
        read_password_file(_secret(tmp_path, mode=0o640), field="f")
    with pytest.raises(SpecError, match="not UTF-8") as ei:
        read_password_file(_secret(tmp_path, b"pw\xff\xfe"), field="f")
    assert "\\xff" not in str(ei.value) and "pw" not in str(ei.value).split(":")[-1]
    with pytest.raises(SpecError, match="empty"):
        read_password_file(_secret(tmp_path, b"\n"), field="f")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(SpecError, match="not a regular file"):   # and it does not block
        read_password_file(fifo, field="f")
    d = tmp_path / "dir"
    d.mkdir(mode=0o700)
    with pytest.raises(SpecError, match="not a regular file"):
        read_password_file(d, field="f")
    assert read_password_file(_secret(tmp_path), field="f") == "s3cret-pw"


def test_password_file_of_another_user_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("needs root to hand a file to another user")
    p = _secret(tmp_path)
    os.chown(p, 65534, 65534)
    with pytest.raises(SpecError, match="owned by uid 65534"):
        read_password_file(p, field="f")


def test_dry_run_checks_every_password_source(tmp_path, capsys, monkeypatch):
    data = copy.deepcopy(EXAMPLE)
    loose = _secret(tmp_path, mode=0o644)
    data["nodes"][0]["bmc"] = {**data["nodes"][0]["bmc"], "password_env": None, "password_file": str(loose)}
    data["nodes"][0]["bmc"].pop("password_env")
    env = data["nodes"][1]["bmc"]["password_env"]
    monkeypatch.delenv(env, raising=False)
    code, err = _dry_run(tmp_path, data, capsys)
    assert code == 0
    assert "group or others" in err and f"{env} is not set" in err
    assert stat.S_IMODE(loose.stat().st_mode) == 0o644   # only read, never changed


def test_unquoted_mac_addresses_are_read_as_written(tmp_path):
    """YAML 1.1 reads 52:54:00:12:34:56 as a base-60 integer; an operator writes MACs unquoted."""
    from cloudplan.inventory import Inventory
    from cloudplan.io import load_model

    text = (REPO / "examples" / "inventory.yaml").read_text()
    text = text.replace("  - name: ctl01\n", "  - name: ctl01\n    mac: 52:54:00:12:34:56\n"
                        "    nics: {eno1: 52:54:00:12:34:57}\n", 1)
    assert "mac: 52:54:00:12:34:56" in text
    assert isinstance(yaml.safe_load(text)["nodes"][0]["mac"], int)   # what plain YAML 1.1 would give
    inv_path = tmp_path / "inventory.yaml"
    inv_path.write_text(text)
    node = load_model(Inventory, inv_path).nodes[0]
    assert (node.mac, node.nics) == ("52:54:00:12:34:56", {"eno1": "52:54:00:12:34:57"})
