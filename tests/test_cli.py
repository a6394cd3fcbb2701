"""The CLI: exact error lines and exit codes, JSON/CSV output, blueprint -> layout round trip."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import yaml

from cloudplan.blueprint import Blueprint
from cloudplan.cli import main
from cloudplan.inventory import Inventory
from cloudplan.io import load_model

REPO = Path(__file__).resolve().parent.parent

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "examples" / "small.yaml"


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "w.yaml"
    p.write_text(text)
    return p


def test_yaml_syntax_error_names_file_line_column(tmp_path, capsys):
    p = write(tmp_path, "name: x\nflavors:\n  - {name: a, vcpus: 1\n")
    code, _, err = run(capsys, "size", p)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"Error: {p}:4:1: YAML syntax error:")


def test_schema_error_names_the_field_path(tmp_path, capsys):
    p = write(tmp_path, yaml.safe_dump({"name": "x", "flavors": [
        {"name": "a", "vcpus": 1, "ram_gib": 2, "count": 1},
        {"name": "b", "vcpus": 1, "ram_gib": 0, "count": 1}]}))
    code, _, err = run(capsys, "size", p)
    assert code == 1
    assert err.strip() == f"Error: {p}: flavors[1].ram_gib: must be > 0 (got 0)"


def test_unknown_tier_lists_the_valid_ones(tmp_path, capsys):
    p = write(tmp_path, yaml.safe_dump({"name": "x", "flavors": [{"name": "a", "vcpus": 1, "ram_gib": 2, "count": 1}],
                                        "storage": [{"tier": "tape", "usable_tib": 1}]}))
    code, _, err = run(capsys, "size", p)
    assert code == 1
    assert err.strip() == f"Error: {p}: storage[0].tier: 'tape' is not valid; expected 'nvme', 'ssd' or 'hdd'"


def test_unknown_policy_value_and_unknown_field(tmp_path, capsys):
    p = write(tmp_path, yaml.safe_dump({"name": "x", "flavors": [{"name": "a", "vcpus": 1, "ram_gib": 2, "count": 1}],
                                        "policy": {"failure_domain": "row"}}))
    code, _, err = run(capsys, "size", p)
    assert (code, err.strip()) == (1, f"Error: {p}: policy.failure_domain: 'row' is not valid; expected 'host' or 'rack'")
    p = write(tmp_path, yaml.safe_dump({"name": "x", "flavours": []}))
    code, _, err = run(capsys, "size", p)
    assert code == 1 and "flavours: unknown field" in err


def test_missing_file_and_infeasible_are_one_line(tmp_path, capsys):
    code, _, err = run(capsys, "size", tmp_path / "nope.yaml")
    assert (code, err.strip()) == (1, f"Error: {tmp_path / 'nope.yaml'}: file not found")
    p = write(tmp_path, yaml.safe_dump({"name": "x", "flavors": [{"name": "r1.huge", "vcpus": 8, "ram_gib": 99999,
                                                                 "count": 1}]}))
    code, _, err = run(capsys, "size", p)
    assert code == 1
    assert err.startswith(f"Error: {p}: flavors[0].ram_gib: flavor r1.huge needs 99999 GiB RAM (+ 0.5 GiB hypervisor "
                          "overhead); the largest chassis holds")
    assert len(err.strip().splitlines()) == 1


def test_usage_error_exits_2(capsys):
    code, _, err = run(capsys, "size", SMALL, "--solver", "gurobi")
    assert code == 2
    assert "gurobi" in err


def test_debug_shows_the_traceback(tmp_path):
    p = write(tmp_path, "name: [\n")
    r = subprocess.run([sys.executable, "-m", "cloudplan.cli", "--debug", "size", str(p)], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" in r.stderr and "SpecError" in r.stderr


def test_json_output_has_the_promised_keys(capsys):
    code, out, _ = run(capsys, "size", SMALL, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["status"] in ("optimal", "feasible")
    for n in doc["nodes"]:
        assert {"role", "chassis", "count", "ram_gib", "cores", "drives"} <= set(n)
    assert {"capex_usd", "opex_usd_per_month", "tco_usd", "usd_per_vm_month"} <= set(doc["cost"])
    cap = doc["capacity"]
    assert cap["vcpus"]["offered"] >= cap["vcpus"]["demanded"] > 0
    assert cap["ram_gib"]["offered"] >= cap["ram_gib"]["demanded"] > 0
    assert cap["usable_tib"]["ssd"]["offered"] >= cap["usable_tib"]["ssd"]["demanded"]


def test_csv_bill_of_materials_and_blueprint_to_inventory(tmp_path, capsys):
    bp_path = tmp_path / "bp.yaml"
    code, out, _ = run(capsys, "size", SMALL, "--format", "csv", "-o", bp_path)
    assert code == 0
    assert out.splitlines()[0] == "role,item,cpu,ram_gib,drives,count,unit_usd,line_usd"
    bp = load_model(Blueprint, bp_path)
    assert sum(float(line.split(",")[-1]) for line in out.splitlines()[1:]) == bp.cost.capex_usd
    inv_path = tmp_path / "inv.yaml"
    code, out, _ = run(capsys, "layout", bp_path, "--site", ROOT / "examples" / "site.yaml", "-o", inv_path)
    assert code == 0
    inv = load_model(Inventory, inv_path)
    assert len(inv.nodes) == bp.node_count
    assert "password" not in inv_path.read_text().replace("password_env", "")
    names = [n.name for n in inv.nodes]
    assert len(set(names)) == len(names)
    for field in ("provisioning", "api", "storage"):
        addrs = [n.addresses[field] for n in inv.nodes]
        assert len(set(addrs)) == len(addrs)
    # every node has its own U range inside its rack, below the switches
    for rack in inv.racks:
        used = set()
        for n in (n for n in inv.nodes if n.rack == rack.name):
            span = set(range(n.u, n.u + n.height_u))
            assert not span & used
            used |= span
        assert max(used) < min(d.u for d in rack.devices)


def test_layout_with_a_password_file_site(tmp_path, capsys):
    bp_path, inv_path, site = tmp_path / "bp.yaml", tmp_path / "inv.yaml", tmp_path / "site.yaml"
    assert run(capsys, "size", SMALL, "-o", bp_path)[0] == 0
    text = (ROOT / "examples" / "site.yaml").read_text()
    site.write_text(text.replace("password_env: BMC_PASSWORD", "password_file: /etc/cloudplan/bmc-password"))
    code, _, err = run(capsys, "layout", bp_path, "--site", site, "-o", inv_path)
    assert code == 0, err
    inv = load_model(Inventory, inv_path)
    assert {(n.bmc.password_file, n.bmc.password_env) for n in inv.nodes} == {("/etc/cloudplan/bmc-password", None)}
    both = text.replace("password_env: BMC_PASSWORD", "password_env: X\n  password_file: /etc/x")
    site.write_text(both)
    code, _, err = run(capsys, "layout", bp_path, "--site", site, "-o", inv_path)
    assert code == 1 and "bmc: give one of password_env or password_file, not both" in err


def test_layout_error_names_the_site_file(tmp_path, capsys):
    bp_path, site = tmp_path / "bp.yaml", tmp_path / "site.yaml"
    assert run(capsys, "size", SMALL, "-o", bp_path)[0] == 0
    site.write_text((ROOT / "examples" / "site.yaml").read_text().replace("  api: {", "  apis: {"))
    code, _, err = run(capsys, "layout", bp_path, "--site", site, "-o", tmp_path / "inv.yaml")
    assert (code, err.strip()) == (1, f"Error: {site}: networks.api: the site needs a 'api' network")


def _command_paths(group, prefix=()):
    """Every command of the typer app (the leaves, not the groups), as argv prefixes."""
    for name, cmd in sorted(group.commands.items()):
        if getattr(cmd, "commands", None):
            yield from _command_paths(cmd, (*prefix, name))
        else:
            yield [*prefix, name]


def test_every_command_has_help_with_an_example(capsys):
    import typer.main

    from cloudplan.cli import app
    paths = list(_command_paths(typer.main.get_command(app)))
    # The walk finds what the command modules register, not a list kept by hand.
    assert ["size"] in paths and ["replace"] in paths and ["capacity"] in paths
    assert ["maintenance", "plan"] in paths and ["upgrade", "rehearse"] in paths
    for cmd in paths + [["maintenance"], ["upgrade"]]:
        code, out, _ = run(capsys, *cmd, "--help")
        assert code == 0, cmd
        assert "Example" in out, cmd


def test_outputs_are_not_written_through_a_planted_symlink(tmp_path, capsys):
    """Whoever can write the output directory plants symlinks at the names a writer might
    use for its temporary file, and at the output itself: neither is followed."""
    out = tmp_path / "m"
    out.mkdir()
    stolen = tmp_path / "stolen"
    for name in (".passwords.yml.tmp", "passwords.yml.tmp", ".passwords.yml"):
        (out / name).symlink_to(stolen)
    elsewhere = tmp_path / "globals-elsewhere.yml"
    elsewhere.write_text("keep me\n")
    (out / "globals.yml").symlink_to(elsewhere)
    assert main(["manifests", str(REPO / "examples" / "inventory.yaml"), "-o", str(out)]) == 0, \
        capsys.readouterr().err
    assert not stolen.exists()
    pw = out / "passwords.yml"
    assert pw.is_file() and not pw.is_symlink() and stat.S_IMODE(pw.stat().st_mode) == 0o600
    assert elsewhere.read_text() == "keep me\n" and not (out / "globals.yml").is_symlink()
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]


def test_a_racing_symlink_never_receives_a_secret(tmp_path):
    """The race as an attacker runs it: plant the symlink again and again while secrets are written."""
    import threading

    from cloudplan.io import write_text_atomic

    out, stolen = tmp_path / "passwords.yml", tmp_path / "stolen"
    stop = threading.Event()

    def plant():
        while not stop.is_set():
            for name in (f".{out.name}.tmp", f"{out.name}.tmp"):
                try:
                    (tmp_path / name).symlink_to(stolen)
                except FileExistsError:
                    pass

    t = threading.Thread(target=plant)
    t.start()
    try:
        for i in range(300):
            write_text_atomic(out, f"secret-{i}\n", mode=0o600)
    finally:
        stop.set()
        t.join()
    assert not stolen.exists(), "a secret went through the planted symlink"
    assert out.read_text() == "secret-299\n" and not out.is_symlink()


def test_a_bug_is_one_line_and_exit_70_with_the_traceback_behind_debug(monkeypatch, capsys):
    import cloudplan.commands.size as size_cmd

    def broken(*a, **kw):
        raise KeyError("boom")
    monkeypatch.setattr(size_cmd, "load_model", broken)
    assert main(["size", str(REPO / "examples" / "small.yaml")]) == 70
    err = capsys.readouterr().err
    assert err.startswith("Error: internal error (KeyError: 'boom')") and err.count("\n") == 1
    assert "Traceback" not in err
