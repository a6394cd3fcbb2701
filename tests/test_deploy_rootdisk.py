"""Root disk choice and the deploy ramdisk's command line, on hand-checkable cases.

The lsblk output is what ``lsblk -J -b -o NAME,SIZE,SERIAL,MODEL,TYPE,ROTA``
prints (sizes in bytes, partitions as children); the ramdisk applies the same
rules to the same columns, which tests/test_deploy_ramdisk.py boots for real.
"""

from __future__ import annotations

import json

import pytest

from cloudplan.errors import ProvisioningFailed, SpecError
from cloudplan.inventory import DataDiskErase, Inventory
from cloudplan.io import validate
from cloudplan.provision.deploy.boot import ImageSource, deploy_args
from cloudplan.provision.deploy.cmdline import DeployArgs, kernel_cmdline, parse_report
from cloudplan.provision.deploy.rootdisk import GIB, RootDiskHints, choose_root_disk, disks_from_lsblk

# A storage node: a 480 GB boot SSD pair, two 3.84 TB data SSDs, a DVD drive and a mounted USB stick's loop.
LSBLK = json.dumps({"blockdevices": [
    {"name": "sda", "size": 480103981056, "serial": "S4BOOT01", "model": "SAMSUNG MZ7L3480", "type": "disk",
     "rota": False, "children": [{"name": "sda1", "size": 1048576, "serial": None, "model": None, "type": "part",
                                  "rota": False}]},
    {"name": "sdb", "size": 480103981056, "serial": "S4BOOT02", "model": "SAMSUNG MZ7L3480", "type": "disk",
     "rota": False},
    {"name": "nvme0n1", "size": 3840755982336, "serial": "PHDATA01", "model": "INTEL SSDPE2KX040T8", "type": "disk",
     "rota": False},
    {"name": "nvme1n1", "size": 3840755982336, "serial": "PHDATA02", "model": "INTEL SSDPE2KX040T8", "type": "disk",
     "rota": False},
    {"name": "sr0", "size": 1073741312, "serial": "DVD1", "model": "QEMU DVD-ROM", "type": "rom", "rota": True},
    {"name": "loop0", "size": 65536, "serial": None, "model": None, "type": "loop", "rota": False},
    {"name": "sdc", "size": 0, "serial": "CARDREADER", "model": "Card Reader", "type": "disk", "rota": True},
]})
BY_PATH = {"sda": ["pci-0000:00:17.0-ata-1", "pci-0000:00:17.0-ata-1.0"], "sdb": ["pci-0000:00:17.0-ata-2"],
           "nvme0n1": ["pci-0000:3b:00.0-nvme-1"], "nvme1n1": ["pci-0000:5e:00.0-nvme-1"]}


@pytest.fixture
def disks():
    return disks_from_lsblk(LSBLK, BY_PATH)


def test_only_disks_with_a_size_are_candidates(disks):
    # sr0 is a rom, loop0 a loop device, sdc a card reader with no medium, sda1 a partition.
    assert [d.name for d in disks] == ["sda", "sdb", "nvme0n1", "nvme1n1"]
    assert disks[0].model == "SAMSUNG MZ7L3480" and disks[0].by_path == ("pci-0000:00:17.0-ata-1",
                                                                          "pci-0000:00:17.0-ata-1.0")


def test_default_is_the_smallest_disk_ties_to_the_first_name(disks):
    # sda and sdb are both 447 GiB: sda sorts first; every other disk is then a data disk.
    choice = choose_root_disk(disks)
    assert choice.root.name == "sda"
    assert [d.name for d in choice.data] == ["sdb", "nvme0n1", "nvme1n1"]


def test_planned_data_disks_are_never_root_and_are_the_only_ones_wiped(disks):
    choice = choose_root_disk(disks, data_serials=["S4BOOT01", "PHDATA01", "PHDATA02"])
    assert choice.root.name == "sdb"
    assert [d.name for d in choice.data] == ["sda", "nvme0n1", "nvme1n1"]


@pytest.mark.parametrize(("hints", "root"), [
    (RootDiskHints(serial="S4BOOT02"), "sdb"),
    (RootDiskHints(serial=" S4BOOT02 "), "sdb"),
    (RootDiskHints(model="INTEL SSDPE2KX040T8"), "nvme0n1"),  # two match: equal size, so the first name
    # 3840755982336 bytes are 3576.9 GiB: size_gib is the whole GiB rounded down, as Ironic's hint.
    (RootDiskHints(size_gib=3576), "nvme0n1"),
    (RootDiskHints(size_gib=447), "sda"),
    (RootDiskHints(by_path="pci-0000:5e:00.0-nvme-1"), "nvme1n1"),
    (RootDiskHints(by_path="pci-0000:00:17.0-ata-1.0"), "sda"),
    (RootDiskHints(model="SAMSUNG MZ7L3480", by_path="pci-0000:00:17.0-ata-2"), "sdb"),
])
def test_every_hint_given_must_match(disks, hints, root):
    assert choose_root_disk(disks, hints).root.name == root


@pytest.mark.parametrize(("hints", "data"), [
    (RootDiskHints(size_gib=3577), ()),  # 3576.9 GiB rounds down, never up
    (RootDiskHints(serial="S4BOOT02", model="INTEL SSDPE2KX040T8"), ()),  # each matches a different disk
    (RootDiskHints(serial="PHDATA01"), ("PHDATA01",)),  # the hint names a planned data disk
    (RootDiskHints(serial="DVD1"), ()),  # not a disk
])
def test_no_disk_left_names_the_hints_and_the_disks(disks, hints, data):
    with pytest.raises(ProvisioningFailed) as err:
        choose_root_disk(disks, hints, data, node="stor01")
    text = str(err.value)
    assert text.startswith("node stor01: root disk: no disk matches")
    for key, value in hints.given().items():
        assert f"{key}={value}" in text
    assert "sda (447 GiB, serial S4BOOT01, model SAMSUNG MZ7L3480)" in text


def test_rotational_flag_and_unreadable_output():
    disk = disks_from_lsblk(json.dumps({"blockdevices": [
        {"name": "sdd", "size": str(8 * GIB), "serial": "", "model": "  ", "type": "disk", "rota": "1"}]}))[0]
    assert disk.rotational and disk.serial is None and disk.model is None and disk.size_bytes == 8 * GIB
    with pytest.raises(ProvisioningFailed, match="unreadable lsblk output"):
        disks_from_lsblk("not json")


def _args(**kw) -> DeployArgs:
    base = {"image_url": "http://10.10.0.1:8080/images/debian-12.raw.zst", "image_sha256": "AB" * 32,
            "report_url": "http://10.10.0.1:8080/deploy/node01", "token": "t0k-en_1"}
    return DeployArgs(**{**base, **kw})


def test_kernel_cmdline_carries_the_contract():
    line = kernel_cmdline(_args(ip="10.10.0.11/24", gateway="10.10.0.1", mac="52:54:00:AA:00:01",
                                seed_url="http://10.10.0.1:8080/seed/node01.img", seed_sha256="cd" * 32,
                                root_hints=RootDiskHints(model="SAMSUNG MZ7L3480", size_gib=447),
                                data_serials=("PHDATA01", "PHDATA02")))
    assert line.split() == [
        "quiet", "cloudplan.image_url=http://10.10.0.1:8080/images/debian-12.raw.zst",
        "cloudplan.image_sha256=" + "ab" * 32, "cloudplan.image_compression=zstd",
        "cloudplan.report_url=http://10.10.0.1:8080/deploy/node01", "cloudplan.token=t0k-en_1",
        "cloudplan.seed_url=http://10.10.0.1:8080/seed/node01.img", "cloudplan.seed_sha256=" + "cd" * 32,
        "cloudplan.ip=10.10.0.11/24", "cloudplan.gateway=10.10.0.1", "cloudplan.mac=52:54:00:aa:00:01",
        "cloudplan.root_size_gib=447", "cloudplan.root_model=SAMSUNG%20MZ7L3480",
        "cloudplan.data_serials=PHDATA01,PHDATA02", "cloudplan.after=poweroff"]


@pytest.mark.parametrize(("url", "compression"), [("http://h/a.raw", "none"), ("http://h/a.raw.gz", "gzip"),
                                                  ("http://h/a.raw.xz?x=1", "xz"), ("http://h/a.zst", "zstd")])
def test_compression_follows_the_suffix(url, compression):
    assert f"cloudplan.image_compression={compression}" in kernel_cmdline(_args(image_url=url)).split()


@pytest.mark.parametrize(("kw", "message"), [
    ({"image_sha256": "abc"}, "image_sha256 must be 64 hex digits"),
    ({"image_url": "ftp://h/a.raw"}, r"image_url must be an http\(s\) URL"),
    ({"image_url": "http://h/a b.raw"}, "without blanks"),
    ({"token": ""}, "token must be non-empty"),
    ({"token": "a&b"}, "token must be non-empty URL-safe"),
    ({"seed_url": "http://h/seed.img"}, "seed_url and seed_sha256 go together"),
    ({"ip": "10.0.0.5"}, "needs its prefix length"),
    ({"ip": "10.0.0.300/24"}, "ip must be ADDR/PREFIX or dhcp"),
    ({"mac": "52:54:00:aa:00"}, "is not six colon-separated"),
    ({"root_hints": RootDiskHints(serial='a"b')}, "root disk hint serial"),
    ({"data_serials": ("A,B",)}, "root disk hint data serial"),
])
def test_kernel_cmdline_refuses_what_the_ramdisk_cannot_read(kw, message):
    with pytest.raises(ProvisioningFailed, match=message) as err:
        kernel_cmdline(_args(**kw), node="node01")
    assert "t0k-en_1" not in str(err.value)


def test_parse_report():
    report = parse_report(b"token=abc&step=failed&root_disk=vdb&root_serial=ROOT1&root_size_bytes=134217728"
                          b"&sha256_ok=false&error=image-verify%3A%20sha256%20mismatch")
    assert report.failed and not report.done and report.token == "abc" and report.root_disk == "vdb"
    assert report.root_size_bytes == 128 << 20 and report.sha256_ok is False
    assert report.error == "image-verify: sha256 mismatch"
    started = parse_report(b"token=abc&step=started&root_disk=&root_serial=&root_size_bytes=&sha256_ok=&error=")
    assert started.sha256_ok is None and started.root_disk is None and started.error is None
    with pytest.raises(ProvisioningFailed, match="unknown step 'rebooting'"):
        parse_report(b"token=abc&step=rebooting")


def _inventory(site: str | None, **node) -> Inventory:
    data = {"provisioning": {"http": "10.10.0.1:8080", **({"data_disk_erase": site} if site else {})},
            "nodes": [{"name": f"n{i}", "role": "storage", "rack": "r1",
                       "bmc": {"address": f"10.9.0.{i}", "username": "admin", "password_env": "BMC_PW"},
                       "data_disk_serials": ["PHDATA01"], **extra} for i, extra in enumerate([{}, node], 1)]}
    return validate(Inventory, data)


def _erase_args(inv: Inventory, name: str) -> list[str]:
    image = ImageSource(url="http://10.10.0.1:8080/images/d.raw", sha256="ab" * 32)
    args = deploy_args(inv, inv.node(name), base_url="http://10.10.0.1:8080", token="t0k", image=image,
                       seed_sha256="cd" * 32)
    return [a for a in kernel_cmdline(args).split() if a.startswith(("cloudplan.data_", "cloudplan.after"))]


@pytest.mark.parametrize(("site", "node", "n1", "n2"), [
    # Nothing said: signatures, and the ramdisk is told nothing new (an older ramdisk reads the same line).
    (None, {}, [], []),
    (None, {"data_disk_erase": "secure"}, [], ["cloudplan.data_erase=secure"]),
    ("secure", {}, ["cloudplan.data_erase=secure"], ["cloudplan.data_erase=secure"]),
    ("secure", {"data_disk_erase": "signatures"}, ["cloudplan.data_erase=secure"], []),
])
def test_data_disk_erase_goes_from_the_inventory_to_the_command_line(site, node, n1, n2):
    inv = _inventory(site, **node)
    assert _erase_args(inv, "n1") == ["cloudplan.data_serials=PHDATA01", *n1, "cloudplan.after=poweroff"]
    assert _erase_args(inv, "n2") == ["cloudplan.data_serials=PHDATA01", *n2, "cloudplan.after=poweroff"]
    assert inv.data_disk_erase(inv.node("n2")) is (DataDiskErase.secure if n2 else DataDiskErase.signatures)


def test_an_unknown_data_disk_erase_is_refused_naming_the_field():
    with pytest.raises(SpecError, match=r"nodes\[1\]\.data_disk_erase: 'shred' is not valid; expected "
                                        "'signatures' or 'secure'"):
        _inventory(None, data_disk_erase="shred")
    with pytest.raises(SpecError, match=r"provisioning\.data_disk_erase: 'zero' is not valid"):
        _inventory("zero")


def test_parse_report_reads_how_each_data_disk_was_cleared():
    report = parse_report(b"token=abc&step=data-wiped&data_disks=nvme0n1%3Anvme-format-user-data-erase"
                          b"%2Csda%3Aata-enhanced-security-erase%2Cvdb%3Awipefs")
    assert report.data_disks == (("nvme0n1", "nvme-format-user-data-erase"), ("sda", "ata-enhanced-security-erase"),
                                 ("vdb", "wipefs"))
    assert parse_report(b"token=abc&step=started&data_disks=").data_disks == ()
    for bad in (b"vdb", b"vdb%3Ashred", b"%3Awipefs"):
        with pytest.raises(ProvisioningFailed, match="malformed data disk entry"):
            parse_report(b"token=abc&step=done&data_disks=" + bad)


def test_the_mirror_disk_is_chosen_from_the_disks_left(disks):
    choice = choose_root_disk(disks, RootDiskHints(serial="S4BOOT01"), mirror_hints=RootDiskHints(
        model="SAMSUNG MZ7L3480"))
    # Both boot SSDs match the model: the root disk is taken, so the other; neither is then a data disk.
    assert (choice.root.name, choice.mirror.name) == ("sda", "sdb")
    assert [d.name for d in choice.data] == ["nvme0n1", "nvme1n1"]
    with pytest.raises(ProvisioningFailed, match=r"no disk matches the mirror disk rules \(serial=PHDATA01, "
                                                 r"data disks PHDATA01, PHDATA02 excluded\)"):
        choose_root_disk(disks, RootDiskHints(serial="S4BOOT01"), ["PHDATA01", "PHDATA02"],
                         mirror_hints=RootDiskHints(serial="PHDATA01"))
    with pytest.raises(ProvisioningFailed, match="no disk matches the mirror disk rules"):
        choose_root_disk(disks, RootDiskHints(serial="S4BOOT01"), mirror_hints=RootDiskHints(serial="S4BOOT01"))


def test_a_mirror_smaller_than_the_root_disk_is_refused(disks):
    with pytest.raises(ProvisioningFailed, match=r"mirror disk sda \(447 GiB.*\) is smaller than root disk "
                                                 r"nvme0n1 \(3576 GiB"):
        choose_root_disk(disks, RootDiskHints(serial="PHDATA01"), mirror_hints=RootDiskHints(serial="S4BOOT01"))


def test_mirror_hints_go_from_the_inventory_to_the_command_line():
    inv = _inventory(None, root_disk={"serial": "S4BOOT01"}, root_disk_mirror={"model": "SAMSUNG MZ7L3480",
                                                                               "size_gib": 447})
    image = ImageSource(url="http://10.10.0.1:8080/images/d.raw", sha256="ab" * 32)
    args = deploy_args(inv, inv.node("n2"), base_url="http://10.10.0.1:8080", token="t0k", image=image,
                       seed_sha256="cd" * 32)
    line = kernel_cmdline(args).split()
    assert [a for a in line if a.startswith(("cloudplan.root_", "cloudplan.mirror_"))] == [
        "cloudplan.root_serial=S4BOOT01", "cloudplan.mirror_size_gib=447", "cloudplan.mirror_model=SAMSUNG%20MZ7L3480"]
    plain = deploy_args(inv, inv.node("n1"), base_url="http://10.10.0.1:8080", token="t0k", image=image,
                        seed_sha256="cd" * 32)
    assert not [a for a in kernel_cmdline(plain).split() if a.startswith("cloudplan.mirror_")]
    with pytest.raises(ProvisioningFailed, match="the mirror disk needs at least one hint"):
        kernel_cmdline(_args(mirror_hints=RootDiskHints()))


@pytest.mark.parametrize(("node", "message"), [
    ({"root_disk_mirror": {"serial": "B"}}, "root_disk_mirror needs root_disk hints too"),
    ({"root_disk": {"serial": "A"}, "root_disk_mirror": {}}, "root_disk_mirror needs at least one hint"),
    ({"root_disk": {"serial": "A"}, "root_disk_mirror": {"serial": "A"}},
     "root_disk_mirror has the same hints as root_disk"),
])
def test_mirror_hints_that_cannot_name_a_second_disk_are_refused(node, message):
    with pytest.raises(SpecError, match=rf"nodes\[1\]: {message}"):
        _inventory(None, **node)


def test_a_qcow2_image_is_refused_before_any_node_writes_it(tmp_path):
    """The ramdisk streams raw bytes onto the disk: a qcow2 written that way boots nothing, so it is refused
    by name (a URL's or a file's suffix) and, for a served file, by its magic whatever the name."""
    from pydantic import ValidationError

    from cloudplan.errors import SpecError
    from cloudplan.inventory import DeployImage
    from cloudplan.provision.deploy.boot import image_source

    for url in ("https://example.org/jammy.qcow2", "https://example.org/noble.qcow2.zst?x=1"):
        with pytest.raises(ValidationError, match="a qcow2 image: the deploy ramdisk writes raw images"):
            DeployImage(url=url, sha256="ab" * 32)
    disguised = tmp_path / "noble-server-cloudimg-amd64.img"     # Ubuntu's cloud images are qcow2 named .img
    disguised.write_bytes(b"QFI\xfb" + bytes(1020))
    with pytest.raises(SpecError, match="qemu-img convert -O raw") as err:
        image_source(DeployImage(path=str(disguised)), "http://10.0.0.1:8080", source="inventory.yaml")
    assert err.value.field == "provisioning.image.path" and err.value.path == "inventory.yaml"
    raw = tmp_path / "os.raw"
    raw.write_bytes(bytes(1024))
    assert image_source(DeployImage(path=str(raw)), "http://10.0.0.1:8080").path == raw
