"""`cloudplan manifests`: Kolla-Ansible files and cephadm specs, checked by the real tools.

ansible-inventory and ansible (ansible-core in the virtualenv) read the
generated files against each supported release's own kolla-ansible data;
yamllint lints them; Ceph's own spec classes (Debian's python3-ceph-common)
parse the cephadm specs.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import stat
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from cloudplan.cli import main
from cloudplan.errors import ManifestError
from cloudplan.inventory import Inventory
from cloudplan.io import load_model
from cloudplan.manifests import load_release, render_all, render_bundle, render_manifests, supported_releases
from cloudplan.manifests.extract import extract
from cloudplan.manifests.release import DATA_DIR
import kolla_fixture as kf

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "inventory.yaml"
RELEASES = ["2025.2", "2026.1", "2026.2"]
HOST_GROUPS = {"control", "network", "compute", "storage", "monitoring", "deployment"}
CEPH_PYTHON = "/usr/bin/python3"


def site(controls=(("c1", "r1"), ("c2", "r2"), ("c3", "r3")), *, drives=None, gateway="10.0.1.1",
         api_cidr="10.0.1.0/24", compute_drives=None, control_plane=None, networks=None):
    """A small inventory: the given controllers, one network, two compute, three storage nodes."""
    net = ipaddress.ip_network(api_cidr)
    hosts = iter(list(net.hosts())[9:])  # .1-.9 stay for the gateway and the VIPs, as the site's first_host does
    nodes = []

    def add(name, role, rack, **extra):
        addr = str(next(hosts))
        nodes.append({"name": name, "role": role, "rack": rack,
                      "bmc": {"address": f"192.0.2.{len(nodes) + 1}", "username": "admin",
                              "password_env": "BMC_PASSWORD"},
                      "addresses": {"api": addr, "storage": addr.replace("10.0.1.", "10.0.2.")}, **extra})

    for name, rack in controls:
        add(name, "control", rack)
    add("n1", "network", "r1")
    add("k1", "compute", "r1", **({"drives": compute_drives} if compute_drives else {}))
    add("k2", "compute", "r2")
    for i, rack in enumerate(("r1", "r2", "r3"), 1):
        add(f"s{i}", "storage", rack, drives=drives or {"ssd": 4, "hdd": 8})
    nets = {"api": {"cidr": api_cidr, "interface": "eth0", "gateway": gateway},
            "storage": {"cidr": "10.0.2.0/24", "interface": "eth2"},
            "external": {"cidr": "198.51.100.0/24", "interface": "eth1"}, **(networks or {})}
    cp = control_plane if control_plane is not None else {
        "registry": {"address": "registry.lab.example:4000", "openstack_tag": "2026.2-ubuntu-noble-1"}}
    return Inventory.model_validate({"name": "lab", "nodes": nodes, "networks": nets, "control_plane": cp})


@pytest.fixture(scope="module")
def example():
    return load_model(Inventory, EXAMPLE)


@pytest.fixture(scope="module", params=RELEASES)
def rendered(request, tmp_path_factory, example):
    """The example site rendered for each release (passwords included)."""
    out = tmp_path_factory.mktemp(f"manifests-{request.param}")
    inv = example.model_copy(deep=True)
    inv.control_plane.registry.openstack_tag = f"{request.param}-ubuntu-noble-20261115"  # pinned per release
    result = render_manifests(inv, out, release=request.param)
    return request.param, out, result


# ---------------------------------------------------------------- shipped data


def test_supported_releases():
    assert supported_releases() == RELEASES
    assert load_release("2026.1").release == "2026.1"


@pytest.mark.parametrize("release", RELEASES)
def test_shipped_data_is_what_extract_gets_from_the_wheel(release):
    extracted = extract(kf.wheel(release))
    shipped = {p.name: p.read_text(encoding="utf-8") for p in (DATA_DIR / release).iterdir()}
    assert extracted == shipped


# ---------------------------------------------------------------- multinode


def test_inventory_membership_by_ansible_inventory(rendered, example, tmp_path):
    release, out, _ = rendered
    inv = kf.inventory_list(out / "multinode", tmp_path)
    controllers = {"ctl01", "ctl02", "ctl03"}
    assert kf.members(inv, "control") == controllers
    assert kf.members(inv, "magnum-api") == controllers
    assert kf.members(inv, "magnum-conductor") == controllers
    assert kf.members(inv, "compute") == {n.name for n in example.nodes if n.role.value == "compute"}
    assert kf.members(inv, "collectd") == kf.members(inv, "compute")
    assert kf.members(inv, "loadbalancer") == {"net01", "net02"}
    assert kf.members(inv, "storage") == {"stor01", "stor02", "stor03"}
    assert kf.members(inv, "deployment") == {"localhost"}
    hostvars = inv["_meta"]["hostvars"]
    for node in example.nodes:
        assert hostvars[node.name]["ansible_host"] == node.addresses["api"]


def test_service_groups_equal_the_release_sample(rendered, tmp_path):
    release, out, _ = rendered
    ours = kf.inventory_list(out / "multinode", tmp_path)
    sample = kf.inventory_list(kf.share(release) / "ansible" / "inventory" / "multinode", tmp_path)
    skip = HOST_GROUPS | {"_meta", "all", "ungrouped"}
    assert set(ours) == set(sample)
    for group in set(sample) - skip:
        assert ours[group].get("children") == sample[group].get("children"), group


def test_controllers_on_three_racks_are_said_at_the_top(rendered, example):
    _, out, result = rendered
    head = (out / "multinode").read_text().split("\n[control]\n")[0]
    racks = {n.name: n.rack for n in example.nodes}
    for name in ("ctl01", "ctl02", "ctl03"):
        assert f"{name} on rack {racks[name]}" in head
    assert len({racks[n] for n in ("ctl01", "ctl02", "ctl03")}) == 3
    assert not any("share racks" in w for w in result.warnings)


def test_four_controllers_pick_one_per_rack():
    inv = site(controls=(("a1", "r1"), ("a2", "r1"), ("b1", "r2"), ("c1", "r3")))
    files, warnings = render_bundle(inv)
    control = files["multinode"].split("[control]\n")[1].split("\n\n")[0].splitlines()
    assert [line.split()[0] for line in control] == ["a1", "b1", "c1"]
    assert "#   a2 on rack r1" in files["multinode"].split("\n[control]\n")[0]  # noted as left out
    assert any("a2" in w and "not in Kolla-Ansible's control group" in w for w in warnings)


def test_controllers_sharing_racks_warn():
    inv = site(controls=(("a1", "r1"), ("a2", "r1"), ("b1", "r2")))
    files, warnings = render_bundle(inv)
    assert any("share racks" in w for w in warnings)
    assert "WARNING: sharing racks" in files["multinode"]


def test_two_controllers_are_refused():
    inv = site(controls=(("a1", "r1"), ("b1", "r2")))
    with pytest.raises(ManifestError, match=r"2 control node\(s\) \(a1, b1\).*3 controllers"):
        render_all(inv)


# ---------------------------------------------------------------- globals.yml


def test_globals_resolve_with_the_release_group_vars(rendered, tmp_path):
    release, out, _ = rendered
    got = kf.debug(release, out, "{'tag': openstack_tag, 'keepalived': enable_keepalived | bool, "
                                 "'magnum': enable_magnum | bool, 'magnum_api': groups['magnum-api'], "
                                 "'vip': kolla_internal_vip_address, "
                                 "'backends': cinder_ceph_backends | selectattr('enabled') | map(attribute='pool') | list}",
                   tmp_path)
    assert got["tag"].startswith(f"{release}-ubuntu-")
    assert got["keepalived"] is True and got["magnum"] is True
    assert sorted(got["magnum_api"]) == ["ctl01", "ctl02", "ctl03"]
    assert got["backends"] == ["volumes-nvme", "volumes-ssd", "volumes-hdd"]
    glob = yaml.safe_load((out / "globals.yml").read_text())
    assert got["vip"] == glob["kolla_internal_vip_address"]


# Services the recipe runs, and the infrastructure Kolla-Ansible runs for them.
IN_SCOPE = {"cinder", "cinder_backup", "glance", "haproxy", "heat", "horizon", "horizon_heat", "horizon_magnum",
            "octavia", "barbican", "horizon_octavia", "horizon_barbican", "valkey", "mariabackup",
            "keepalived", "keystone", "loadbalancer", "magnum", "mariadb", "memcached", "neutron", "nova",
            "nova_libvirt_container", "nova_ssh", "openstack_core", "openvswitch", "placement", "proxysql",
            "rabbitmq", "fluentd", "container_healthchecks"}


# Flags computed from a role's defaults (octavia_provider_drivers): they follow enable_octavia.
ROLE_DERIVED = {"enable_octavia_jobboard", "enable_octavia_driver_agent"}


def _enabled(release, out, tmp):
    """Every enable_* flag of the release's group_vars that resolves true."""
    names = sorted({line.split(":")[0] for f in (kf.share(release) / "ansible" / "group_vars").rglob("*.yml")
                    for line in f.read_text().splitlines() if line.startswith("enable_")} - ROLE_DERIVED)
    quoted = ", ".join(repr(n) for n in names)
    got = kf.debug(release, out, f"dict([{quoted}] | zip(query('vars', {quoted}) | map('bool')))", tmp)
    return {k.removeprefix("enable_") for k, v in got.items() if v}


def _in_scope(flag):
    # Exporters only run with Prometheus, policy files only with their service.
    return flag in IN_SCOPE or flag.startswith("prometheus_") and flag.endswith("_exporter") \
        or flag.endswith("_horizon_policy_file")


def test_nothing_outside_the_recipe_is_enabled(rendered, tmp_path):
    release, out, _ = rendered
    enabled = _enabled(release, out, tmp_path)
    assert {"magnum", "cinder", "keepalived", "haproxy", "nova", "neutron", "keystone", "glance"} <= enabled
    assert {"octavia", "barbican", "valkey", "mariabackup"} <= enabled
    assert "prometheus" not in enabled
    assert sorted(f for f in enabled if not _in_scope(f)) == []


def test_overrides_enable_more_and_merge_on_top(tmp_path, example):
    overrides = tmp_path / "overrides.yml"
    overrides.write_text("enable_designate: 'yes'\nkolla_base_distro: rocky\nkolla_internal_vip_address: 10.20.0.100\n")
    out = tmp_path / "out"
    render_manifests(example, out, overrides=overrides)
    glob = yaml.safe_load((out / "globals.yml").read_text())
    assert glob["kolla_base_distro"] == "rocky"
    assert glob["enable_designate"] == "yes"
    assert glob["kolla_internal_vip_address"] == "10.20.0.100"
    assert list(glob).count("kolla_base_distro") == 1
    assert kf.debug("2026.2", out, "enable_designate | bool", tmp_path) is True


def test_unknown_override_key_is_named(example):
    with pytest.raises(ManifestError, match=r"'enable_magnun' is not a variable of Kolla-Ansible .*'enable_magnum'"):
        render_all(example, overrides={"enable_magnun": "yes"})


def test_every_written_key_is_a_release_variable(rendered):
    release, out, _ = rendered
    keys = set(yaml.safe_load((out / "globals.yml").read_text()))
    assert keys <= load_release(release).variables
    assert "storage_interface" not in keys  # not a variable of these releases


def test_vips_are_the_lowest_free_reserved_addresses():
    """Below the first node address (.10) the site keeps .1-.9: the gateway .1, then the VIPs."""
    inv = site()
    glob = yaml.safe_load(render_all(inv)["globals.yml"])
    assert glob["kolla_internal_vip_address"] == "10.0.1.2"
    assert glob["kolla_external_vip_address"] == "10.0.1.3"
    used = {a for n in inv.nodes for a in n.addresses.values()}
    assert not {glob["kolla_internal_vip_address"], glob["kolla_external_vip_address"]} & used


def test_external_vip_on_the_public_network_when_the_site_has_one():
    inv = site(networks={"public": {"cidr": "192.0.2.0/24", "interface": "eth3", "gateway": "192.0.2.1"}},
               control_plane={"test_images": True, "external_vip": "192.0.2.10"})
    glob = yaml.safe_load(render_all(inv)["globals.yml"])
    assert glob["kolla_external_vip_address"] == "192.0.2.10"
    assert glob["kolla_external_vip_interface"] == "eth3"
    assert glob["kolla_internal_vip_address"] == "10.0.1.2"


def test_one_address_for_both_vips_is_refused():
    cp = {"test_images": True, "internal_vip": "10.0.1.2", "external_vip": "10.0.1.2"}
    with pytest.raises(ManifestError, match=r"control_plane.external_vip 10.0.1.2 is already taken"):
        render_all(site(control_plane=cp))


def test_no_free_reserved_address_is_an_error():
    inv = site(api_cidr="10.0.1.0/24")
    for i, n in enumerate(inv.nodes):  # nodes from .2 up: nothing reserved is left
        n.addresses["api"] = f"10.0.1.{i + 2}"
    with pytest.raises(ManifestError, match=r"control_plane.internal_vip: no free address .* below the first node"):
        render_all(inv)


def test_registry_is_required_or_test_images_chosen(example):
    with pytest.raises(ManifestError, match=r"control_plane.registry is not set.*test_images: true"):
        render_all(site(control_plane={}))
    glob = yaml.safe_load(render_all(site(control_plane={"test_images": True}))["globals.yml"])
    assert "docker_registry" not in glob and "openstack_tag" not in glob
    glob = yaml.safe_load(render_all(example)["globals.yml"])
    reg = example.control_plane.registry
    assert (glob["docker_registry"], glob["docker_namespace"], glob["openstack_tag"]) == \
        (reg.address, reg.namespace, reg.openstack_tag)


def test_a_tag_of_another_release_is_warned_about():
    _, warnings = render_bundle(site(), "2026.2")
    assert not any("openstack_tag" in w for w in warnings)
    _, warnings = render_bundle(site(), "2025.2")
    assert any("openstack_tag '2026.2-ubuntu-noble-1' does not name OpenStack 2025.2" in w for w in warnings)


def test_registry_password_goes_to_passwords_yml_only(tmp_path, monkeypatch):
    inv = site()
    inv.control_plane.registry.password_env = "LAB_REGISTRY_PASSWORD"
    with pytest.raises(ManifestError, match="LAB_REGISTRY_PASSWORD is not set"):
        render_manifests(inv, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    monkeypatch.setenv("LAB_REGISTRY_PASSWORD", "s3cret-registry")
    render_manifests(inv, tmp_path / "b")
    assert yaml.safe_load((tmp_path / "b" / "passwords.yml").read_text())["docker_registry_password"] == \
        "s3cret-registry"
    assert not any("s3cret-registry" in p.read_text() for p in (tmp_path / "b").rglob("*")
                   if p.is_file() and p.name != "passwords.yml")


def test_hyperconverged_hosts_keep_their_osds_from_nova():
    """k1 carries 4 SSD OSDs: sizing kept 4 x 8 GiB and 4 x 1 core (both threads of each: 8 host CPUs)
    for them, plus the host's 512 MiB."""
    files = render_all(site(compute_drives={"ssd": 4}, drives={"ssd": 4}))
    import configparser
    per_host = configparser.ConfigParser()
    per_host.read_string(files["config/nova/k1/nova.conf"])
    assert per_host["DEFAULT"]["reserved_host_memory_mb"] == str(512 + 4 * 8 * 1024)
    assert per_host["DEFAULT"]["reserved_host_cpus"] == "8"
    assert "config/nova/k2/nova.conf" not in files  # no OSDs on k2
    common = configparser.ConfigParser()
    common.read_string(files["config/nova.conf"])
    assert dict(common["DEFAULT"]) == {"cpu_allocation_ratio": "4", "ram_allocation_ratio": "1",
                                       "disk_allocation_ratio": "1", "reserved_host_memory_mb": "512",
                                       "reserved_host_cpus": "0"}
    # k1's drives are OSDs: it is in the cephadm host specs.
    assert "hostname: k1" in files["ceph/hosts.yaml"]


def test_the_blueprint_policy_sets_ratios_and_reservations():
    bp = {"name": "acme", "workload": {"policy": {"cpu_allocation_ratio": 2.0, "reserved_host_memory_mb": 4096,
                                                  "osd_ram_gib": {"ssd": 5.0}}}}
    files = render_all(site(compute_drives={"ssd": 2}, drives={"ssd": 4}), blueprint=bp)
    assert "cpu_allocation_ratio = 2\n" in files["config/nova.conf"]
    assert f"reserved_host_memory_mb = {4096 + 2 * 5 * 1024}" in files["config/nova/k1/nova.conf"]


def test_magnum_trust_is_an_opt_in_and_octavia_barbican_run():
    off = yaml.safe_load(render_all(site())["globals.yml"])
    assert off["enable_cluster_user_trust"] == "no"
    assert off["enable_octavia"] == off["enable_barbican"] == off["enable_valkey"] == off["enable_mariabackup"] == "yes"
    inv = site()
    inv.control_plane.magnum.cluster_user_trust = True
    assert yaml.safe_load(render_all(inv)["globals.yml"])["enable_cluster_user_trust"] == "yes"


def test_migration_network_and_ssh_access(example):
    glob = yaml.safe_load(render_all(site(networks={"migration": {"cidr": "10.0.3.0/24",
                                                                  "interface": "eth4"}}))["globals.yml"])
    assert glob["migration_interface"] == "eth4"
    assert "migration_interface" not in yaml.safe_load(render_all(site())["globals.yml"])
    line = next(ln for ln in render_all(example)["multinode"].splitlines() if ln.startswith("cmp01 "))
    assert f"ansible_user={example.provisioning.ssh_user}" in line
    assert f"ansible_ssh_private_key_file={example.provisioning.ssh_private_key_file}" in line


def test_ceph_monitors_spread_over_racks(example):
    mons = yaml.safe_load_all(render_all(example)["ceph/services.yaml"])
    hosts = next(d for d in mons if d["service_type"] == "mon")["placement"]["hosts"]
    racks = {n.name: n.rack for n in example.nodes}
    assert len(hosts) == 3 and len({racks[h] for h in hosts}) == 3


def test_kolla_config_script_puts_each_keyring_where_kolla_looks(example):
    script = render_all(example)["ceph/kolla-config.sh"]
    for path in ("glance/ceph.client.glance.keyring", "cinder/cinder-volume/ceph.client.cinder.keyring",
                 "cinder/cinder-backup/ceph.client.cinder-backup.keyring", "nova/ceph.client.cinder.keyring",
                 "glance/ceph.conf", "cinder/ceph.conf", "nova/ceph.conf"):
        assert f'"$config/{path}"' in script, path


@pytest.mark.parametrize("vip, message", [
    ("10.9.9.9", "outside the 'api' network 10.0.1.0/24"),
    ("10.0.1.10", "already taken"),
    ("10.0.1.255", "already taken"),
    ("not-an-ip", "is not an IP address"),
])
def test_bad_vip_is_refused(vip, message):
    with pytest.raises(ManifestError, match=message):
        render_all(site(), overrides={"kolla_internal_vip_address": vip})


def test_interfaces_come_from_the_site(example):
    glob = yaml.safe_load(render_all(example)["globals.yml"])
    assert glob["network_interface"] == example.networks["api"].interface
    assert glob["neutron_external_interface"] == example.networks["external"].interface


# ---------------------------------------------------------------- passwords.yml


def test_passwords_cover_the_release_with_the_right_kinds(rendered):
    release, out, _ = rendered
    path = out / "passwords.yml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = yaml.safe_load(path.read_text())
    kinds = load_release(release).password_kinds
    assert set(values) == set(kinds)
    for key, kind in kinds.items():
        v = values[key]
        if kind == "uuid":
            assert uuid.UUID(v).version == 4
        elif kind == "ssh_key":
            private = serialization.load_pem_private_key(v["private_key"].encode(), None)
            public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                       serialization.PublicFormat.OpenSSH).decode()
            assert public == v["public_key"]
        elif kind == "fernet":
            assert len(base64.urlsafe_b64decode(v)) == 32
        elif kind == "blank":
            assert v is None
        else:
            assert isinstance(v, str) and len(v) >= 20, key
    plain = [values[k] for k, kind in kinds.items() if kind == "password"]
    assert len(set(plain)) == len(plain)


def test_passwords_are_kept_and_only_missing_keys_added(tmp_path, example):
    out = tmp_path / "out"
    render_manifests(example, out)
    path = out / "passwords.yml"
    first = yaml.safe_load(path.read_text())
    edited = dict(first)
    del edited["database_password"]
    edited["keystone_admin_password"] = "chosen by the operator: with spaces & symbols \\ \""
    edited["site_specific_secret"] = "kept"
    path.write_text(yaml.safe_dump(edited))
    result = render_manifests(example, out)
    second = yaml.safe_load(path.read_text())
    assert result.passwords_added == 1
    assert second["database_password"] and second["database_password"] != first["database_password"]
    assert second["keystone_admin_password"] == edited["keystone_admin_password"]
    assert second["site_specific_secret"] == "kept"
    assert {k: v for k, v in second.items() if k not in ("database_password", "keystone_admin_password",
                                                         "site_specific_secret")} == \
        {k: v for k, v in first.items() if k not in ("database_password", "keystone_admin_password")}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_render_all_is_pure_and_excludes_passwords(example, tmp_path):
    a, b = render_all(example, "2025.2"), render_all(example, "2026.1")
    assert "passwords.yml" not in a and "passwords.yml" not in b
    assert a == render_all(example, "2025.2")
    assert set(a) == set(b)
    assert a["multinode"] != b["multinode"] and "[zun:children]" in a["multinode"]
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- lint, ceph


def test_yamllint_passes(rendered):
    _, out, _ = rendered
    files = [str(p) for p in sorted(out.rglob("*.y*ml"))]
    assert len(files) >= 5
    proc = subprocess.run([kf.tool("yamllint", "pip install yamllint"), "-s", *files],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout


def test_pools_script_parses(rendered):
    _, out, _ = rendered
    script = out / "ceph" / "pools.sh"
    assert os.access(script, os.X_OK)
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    text = script.read_text()
    for tier in ("nvme", "ssd", "hdd"):
        assert f"ceph osd pool create volumes-{tier}" in text
        assert f"default rack {tier}" in text


def _ceph(code: str, *args: str) -> str:
    if not Path(CEPH_PYTHON).exists():
        pytest.fail(f"{CEPH_PYTHON} is missing: Ceph's spec classes come from Debian's python3-ceph-common")
    probe = subprocess.run([CEPH_PYTHON, "-c", "import ceph.deployment.drive_group"], capture_output=True)
    if probe.returncode != 0:
        pytest.fail("Ceph's spec classes are missing: apt-get install python3-ceph-common")
    proc = subprocess.run([CEPH_PYTHON, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


PARSE_SPECS = """
import json, sys, yaml
from ceph.deployment.service_spec import ServiceSpec
from ceph.deployment.hostspec import HostSpec
out = []
for f in sys.argv[1:]:
    for doc in yaml.safe_load_all(open(f)):
        if doc["service_type"] == "host":
            h = HostSpec.from_json(doc)
            out.append({"host": h.hostname, "addr": h.addr, "rack": h.location["rack"]})
        else:
            s = ServiceSpec.from_json(doc)
            s.validate()
            out.append({"service": s.service_name(), "class": getattr(s, "crush_device_class", None)})
print(json.dumps(out))
"""


def test_cephadm_specs_parse_with_ceph_own_classes(rendered, example):
    _, out, _ = rendered
    ceph = out / "ceph"
    files = [ceph / "hosts.yaml", ceph / "services.yaml", ceph / "osd-specs.yaml", ceph / "osd-specs-after-nvme.yaml"]
    parsed = json.loads(_ceph(PARSE_SPECS, *map(str, files)))
    hosts = {p["host"]: p for p in parsed if "host" in p}
    assert set(hosts) == {"stor01", "stor02", "stor03"}
    assert {p["rack"] for p in hosts.values()} == {"r1", "r2", "r3"}
    assert hosts["stor01"]["addr"] == example.node("stor01").addresses["storage"]
    osds = {p["service"]: p["class"] for p in parsed if p.get("service", "").startswith("osd.")}
    assert len(osds) == 9
    assert osds["osd.nvme-stor01"] == "nvme" and osds["osd.ssd-stor02"] == "ssd" and osds["osd.hdd-stor03"] == "hdd"


SELECT = """
import json, sys, yaml
from ceph.deployment.drive_group import DriveGroupSpec
from ceph.deployment.drive_selection.selector import DriveSelection
from ceph.deployment.inventory import Device
specs = {d["service_id"]: DriveGroupSpec.from_json(d) for f in sys.argv[1:] for d in yaml.safe_load_all(open(f))}
def dev(path, rot, spec=None):
    lvs = [{"osdspec_affinity": spec}] if spec else None
    return Device(path, sys_api={"rotational": str(rot), "size": 4e12, "vendor": "x", "model": "m"},
                  available=spec is None, ceph_device=bool(spec), lvs=lvs)
boot = Device("/dev/sda", sys_api={"rotational": "0", "size": 4e11}, available=False, rejected_reasons=["has partitions"])
def host(nvme_spec=None):
    return [boot] + [dev(f"/dev/nvme{i}n1", 0, nvme_spec) for i in range(2)] + \\
        [dev(f"/dev/sd{c}", 0) for c in "bcdefg"] + [dev(f"/dev/sd{c}", 1) for c in "hijklmnopqrs"]
pick = lambda sid, disks: [d.path for d in DriveSelection(specs[sid], disks).data_devices()]
print(json.dumps({"nvme": pick("nvme-stor01", host()), "hdd": pick("hdd-stor01", host()),
                  "ssd": pick("ssd-stor01", host("nvme-stor01"))}))
"""


def test_drive_selection_gives_each_tier_its_drives(rendered):
    """Ceph's own drive selection, on a host like stor01 (a boot SSD, 2 NVMe, 6 SSD, 12 HDD)."""
    _, out, _ = rendered
    ceph = out / "ceph"
    got = json.loads(_ceph(SELECT, str(ceph / "osd-specs.yaml"), str(ceph / "osd-specs-after-nvme.yaml")))
    assert got["nvme"] == ["/dev/nvme0n1", "/dev/nvme1n1"]
    assert got["hdd"] == [f"/dev/sd{c}" for c in "hijklmnopqrs"]
    # Once the NVMe OSDs exist, the SSD spec takes the six SSDs and nothing else.
    assert got["ssd"] == [f"/dev/sd{c}" for c in "bcdefg"]


def test_single_solid_state_tier_uses_rotational_filters():
    files = render_all(site(drives={"ssd": 4, "hdd": 8}))
    assert "osd-specs-after-nvme.yaml" not in "".join(files)
    specs = list(yaml.safe_load_all(files["ceph/osd-specs.yaml"]))
    ssd = next(s for s in specs if s["service_id"] == "ssd-s1")
    assert ssd["spec"]["data_devices"] == {"rotational": False, "limit": 4}


# ---------------------------------------------------------------- blueprint, CLI


def test_blueprint_names_the_cloud_and_its_tiers_must_have_drives(tmp_path):
    inv = site(drives={"ssd": 4, "hdd": 8})
    files = render_all(inv, blueprint={"name": "acme", "storage": [{"tier": "ssd"}, {"tier": "hdd"}]})
    assert "acme" in files["multinode"].splitlines()[0]
    with pytest.raises(ManifestError, match="blueprint has storage tier.*nvme"):
        render_all(inv, blueprint={"name": "acme", "storage": [{"tier": "nvme", "usable_tib": 10}]})


def test_a_sized_blueprint_decides_the_pools(tmp_path, capsys):
    """examples/small.yaml plans one tier (ssd): an inventory with SSD and HDD drives gets
    one pool, for SSD, and a warning that its HDDs are left out."""
    bp = tmp_path / "bp.yaml"
    assert main(["size", str(ROOT / "examples" / "small.yaml"), "-o", str(bp)]) == 0
    capsys.readouterr()
    files, warnings = render_bundle(site(drives={"ssd": 4, "hdd": 8}), blueprint=bp)
    pools = [ln.split()[4] for ln in files["ceph/pools.sh"].splitlines() if ln.startswith("ceph osd pool create")]
    assert [p for p in pools if p.startswith("volumes-")] == ["volumes-ssd"], pools
    assert any("hdd drives the blueprint does not plan for" in w for w in warnings), warnings
    with pytest.raises(ManifestError, match="blueprint has storage tier.*ssd"):
        render_all(site(drives={"hdd": 8}), blueprint=bp)


def _cli(capsys, *args):
    rc = main(["manifests", *map(str, args)])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_cli_writes_everything_and_never_prints_a_secret(tmp_path, capsys):
    out = tmp_path / "deploy"
    rc, stdout, stderr = _cli(capsys, EXAMPLE, "-o", out, "--release", "2025.2")
    assert rc == 0, stderr
    assert str(out / "passwords.yml") in stdout and "OpenStack 2025.2" in stdout
    secrets = yaml.safe_load((out / "passwords.yml").read_text())
    printed = stdout + stderr
    for v in secrets.values():
        for s in (v.values() if isinstance(v, dict) else [v]):
            assert not s or s not in printed


@pytest.mark.parametrize("case, message", [
    ("two-controllers", "inventory.yaml: nodes[].role: the inventory has 2 control node(s)"),
    ("release", "release '2024.1' is not supported"),
    ("vip", "ov.yml: kolla_internal_vip_address 10.9.9.9 is outside the 'api' network"),
    ("unknown-key", "'enable_everything' is not a variable"),
    ("no-registry", "inventory.yaml: control_plane.registry is not set"),
    ("site-vip", "inventory.yaml: control_plane.internal_vip 10.9.9.9 is outside the 'api' network"),
])
def test_cli_bad_input_gives_one_error_line(tmp_path, capsys, case, message):
    cp = {"no-registry": {}, "site-vip": {"test_images": True, "internal_vip": "10.9.9.9"}}.get(case)
    inv = site(controls=(("a1", "r1"), ("b1", "r2"))) if case == "two-controllers" else site(control_plane=cp)
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(inv.model_dump(mode="json", exclude_none=True)))
    args = [path, "-o", tmp_path / "out"]
    if case == "release":
        args += ["--release", "2024.1"]
    if case in ("vip", "unknown-key"):
        ov = tmp_path / "ov.yml"
        ov.write_text("kolla_internal_vip_address: 10.9.9.9\n" if case == "vip" else "enable_everything: yes\n")
        args += ["--overrides", ov]
    rc, stdout, stderr = _cli(capsys, *args)
    assert rc == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], stderr
    assert not (tmp_path / "out" / "passwords.yml").exists()


def test_site_control_plane_reaches_the_manifests_through_layout(tmp_path, capsys):
    """examples/site.yaml -> `cloudplan layout` -> inventory -> manifests: the registry and FQDN arrive."""
    bp, inv = tmp_path / "bp.yaml", tmp_path / "inv.yaml"
    assert main(["size", str(ROOT / "examples" / "small.yaml"), "-o", str(bp)]) == 0
    assert main(["layout", str(bp), "--site", str(ROOT / "examples" / "site.yaml"), "-o", str(inv)]) == 0
    capsys.readouterr()
    site_cp = yaml.safe_load((ROOT / "examples" / "site.yaml").read_text())["control_plane"]
    glob = yaml.safe_load(render_all(inv, blueprint=bp)["globals.yml"])
    assert glob["docker_registry"] == site_cp["registry"]["address"]
    assert glob["kolla_external_fqdn"] == site_cp["external_fqdn"]
    # The site's first_host (10) leaves .2-.9 free: both VIPs come from there.
    assert glob["kolla_internal_vip_address"] == "10.20.0.2" and glob["kolla_external_vip_address"] == "10.20.0.3"


def test_no_password_line_looks_empty_to_kolla(rendered):
    """Kolla's precheck greps for lines ending in `key:` (its regex) and only forgives the SSH key dicts;
    long values are split, but start on their key's line, and a blank value is `null`."""
    import re
    _, out, _ = rendered
    text = (out / "passwords.yml").read_text()
    empty = [ln for ln in text.splitlines() if re.match(r"^[^#].*:\s*$", ln) and "ssh_key" not in ln]
    assert empty == []
    assert "docker_registry_password: null" in text


def test_converged_edge_hosts_are_in_the_control_and_compute_groups(tmp_path):
    """A converged edge: no control-role node; three compute nodes carry ``also: [control]``.
    ansible-inventory puts them in both Kolla-Ansible groups."""
    inv = site(controls=())
    doc = inv.model_dump(mode="json")
    extra = dict(doc["nodes"][1], name="k3", rack="r3",
                 addresses={"api": "10.0.1.60", "storage": "10.0.2.60"}, bmc=dict(doc["nodes"][1]["bmc"],
                                                                                address="192.0.2.60"))
    doc["nodes"].append(extra)
    for n in doc["nodes"]:
        if n["role"] == "compute":
            n["also"] = ["control"]
    inv = Inventory.model_validate(doc)
    out = tmp_path / "edge"
    render_manifests(inv, out, release=RELEASES[-1])
    got = kf.inventory_list(out / "multinode", tmp_path)
    assert kf.members(got, "control") == {"k1", "k2", "k3"} == kf.members(got, "compute")
