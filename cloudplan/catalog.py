"""The hardware catalog: chassis, CPUs, DIMMs, drives, switches, racks and the price book.

Loaded from a directory of YAML files (``hardware_profiles/`` by default, or
``--profiles DIR``). Every file is validated by the models below, so a typo
names the file and the field.
"""

from __future__ import annotations

import datetime as dt
from enum import Enum
from pathlib import Path

from pydantic import Field, model_validator

from cloudplan.errors import SpecError
from cloudplan.io import read_yaml, validate
from cloudplan.spec import DEVICE_WRITE_SHARE, Strict, Tier

GIB_PER_TIB = 1024.0
# Peak over typical drive power, when a drive gives no peak figure: a 3.5" HDD spins up
# at about 2 A on 12 V (~25 W against ~8 W active, Seagate Exos / WD Ultrastar data
# sheets; staggered spin-up spreads it, but the rack budget must carry a cold start);
# U.2 NVMe drives are rated to ~25 W at most against ~13 W typical; SATA SSDs ~1.5x.
DRIVE_PEAK_FACTOR = {"hdd": 3.0, "ssd": 1.5, "nvme": 1.9}
# Share of a rack feed's rating a continuous load may draw (the 80 % rule of NEC 210.20
# for continuous loads); with A/B feeds each feed must carry the whole rack alone.
RACK_FEED_DERATE = 0.8
TIB_PER_TB = 1e12 / 2**40  # drive vendors sell decimal terabytes


class Bay(str, Enum):
    """Drive bay kinds: U.2/E3.S NVMe, 2.5" SATA/SAS, 3.5" LFF."""

    nvme = "nvme"
    sata = "sata"
    lff = "lff"


class SwitchRole(str, Enum):
    leaf = "leaf"
    spine = "spine"
    management = "management"


class CPU(Strict):
    name: str = Field(description="CPU model name")
    socket: str = Field(description="socket type, e.g. SP5, LGA4677")
    cores: int = Field(gt=0, description="physical cores per CPU")
    threads: int = Field(gt=0, description="hardware threads per CPU")
    price_usd: float = Field(ge=0, description="price per CPU, USD")
    tdp_w: float = Field(gt=0, description="thermal design power per CPU, W")


class DIMM(Strict):
    name: str = Field(description="DIMM name")
    size_gib: int = Field(gt=0, description="capacity per DIMM, GiB")
    price_usd: float = Field(ge=0, description="price per DIMM, USD")
    power_w: float = Field(default=5.0, ge=0, description="typical power per DIMM, W")


class Chassis(Strict):
    name: str = Field(description="chassis (server model) name")
    form_factor_u: int = Field(gt=0, description="rack units")
    sockets: int = Field(gt=0, description="CPU sockets (all populated)")
    socket: str = Field(description="socket type the board takes")
    memory_channels: int = Field(gt=0, description="memory channels in total (all sockets)")
    dimm_slots: int = Field(gt=0, description="DIMM slots in total")
    bays: dict[Bay, int] = Field(default_factory=dict, description="data drive bays by kind")
    base_price_usd: float = Field(ge=0, description="barebone price: board, PSUs, fans, 2x25GbE, BMC, boot SSDs, USD")
    base_power_w: float = Field(ge=0, description="typical power of the barebone under load, W")
    nic_ports: int = Field(default=2, ge=1, description="data ports cabled to the leaves")
    nic_speed_gbps: float = Field(default=25, gt=0, description="speed of each data port, Gb/s (the barebone's "
                                  "2x25GbE OCP NIC)")
    roles: list[str] = Field(default_factory=lambda: ["compute", "storage", "control"],
                             description="roles this chassis may take")
    bmc: str = Field(default="ipmi", pattern="^(ipmi|redfish)$",
                     description="management protocol its BMC is driven by: redfish for boards sold from "
                                 "2026 (many ship with IPMI-over-LAN off), ipmi for older ones")

    @model_validator(mode="after")
    def _slots(self) -> "Chassis":
        if self.dimm_slots % self.memory_channels:
            raise ValueError("dimm_slots must be a multiple of memory_channels")
        return self

    def ram_configs(self, dimms: list[DIMM]) -> list[tuple[DIMM, int]]:
        """Balanced memory configurations: every channel populated with 1 or 2 identical DIMMs.

        Unbalanced population costs memory bandwidth, which is why no real build sheet uses it.
        """
        per_channel = self.dimm_slots // self.memory_channels
        return [(d, self.memory_channels * dpc) for d in dimms for dpc in range(1, per_channel + 1)]


class Drive(Strict):
    name: str = Field(description="drive model")
    tier: Tier = Field(description="storage tier it serves")
    bay: Bay = Field(description="bay kind it needs")
    capacity_tb: float = Field(gt=0, description="capacity in decimal TB, as sold")
    iops: float = Field(gt=0, description="4k random read IOPS (device)")
    write_iops: float | None = Field(default=None, gt=0, description="4k random write IOPS (device); default "
                                     "iops x DEVICE_WRITE_SHARE of its tier")
    throughput_mbps: float = Field(gt=0, description="sequential throughput, MB/s")
    price_usd: float = Field(ge=0, description="price per drive, USD")
    power_w: float = Field(ge=0, description="typical active power, W")
    peak_power_w: float | None = Field(default=None, ge=0, description="peak power (spin-up, full write), W; "
                                       "default power_w x DRIVE_PEAK_FACTOR of its tier")

    @property
    def capacity_tib(self) -> float:
        return self.capacity_tb * TIB_PER_TB

    @property
    def device_write_iops(self) -> float:
        return self.write_iops if self.write_iops is not None else self.iops * DEVICE_WRITE_SHARE[self.tier.value]

    @property
    def peak_draw_w(self) -> float:
        if self.peak_power_w is not None:
            return self.peak_power_w
        return self.power_w * DRIVE_PEAK_FACTOR[self.tier.value]


class Switch(Strict):
    name: str = Field(description="switch model")
    role: SwitchRole = Field(description="leaf, spine or management")
    ports: int = Field(gt=0, description="host-facing ports (spines: all ports)")
    port_speed_gbps: float = Field(gt=0, description="speed of those ports, Gb/s")
    uplinks: int = Field(default=0, ge=0, description="uplink ports to spines")
    uplink_speed_gbps: float = Field(default=0, ge=0, description="uplink speed, Gb/s")
    form_factor_u: int = Field(default=1, gt=0, description="rack units")
    price_usd: float = Field(ge=0, description="price with a network OS licence, USD")
    power_w: float = Field(ge=0, description="typical power, W")


class Rack(Strict):
    name: str = Field(description="rack model")
    height_u: int = Field(gt=0, description="rack units in total")
    reserved_u: int = Field(default=2, ge=0, description="units kept for patch panels and cable management")
    power_budget_w: float = Field(gt=0, description="power the site can deliver and cool per rack, W "
                                  "(the rating of one feed of an A/B pair)")
    feed_derate: float = Field(default=RACK_FEED_DERATE, gt=0, le=1,
                               description="share of power_budget_w the rack's peak draw may use (continuous load)")
    price_usd: float = Field(ge=0, description="rack with PDUs, USD")

    @property
    def usable_u(self) -> int:
        return self.height_u - self.reserved_u

    @property
    def usable_power_w(self) -> float:
        """What the rack's nodes and switches may draw at peak."""
        return self.power_budget_w * self.feed_derate


class PriceBook(Strict):
    date: dt.date = Field(description="date the prices were taken")
    currency: str = Field(default="USD", description="currency of every price")
    usd_per_kwh: float = Field(gt=0, description="electricity price, USD per kWh")
    pue: float = Field(ge=1.0, description="power usage effectiveness of the site")
    support_pct_per_year: float = Field(ge=0, description="hardware support contract, % of capex per year")
    rack_usd_per_month: float = Field(default=0, ge=0, description="colocation space per rack per month, USD")
    load_factor: float = Field(default=0.6, gt=0, le=1,
                               description="average draw as a fraction of CPU TDP (typical cloud load)")
    dimm_price_factor: float = Field(default=1.0, gt=0, description="multiplier on every DIMM price (what-if)")
    drive_price_factor: float = Field(default=1.0, gt=0, description="multiplier on every drive price (what-if)")
    cpu_price_factor: float = Field(default=1.0, gt=0, description="multiplier on every CPU price (what-if)")


class Catalog(Strict):
    cpus: list[CPU] = Field(min_length=1)
    dimms: list[DIMM] = Field(min_length=1)
    chassis: list[Chassis] = Field(min_length=1)
    drives: list[Drive] = Field(default_factory=list)
    switches: list[Switch] = Field(min_length=1)
    racks: list[Rack] = Field(min_length=1)
    price_book: PriceBook

    @model_validator(mode="after")
    def _refs(self) -> "Catalog":
        for kind in ("cpus", "dimms", "chassis", "drives", "switches", "racks"):
            names = [x.name for x in getattr(self, kind)]
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                raise ValueError(f"{kind}: duplicate name {sorted(dup)[0]!r}")
        sockets = {c.socket for c in self.cpus}
        for i, ch in enumerate(self.chassis):
            if ch.socket not in sockets:
                raise ValueError(f"chassis[{i}] {ch.name}: no CPU in the catalog fits socket {ch.socket}")
        for role in (SwitchRole.leaf, SwitchRole.management):
            if not any(s.role == role for s in self.switches):
                raise ValueError(f"switches: the catalog needs at least one {role.value} switch")
        return self

    def cpus_for(self, chassis: Chassis) -> list[CPU]:
        return [c for c in self.cpus if c.socket == chassis.socket]

    def cheapest(self, role: SwitchRole) -> Switch | None:
        cands = [s for s in self.switches if s.role == role]
        return min(cands, key=lambda s: (s.price_usd / s.ports, s.name)) if cands else None


# Which file holds which part of the catalog.
CATALOG_FILES = {
    "cpus": "cpus.yaml", "dimms": "memory.yaml", "chassis": "servers.yaml", "drives": "drives.yaml",
    "switches": "network.yaml", "racks": "racks.yaml", "price_book": "pricebook.yaml",
}

DEFAULT_PROFILES = Path(__file__).resolve().parent.parent / "hardware_profiles"


def load_catalog(directory: str | Path | None = None) -> Catalog:
    """Load every catalog file from ``directory``; errors name the file and field."""
    d = Path(directory) if directory is not None else DEFAULT_PROFILES
    if not d.is_dir():
        raise SpecError("hardware profiles directory not found", path=str(d))
    data: dict[str, object] = {}
    for key, fname in CATALOG_FILES.items():
        path = d / fname
        doc = read_yaml(path)
        if not isinstance(doc, dict) or key not in doc:
            raise SpecError(f"expected a top-level '{key}:' entry", path=str(path))
        data[key] = doc[key]
    try:
        return validate(Catalog, data)
    except SpecError as err:
        # Point at the file the failing field came from.
        top = (err.field or "").split("[")[0].split(".")[0]
        fname = CATALOG_FILES.get(top)
        raise SpecError(err.message, path=str(d / fname) if fname else str(d), field=err.field) from None
