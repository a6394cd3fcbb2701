"""Bad input: one clear error naming the file and the field, and warnings that do not stop a plan."""

from __future__ import annotations

import yaml

from cloudplan.cli import main
from cloudplan.catalog import load_catalog
from cloudplan.sizing.plan import size_cloud
from tests.test_sizing import workload, write_catalog


def _write(tmp_path, doc) -> str:
    p = tmp_path / "w.yaml"
    p.write_text(yaml.safe_dump(doc))
    return str(p)


def test_all_zero_counts_are_one_clear_error(tmp_path, capsys):
    p = _write(tmp_path, {"name": "z", "flavors": [{"name": "a", "vcpus": 1, "ram_gib": 1, "count": 0},
                                                    {"name": "b", "vcpus": 2, "ram_gib": 4, "count": 0}]})
    assert main(["size", p]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"Error: {p}: flavors: every flavor's count is 0: there is nothing to size (give at least one " \
                  "flavor a count)"


def test_an_impossible_iops_names_the_file_and_field(tmp_path, capsys):
    """1e12 client IOPS on NVMe: some 4e7 OSDs at ~23k each, far beyond any rack count."""
    p = _write(tmp_path, {"name": "i", "flavors": [{"name": "a", "vcpus": 1, "ram_gib": 1, "count": 1}],
                          "storage": [{"tier": "ssd", "usable_tib": 1}, {"tier": "nvme", "usable_tib": 1,
                                                                        "iops": 1e12}]})
    assert main(["size", p]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"Error: {p}: storage[1].iops: no plan offers 1e+12 client IOPS on nvme")
    assert len(err.splitlines()) == 1


def test_root_disks_larger_than_the_fastest_tier_are_a_warning(tmp_path):
    """20 VMs x 100 GiB of root disk = 1.95 TiB against 1 TiB of SSD (the only, so the fastest, tier)."""
    drives = [{"name": "ssd4", "tier": "ssd", "bay": "sata", "capacity_tb": 4, "iops": 90000,
               "throughput_mbps": 500, "price_usd": 300, "power_w": 0}]
    cat = load_catalog(write_catalog(tmp_path / "cat", drives=drives))
    wl = workload(flavors=[{"name": "s", "vcpus": 1, "ram_gib": 1, "disk_gib": 100, "count": 20}],
                  storage=[{"tier": "ssd", "usable_tib": 1}])
    bp = size_cloud(wl, cat)
    (w,) = [n for n in bp.notes if n.startswith("warning: the flavors' root disks")]
    assert "1.95 TiB" in w and "storage[0].usable_tib" in w
    small = workload(flavors=[{"name": "s", "vcpus": 1, "ram_gib": 1, "disk_gib": 10, "count": 20}],
                     storage=[{"tier": "ssd", "usable_tib": 1}])
    assert not any(n.startswith("warning") for n in size_cloud(small, cat).notes)
