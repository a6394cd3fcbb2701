"""The installed OS's seed: network-config v2 and user-data, checked by the real consumers.

network-config goes through Debian 12's own cloud-init (its v2 parser and its
netplan renderer, the code that runs on a node's first boot) and then the real
``netplan generate``, whose systemd-networkd files are read back; user-data
goes through ``cloud-init schema``. Both tools come from Debian packages
(``cloud-init``, ``netplan.io``) that ``make test`` installs.
"""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cloudplan.errors import SpecError
from cloudplan.inventory import Inventory
from cloudplan.io import validate
from cloudplan.provision.deploy import build_seed_image, render_network_config, render_seed

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's cloud-init lives in the system Python
NODE_NICS = {"ens1f0": "52:54:00:00:01:01", "ens1f1": "52:54:00:00:01:02",
             "ens2f0": "52:54:00:00:02:01", "ens2f1": "52:54:00:00:02:02"}


def _inventory(**changes) -> Inventory:
    data = {
        "name": "t",
        "networks": {
            "provisioning": {"cidr": "10.10.0.0/24", "interface": "eno1"},
            "api": {"cidr": "10.20.0.0/24", "interface": "bond0.20", "gateway": "10.20.0.1", "vlan": 20},
            "storage": {"cidr": "10.40.0.0/24", "interface": "bond0.40", "vlan": 40, "mtu": 9000,
                        "routes": [{"to": "10.41.0.0/24", "via": "10.40.0.1"}]},
            "external": {"cidr": "203.0.113.0/24", "interface": "bond1", "gateway": "203.0.113.1",
                         "carried_by": ["network"]},
        },
        "bonds": {"bond0": {"members": ["ens1f0", "ens1f1"], "mode": "802.3ad", "mtu": 9000},
                  "bond1": {"members": ["ens2f0", "ens2f1"], "mode": "active-backup"}},
        "dns_servers": ["10.20.0.2"], "dns_search": ["dc1.example.net"], "ntp_servers": ["10.20.0.2"],
        "nodes": [{"name": "net01", "role": "network", "rack": "r1", "mac": "52:54:00:00:00:01", "nics": NODE_NICS,
                   "bmc": {"address": "10.30.0.11", "username": "admin", "password_env": "X"},
                   "addresses": {"provisioning": "10.10.0.11", "api": "10.20.0.11", "storage": "10.40.0.11"}},
                  {"name": "cmp01", "role": "compute", "rack": "r1", "mac": "52:54:00:00:00:02",
                   "bmc": {"address": "10.30.0.12", "username": "admin", "password_env": "X"},
                   "addresses": {"provisioning": "10.10.0.12", "api": "10.20.0.12", "storage": "10.40.0.12"}}],
    }
    for path, value in changes.items():
        target = data
        keys = path.split("__")
        for k in keys[:-1]:
            target = target[int(k)] if isinstance(target, list) else target[k]
        target[keys[-1]] = value
    return validate(Inventory, data)


def _tool(name: str, package: str) -> str:
    path = shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        pytest.fail(f"{name} is missing: apt-get install {package} (make test installs it as root)")
    return path


# Runs in Debian's Python: cloud-init's own v2 parser, then its netplan renderer, as on first boot.
_CLOUD_INIT_RENDER = """
import sys, yaml
from cloudinit.net import netplan, network_state
state = network_state.parse_net_config_data(yaml.safe_load(open(sys.argv[1])), skip_broken=False)
netplan.Renderer({"netplan_path": "etc/netplan/50-cloud-init.yaml", "postcmds": False}).render_network_state(
    state, target=sys.argv[2])
"""


def _networkd(network_config: str, tmp: Path) -> dict[str, configparser.ConfigParser]:
    """cloud-init -> netplan -> systemd-networkd files, parsed by name."""
    _tool("cloud-init", "cloud-init")
    netplan = _tool("netplan", "netplan.io")
    src = tmp / "network-config"
    src.write_text(network_config)
    root = tmp / "root"
    proc = subprocess.run([SYSTEM_PYTHON, "-c", _CLOUD_INIT_RENDER, str(src), str(root)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (root / "etc/netplan/50-cloud-init.yaml").chmod(0o600)
    proc = subprocess.run([netplan, "generate", "--root-dir", str(root)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = {}
    for f in (root / "run/systemd/network").iterdir():
        cp = configparser.ConfigParser(strict=False, interpolation=None)
        cp.optionxform = str
        # networkd repeats keys (DNS=, Address=): keep the last, and read repeated ones from the raw text.
        cp.read_string(f.read_text())
        out[f.name.removeprefix("10-netplan-")] = (cp, f.read_text())
    return out


def test_bonds_vlans_mtu_and_routes_through_cloud_init_and_netplan(tmp_path):
    inv = _inventory()
    files = _networkd(render_network_config(inv, inv.nodes[0]), tmp_path)
    bond0, _ = files["bond0.netdev"]
    assert bond0["Bond"]["Mode"] == "802.3ad" and bond0["Bond"]["LACPTransmitRate"] == "fast"
    assert bond0["NetDev"]["MTUBytes"] == "9000"
    assert files["bond1.netdev"][0]["Bond"]["Mode"] == "active-backup"
    api, api_text = files["bond0.20.network"]
    assert "Address=10.20.0.11/24" in api_text and "Gateway=10.20.0.1" in api_text and "DNS=10.20.0.2" in api_text
    assert files["bond0.20.netdev"][0]["VLAN"]["Id"] == "20"
    storage_text = files["bond0.40.network"][1]
    assert "Address=10.40.0.11/24" in storage_text and "Destination=10.41.0.0/24" in storage_text
    assert "Gateway" not in storage_text.replace("Gateway=10.40.0.1", "")  # only the API network has the default
    # The provisioning NIC keeps a static address (no DHCP after the run) and is found by its MAC.
    eno1_link, eno1_text = files["eno1.link"], files["eno1.network"][1]
    assert eno1_link[0]["Match"]["PermanentMACAddress"] == "52:54:00:00:00:01" and "Address=10.10.0.11/24" in eno1_text
    assert "DHCP=" not in eno1_text or "DHCP=no" in eno1_text
    # Bond members are matched by MAC and carry the bond's MTU.
    assert files["ens1f0.link"][0]["Match"]["PermanentMACAddress"] == NODE_NICS["ens1f0"]
    # bond1 (external) is up on the network node with no address, for Neutron's bridge.
    assert "Address=" not in files["bond1.network"][1]


def test_external_bond_only_on_the_roles_that_carry_it(tmp_path):
    inv = _inventory()
    doc = yaml.safe_load(render_network_config(inv, inv.nodes[1]))
    assert set(doc["bonds"]) == {"bond0"} and set(doc["vlans"]) == {"bond0.20", "bond0.40"}
    # No MACs known for the compute node's bond members: matched by name.
    assert "match" not in doc["ethernets"]["ens1f0"] and doc["ethernets"]["eno1"]["match"]["macaddress"]


@pytest.mark.parametrize("changes, field, message", [
    ({"networks__api__vlan": 21}, "networks.api.interface", "VLAN 20 but the network says vlan 21"),
    ({"nodes__0__addresses__api": "10.99.0.11"}, "addresses.api", "outside api's 10.20.0.0/24"),
    ({"networks__storage__interface": None}, "networks.storage.interface", "names no interface"),
    ({"networks__storage__mtu": 9000, "bonds__bond0__mtu": 1500}, "networks", "MTU 9000 above its link bond0"),
    ({"bonds__bond0__members": ["bond1"]}, "bonds.bond0.members", "lists bond 'bond1'"),
])
def test_inconsistent_networks_name_the_field(changes, field, message):
    inv = _inventory(**changes)
    with pytest.raises(SpecError, match=message) as e:
        render_network_config(inv, inv.nodes[0])
    assert field in str(e.value)


@pytest.mark.parametrize("user", ["root", "cloudplan"])
def test_user_data_passes_cloud_init_schema(tmp_path, user):
    inv = _inventory()
    seed = render_seed(inv, inv.nodes[0], instance_id="net01-deploy-1", ssh_user=user,
                       ssh_public_keys=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0000 deploy"],
                       phone_home_url="http://10.10.0.1:8080/phone-home/net01/tok")
    ud = yaml.safe_load(seed.user_data)
    if user == "root":
        assert ud["disable_root"] is False and ud["ssh_authorized_keys"]
    else:
        assert ud["disable_root"] is True and ud["users"][0]["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert ud["ntp"]["servers"] == ["10.20.0.2"] and ud["phone_home"]["url"].endswith("/net01/tok")
    (tmp_path / "user-data").write_text(seed.user_data)
    proc = subprocess.run([_tool("cloud-init", "cloud-init"), "schema", "-c", str(tmp_path / "user-data")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Valid cloud-config" in proc.stdout, proc.stdout + proc.stderr
    assert "DEPRECAT" not in proc.stdout + proc.stderr
    assert yaml.safe_load(seed.meta_data) == {"instance-id": "net01-deploy-1", "local-hostname": "net01"}


def test_seed_image_is_a_cidata_vfat(tmp_path):
    inv = _inventory()
    seed = render_seed(inv, inv.nodes[0], instance_id="i-1", ssh_user="root", ssh_public_keys=["k"],
                       phone_home_url=None)
    img = build_seed_image(seed, tmp_path / "seed.img", node="net01")
    blkid = subprocess.run(["blkid", "-o", "export", str(img)], capture_output=True, text=True, timeout=30)
    fields = dict(line.split("=", 1) for line in blkid.stdout.split())
    assert fields["TYPE"] == "vfat" and fields["LABEL"] == "CIDATA"
    listing = subprocess.run([_tool("mdir", "mtools"), "-b", "-i", str(img), "::"], capture_output=True, text=True,
                             timeout=30).stdout
    assert {Path(x).name for x in listing.split()} == {"user-data", "meta-data", "network-config"}
    got = subprocess.run([_tool("mtype", "mtools"), "-i", str(img), "::network-config"], capture_output=True,
                         text=True, timeout=30).stdout
    assert json.loads(json.dumps(yaml.safe_load(got))) == yaml.safe_load(seed.network_config)
