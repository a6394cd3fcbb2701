"""The `.vbp` reader, the benchmark runner and `cloudplan bench vbp`."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from cloudplan.cli import main
from cloudplan.errors import SpecError
from cloudplan.sizing import vbp

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "bench" / "vbp"

# 2 dimensions, capacity (10, 10); A = (6, 4) x 2 and B = (4, 6) x 2: only A+B
# share a bin, and it fills it, so the optimum is 2 bins.
PAIRS = "2\n10 10\n2\n6 4 2\n4 6 2\n"
# 1 dimension, capacity 10; sizes 4 x 2 and 3 x 4: 4+3+3 twice, optimum 2 bins.
TRIPLES = "1\n10\n2\n4 2\n3 4\n"


def bench_dir() -> Path:
    if not (BENCH / "New_instances.tar.gz").is_file():
        pytest.fail(f"benchmark data missing: expected {BENCH}/New_instances.tar.gz and "
                    f"New_summary_known.csv (the shared bench/vbp directory next to the repository)")
    return BENCH


def test_parse_vbp(tmp_path):
    f = tmp_path / "pairs.vbp"
    f.write_text(PAIRS)
    inst = vbp.parse_vbp(f.read_text(), f.name)
    assert inst.capacity == (10, 10)
    assert [(it.size, it.count) for it in inst.items] == [((6, 4), 2), ((4, 6), 2)]
    assert inst.n_items == 4


@pytest.mark.parametrize("text, where", [
    ("2\n10 10\n2\n6 4 2\n", "unexpected end"),
    ("2\n10 10\n1\n6 4\n", "bad.vbp:4:"),
    ("2\n10 x\n1\n6 4 1\n", "bad.vbp:2:"),
    ("0\n", "at least 1"),
])
def test_parse_errors_name_the_line(text, where):
    with pytest.raises(SpecError) as e:
        vbp.parse_vbp(text, "bad.vbp")
    assert "bad.vbp" in str(e.value) and where in str(e.value)


def test_sources_from_dir_file_and_tarball(tmp_path):
    d = tmp_path / "inst"
    d.mkdir()
    (d / "a.vbp").write_text(PAIRS)
    (d / "b.vbp").write_text(TRIPLES)
    (d / "notes.txt").write_text("ignored")
    tgz = tmp_path / "set.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(d, arcname="set")
    assert [n for n, _ in vbp.iter_sources([d])] == ["a.vbp", "b.vbp"]
    assert [n for n, _ in vbp.iter_sources([tgz])] == ["a.vbp", "b.vbp"]
    assert [n for n, _ in vbp.iter_sources([d / "b.vbp"])] == ["b.vbp"]
    with pytest.raises(SpecError):
        vbp.iter_sources([tmp_path / "missing"])


def test_cli_json_on_two_instances(tmp_path, capsys):
    (tmp_path / "pairs.vbp").write_text(PAIRS)
    (tmp_path / "triples.vbp").write_text(TRIPLES)
    code = main(["bench", "vbp", str(tmp_path / "pairs.vbp"), str(tmp_path / "triples.vbp"),
                 "--time-limit", "5", "--json"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["instance"] for r in rows] == ["pairs.vbp", "triples.vbp"]
    for r in rows:
        assert r["bins"] == 2 and r["lower_bound"] == 2 and r["optimal"] is True
        assert isinstance(r["seconds"], float)


def test_cli_table_and_missing_path(tmp_path, capsys):
    (tmp_path / "pairs.vbp").write_text(PAIRS)
    assert main(["bench", "vbp", str(tmp_path), "--time-limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "pairs.vbp" in out and "1 proven optimal" in out
    assert main(["bench", "vbp", str(tmp_path / "nope.vbp")]) == 1
    assert "nope.vbp" in capsys.readouterr().err


def _extract(names: list[str], dest: Path) -> None:
    with tarfile.open(bench_dir() / "New_instances.tar.gz") as tar:
        for m in tar.getmembers():
            if Path(m.name).stem in names:
                (dest / Path(m.name).name).write_bytes(tar.extractfile(m).read())


def test_real_instances_against_published(tmp_path, capsys):
    """Two small instances of the published set: the bound never exceeds the known
    optimum, the bins never go below it, and --known reports the comparison."""
    names = ["class1_20_3_0", "class4_40_5_2"]
    _extract(names, tmp_path)
    known_file = bench_dir() / "New_summary_known.csv"
    known = vbp.read_known(known_file)
    code = main(["bench", "vbp", str(tmp_path), "--time-limit", "5", "--json"])
    assert code == 0
    rows = {r["instance"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {f"{n}.vbp" for n in names}
    for n in names:
        opt = known[n]["OPT"]
        assert rows[f"{n}.vbp"]["lower_bound"] <= opt <= rows[f"{n}.vbp"]["bins"]
        assert rows[f"{n}.vbp"]["bins"] <= known[n]["best_overall"]
    assert main(["bench", "vbp", str(tmp_path), "--time-limit", "5", "--known", str(known_file)]) == 0
    out = capsys.readouterr().out
    assert "gap to OPT" in out and "class1" in out and "class4" in out


def test_compare_known_aggregates_per_class_and_d():
    runs = [vbp.VbpRun("class1_20_3_0.vbp", 3, 20, 11, 11, True, 0.1, "optimal"),
            vbp.VbpRun("class1_20_3_1.vbp", 3, 20, 10, 9, False, 5.0, "feasible"),
            vbp.VbpRun("class2_20_5_0.vbp", 5, 20, 7, 7, True, 0.1, "optimal")]
    known = {"class1_20_3_0": {"OPT": 11, "best_overall": 11}, "class1_20_3_1": {"OPT": 9, "best_overall": 10},
             "class2_20_5_0": {"OPT": -1, "best_overall": 7}}
    table = vbp.compare_known(runs, known)
    assert table[0] == {"class": "class1", "d": "3", "known": 2, "mean_gap_pct": pytest.approx(5.56),
                        "at_opt": 1, "proven": 1, "best_overall_gap_pct": pytest.approx(5.56),
                        "best_overall_at_opt": 1, "better_than_best_overall": 0}
    assert table[-1]["class"] == "all" and table[-1]["known"] == 2


def test_cli_needs_paths_or_the_triplets(capsys):
    assert main(["bench", "vbp"]) != 0
    assert "--triplets" in capsys.readouterr().err


def test_cli_triplets_report_against_their_optimum(monkeypatch, capsys):
    """--triplets adds the generated family and its known optimum to the comparison
    (a two-instance family here, the full one is the benchmark's)."""
    small = vbp.triplet_sources(dims=(5,), sizes=(60,), seeds=2)
    monkeypatch.setattr(vbp, "triplet_sources", lambda: small)
    assert main(["bench", "vbp", "--triplets", "--time-limit", "5"]) == 0
    out = capsys.readouterr().out
    assert "triplet_60_5_0.vbp" in out and "2 proven optimal" in out
    assert "triplet" in out.split("Against the published results")[1]


def test_cli_local_search_rate(tmp_path, capsys):
    """`bench local`: the search alone on a published instance takes bins out of the
    greedy packing, never below the optimum, and reports its steps per second."""
    _extract(["class2_40_3_0"], tmp_path)
    known_file = bench_dir() / "New_summary_known.csv"
    opt = vbp.read_known(known_file)["class2_40_3_0"]["OPT"]
    assert main(["bench", "local", str(tmp_path), "--seconds", "0.5", "--json", "--known", str(known_file)]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["opt"] == opt <= row["bins"] < row["greedy_bins"]
    assert row["steps"] > 0 and row["steps_per_s"] > 0
    assert main(["bench", "local", str(tmp_path), "--seconds", "0.2"]) == 0
    assert "steps/s" in capsys.readouterr().out
    assert main(["bench", "local", str(tmp_path), "--seconds", "0"]) == 2
