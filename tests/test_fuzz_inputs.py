"""Every command's input files, mutated: an exit code of 0-3 and one line, never a traceback.

hypothesis mutates the shipped examples the way a tired operator or a hostile
file would: a value replaced by a wrong type, an extreme number, a huge or
empty string, deep nesting, a YAML alias bomb, or bytes that are not UTF-8.
Each command runs in-process through the real CLI entry point; any exception
that escapes it (a traceback) fails the test with the input that caused it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudplan.cli import main

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
ALLOWED_EXIT = {0, 1, 2, 3}

NASTY = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.sampled_from([0, -1, 1e308, -1e308, 1e12, 1e-300, float("inf"), float("nan"), 0.0]),
    st.text(max_size=20), st.sampled_from(["", " ", "0.0.0.0", "::", "999.1.1.1", "a" * 5000, "../../etc/passwd",
                                           "ssh-ed25519 AAAA", "10.0.0.0/33", "\u202e\u0000x"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)

BOMB = ('bomb_a: &a ["x","x","x","x","x","x","x","x","x","x"]\n'
        'bomb_b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
        'bomb_c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n')


def _paths(data, prefix=()):
    """Every path to a value in a YAML document."""
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data[:4]):
            out += _paths(v, prefix + (i,))
    return out


def _replace(data, path, value):
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(data, dict):
        return {**data, head: _replace(data[head], rest, value)}
    return [_replace(v, rest, value) if i == head else v for i, v in enumerate(data)]


@st.composite
def mutated(draw, source: Path) -> bytes:
    data = yaml.safe_load(source.read_text())
    how = draw(st.sampled_from(["value", "value", "value", "deep", "bomb", "bytes", "drop"]))
    if how in ("value", "deep", "drop"):
        path = draw(st.sampled_from(_paths(data)))
        if how == "value":
            data = _replace(data, path, draw(NASTY))
        elif how == "deep":
            nested = 0
            for _ in range(draw(st.integers(10, 3000))):
                nested = [nested]
            data = _replace(data, path, nested)
        elif path:
            parent = data
            for p in path[:-1]:
                parent = parent[p]
            if isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent.pop(path[-1])
        try:
            return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()
        except RecursionError:
            return ("x: " + "[" * 3000 + "]" * 3000 + "\n").encode()
    text = source.read_bytes()
    if how == "bomb":
        anchor = draw(st.sampled_from(_paths(data)[1:]))
        # an alias bomb where a field value goes: prepend the anchors, point a top-level key at them
        key = anchor[0]
        return BOMB.encode() + text.replace(f"\n{key}:".encode(), f"\n{key}: *c\n_old_{key}:".encode(), 1)
    pos = draw(st.integers(0, len(text)))
    bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xe9", b"\x00", b"\xed\xa0\x80"]))
    return text[:pos] + bad + text[pos:]


@pytest.fixture(scope="module")
def blueprint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bp") / "blueprint.yaml"
    assert main(["size", str(EXAMPLES / "small.yaml"), "-o", str(out)]) == 0
    return out


def _run(argv: list[str], capsys) -> None:
    code = main(argv)
    out = capsys.readouterr()
    assert code in ALLOWED_EXIT, (argv, code, out.err[-500:])
    assert "Traceback" not in out.err and "Traceback" not in out.out
    if code:
        assert out.err.count("\n") <= 2 and len(out.err) < 2000, out.err[:2000]


# 15 fixed examples per command keep `make test` affordable; CLOUDPLAN_FUZZ_EXAMPLES=500 (random) digs deeper.
_DEEP = int(os.environ.get("CLOUDPLAN_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_DEEP or 15, deadline=None, derandomize=not _DEEP,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


@FUZZ
@given(data=mutated(EXAMPLES / "small.yaml"))
def test_size(tmp_path, capsys, data):
    _run(["size", str(_write(tmp_path, "workload.yaml", data)), "--time-limit", "5", "--json"], capsys)


@FUZZ
@given(data=mutated(EXAMPLES / "site.yaml"))
def test_layout(tmp_path, capsys, blueprint, data):
    _run(["layout", str(blueprint), "--site", str(_write(tmp_path, "site.yaml", data)),
          "-o", str(tmp_path / "inv.yaml")], capsys)


@FUZZ
@given(data=st.data())
def test_layout_and_report_blueprint(tmp_path, capsys, blueprint, data):
    bp = _write(tmp_path, "bp.yaml", data.draw(mutated(blueprint)))
    _run(["layout", str(bp), "--site", str(EXAMPLES / "site.yaml"), "-o", str(tmp_path / "inv.yaml")], capsys)
    _run(["report", str(bp), "-o", str(tmp_path / "report.html")], capsys)


@FUZZ
@given(data=mutated(EXAMPLES / "inventory.yaml"))
def test_provision_dry_run_and_manifests(tmp_path, capsys, data):
    inv = _write(tmp_path, "inventory.yaml", data)
    _run(["provision", str(inv), "--state", str(tmp_path / "state.db"), "--dry-run"], capsys)
    out = tmp_path / "manifests"
    shutil.rmtree(out, ignore_errors=True)
    _run(["manifests", str(inv), "-o", str(out)], capsys)


@FUZZ
@given(data=mutated(EXAMPLES / "inventory.yaml"))
def test_upgrade_rehearse(tmp_path, capsys, data):
    inv = _write(tmp_path, "inventory.yaml", data)
    _run(["upgrade", "rehearse", str(inv), "--from", "2025.2", "--to", "2026.1",
          "--placement", str(EXAMPLES / "placement.json"), "--flavors", str(EXAMPLES / "medium.yaml"),
          "--host-cores", "128", "--host-ram-gib", "1024", "-o", str(tmp_path / "r.html")], capsys)


@FUZZ
@given(data=st.binary(min_size=0, max_size=4096), keep=st.integers(0, 65536))
def test_status_and_events_on_damaged_state_files(tmp_path, capsys, data, keep):
    state = tmp_path / "state.db"
    if state.exists():
        state.unlink()
    assert main(["provision", str(EXAMPLES / "inventory.yaml"), "--state", str(tmp_path / "good.db"),
                 "--dry-run"]) in ALLOWED_EXIT
    capsys.readouterr()
    seed = _good_state(tmp_path)
    damaged = bytearray(seed)
    pos = keep % max(1, len(damaged))
    damaged[pos:pos + len(data)] = data
    state.write_bytes(bytes(damaged))
    _run(["status", "--state", str(state)], capsys)
    _run(["events", "--state", str(state), "r1-cmp-01"], capsys)


def _good_state(tmp_path: Path) -> bytes:
    from cloudplan.provision.states import NodeState
    from cloudplan.provision.store import StateStore

    p = tmp_path / "seed.db"
    if not p.exists():
        with StateStore(p) as st_:
            st_.ensure_nodes(["r1-cmp-01", "r1-cmp-02"])
            st_.transition("r1-cmp-01", NodeState.verifying_bmc, step="verify-bmc")
            st_.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return p.read_bytes()


# -- the causes the mutation run found, each pinned ---------------------------------------


def _commands(tmp_path: Path, good_blueprint: Path, **files: Path) -> list[list[str]]:
    """Every command that reads an input file, with ``files`` standing in for the examples."""
    f = {"workload": EXAMPLES / "small.yaml", "site": EXAMPLES / "site.yaml", "blueprint": good_blueprint,
         "inventory": EXAMPLES / "inventory.yaml", "placement": EXAMPLES / "placement.json",
         "flavors": EXAMPLES / "medium.yaml", **files}
    return [
        ["size", str(f["workload"]), "--time-limit", "5"],
        ["layout", str(f["blueprint"]), "--site", str(f["site"]), "-o", str(tmp_path / "inv.yaml")],
        ["report", str(f["blueprint"]), "-o", str(tmp_path / "r.html")],
        ["manifests", str(f["inventory"]), "-o", str(tmp_path / "m"), "--blueprint", str(f["blueprint"])],
        ["provision", str(f["inventory"]), "--state", str(tmp_path / "s.db"), "--dry-run"],
        ["upgrade", "rehearse", str(f["inventory"]), "--from", "2025.2", "--to", "2026.1", "--placement",
         str(f["placement"]), "--flavors", str(f["flavors"]), "--host-cores", "128", "--host-ram-gib", "1024",
         "-o", str(tmp_path / "u.html")],
    ]


@pytest.mark.parametrize("which", ["workload", "site", "blueprint", "inventory", "placement", "flavors"])
def test_a_byte_that_is_not_utf8_is_one_error_in_every_command(tmp_path, capsys, blueprint, which):
    src = {"workload": EXAMPLES / "small.yaml", "site": EXAMPLES / "site.yaml", "blueprint": blueprint,
           "inventory": EXAMPLES / "inventory.yaml", "placement": EXAMPLES / "placement.json",
           "flavors": EXAMPLES / "medium.yaml"}[which]
    text = src.read_bytes()
    bad = _write(tmp_path, f"bad-{src.name}", text[:40] + b"\xff" + text[40:])
    hit = 0
    for argv in _commands(tmp_path, blueprint, **{which: bad}):
        if str(bad) not in argv:
            continue
        hit += 1
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith(f"Error: {bad}:") and "not UTF-8" in err, (argv, err)
    assert hit


def _yaml_edit(src: Path, tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(src.read_text())
    edit(data)
    return _write(tmp_path, src.name, yaml.safe_dump(data, sort_keys=False).encode())


@pytest.mark.parametrize("case", ["ram_gib", "ram_allocation_ratio", "gateway", "height_u", "deep", "bomb"])
def test_the_known_tracebacks_are_one_line_errors(tmp_path, capsys, blueprint, case):
    if case == "ram_gib":
        f = {"workload": _yaml_edit(EXAMPLES / "small.yaml", tmp_path,
                                    lambda d: d["flavors"][0].update(ram_gib=1e308))}
    elif case == "ram_allocation_ratio":
        f = {"workload": _yaml_edit(EXAMPLES / "small.yaml", tmp_path,
                                    lambda d: d.update(policy={"ram_allocation_ratio": 1e12}))}
    elif case == "gateway":
        f = {"site": _yaml_edit(EXAMPLES / "site.yaml", tmp_path,
                                lambda d: d["networks"]["api"].update(gateway="banana"))}
    elif case == "height_u":
        f = {"blueprint": _yaml_edit(blueprint, tmp_path, lambda d: d["nodes"][0].update(height_u=0))}
    elif case == "deep":
        f = {"inventory": _write(tmp_path, "inventory.yaml", ("name: " + "[" * 2000 + "]" * 2000 + "\n").encode())}
    else:  # 494 bytes that expand to 10^9 list items where an enum goes
        bomb = BOMB + ('bomb_d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\nbomb_e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n'
                       'bomb_f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n')
        text = (EXAMPLES / "inventory.yaml").read_text().replace("role: compute", "role: *f", 1)
        f = {"inventory": _write(tmp_path, "inventory.yaml", (bomb + text).encode())}
    (which, path), = f.items()
    for argv in _commands(tmp_path, blueprint, **f):
        if str(path) not in argv:
            continue
        code = main(argv)     # a command that does not use the field may well succeed
        out = capsys.readouterr()
        assert code in (0, 1), (argv, code, out.err)
        if code:
            assert out.err.startswith("Error: ") and out.err.count("\n") == 1 and len(out.err) < 500, out.err
        if case == "bomb":
            assert code == 1 and "aliases" in out.err, out.err
