"""Which hosts may be down together without a Ceph pool going below ``min_size``.

A placement group keeps its copies (or EC chunks) on distinct CRUSH failure
domains of its tier. With hosts of ``d`` domains down at once, some placement
group can lose ``d`` copies (with enough PGs, every choice of domains holds
one), so a pool of ``size`` copies on ``D`` domains stays writable only while
``min(size, D) - d >= min_size``. Replicated pools: ``min_size`` defaults to
``size - size // 2`` (2 of 3); EC ``k+m`` pools: ``k + 1`` (Ceph's defaults,
``osd_pool_default_min_size`` and the EC profile rule). A batch of the roll
may therefore hold OSD hosts of at most ``min(size, D) - min_size`` failure
domains per tier; a tier where that is 0 cannot lose a single domain without
stopping I/O, and the roll is a no-go.

The failure domain of a tier is the one cloudplan's CRUSH rules use: the sizing
policy's (the blueprint's ``failure_domain``) when one is given, else the rack
when the tier's hosts span enough racks, else the host
(:func:`cloudplan.sizing.crush.rule_domain`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from cloudplan.inventory import Inventory, Node
from cloudplan.sizing.crush import rule_domain
from cloudplan.spec import Protection


class PoolProtection(BaseModel):
    """How a tier's pools keep their data: copies on distinct failure domains, and how many must stay."""

    tier: str = Field(description="storage tier: nvme, ssd or hdd")
    scheme: str = Field(description="'3x replication' or 'EC 4+2'")
    size: int = Field(description="copies or chunks per placement group")
    min_size: int = Field(description="copies or chunks a placement group needs to serve I/O")
    failure_domain: str = Field(description="CRUSH failure domain: host or rack")
    domains: int = Field(description="failure domains holding the tier's OSDs")
    hosts: list[str] = Field(description="hosts with OSDs of the tier")

    @property
    def max_domains_down(self) -> int:
        """Failure domains of this tier that may be down at once with every pool at or above min_size."""
        return max(0, min(self.size, self.domains) - self.min_size)


def min_size_for(protection: Protection) -> tuple[int, int]:
    """(size, min_size) as Ceph sets them by default for the scheme."""
    if protection.replicas is not None:
        size = protection.replicas
        return size, size - size // 2
    return protection.ec_k + protection.ec_m, protection.ec_k + 1


def domain_of(node: Node, failure_domain: str) -> str:
    return node.rack if failure_domain == "rack" else node.name


def osd_tiers(inventory: Inventory) -> dict[str, list[Node]]:
    """Hosts carrying OSDs, per tier (every node with data drives: storage or hyperconverged)."""
    out: dict[str, list[Node]] = {}
    for n in inventory.nodes:
        for tier, count in n.drives.items():
            if count > 0:
                out.setdefault(tier.value, []).append(n)
    return out


def pool_protections(inventory: Inventory, protection: Protection | None = None, *,
                     rack_domain_min: int | None = None, failure_domain: str | None = None) -> list[PoolProtection]:
    """The protection of every tier the inventory's OSDs form; ``failure_domain`` is the
    blueprint policy's (None: chosen by the racks each tier spans)."""
    protection = protection or Protection()
    size, min_size = min_size_for(protection)
    rack_min = size if rack_domain_min is None else rack_domain_min
    out = []
    for tier, hosts in sorted(osd_tiers(inventory).items()):
        domain = rule_domain(len({h.rack for h in hosts}), failure_domain, rack_min)
        domains = {domain_of(h, domain) for h in hosts}
        out.append(PoolProtection(tier=tier, scheme=protection.describe(), size=size, min_size=min_size,
                                  failure_domain=domain, domains=len(domains),
                                  hosts=sorted(h.name for h in hosts)))
    return out


@dataclass
class CephGuard:
    """Answers "may these hosts be down together?" for the roll's batches."""

    pools: list[PoolProtection]
    # host -> [(tier index, failure domain)]
    _where: dict[str, list[tuple[int, str]]] = field(default_factory=dict)

    @classmethod
    def build(cls, inventory: Inventory, pools: list[PoolProtection]) -> "CephGuard":
        nodes = {n.name: n for n in inventory.nodes}
        guard = cls(pools=pools)
        for i, p in enumerate(pools):
            for h in p.hosts:
                guard._where.setdefault(h, []).append((i, domain_of(nodes[h], p.failure_domain)))
        return guard

    def is_osd_host(self, host: str) -> bool:
        return host in self._where

    def blocked(self) -> list[str]:
        """Reasons the roll cannot take any OSD host down (a tier that tolerates no domain down)."""
        out = []
        for p in self.pools:
            if p.max_domains_down < 1:
                out.append(f"Ceph tier {p.tier} ({p.scheme}, min_size {p.min_size}) keeps "
                           f"{min(p.size, p.domains)} copies on {p.domains} {p.failure_domain} failure domain(s): "
                           f"taking down any of its hosts ({', '.join(p.hosts[:6])}) leaves some placement "
                           f"groups below min_size and stops I/O on its pools")
        return out

    def new_state(self) -> dict[int, set[str]]:
        return {i: set() for i in range(len(self.pools))}

    def admits(self, state: dict[int, set[str]], host: str) -> bool:
        """Whether ``host`` can join a batch whose OSD domains down are ``state``."""
        for i, dom in self._where.get(host, ()):
            down = state[i]
            if dom not in down and len(down) + 1 > self.pools[i].max_domains_down:
                return False
        return True

    def add(self, state: dict[int, set[str]], host: str) -> None:
        for i, dom in self._where.get(host, ()):
            state[i].add(dom)

    def domains_down(self, hosts: Iterable[str]) -> dict[str, int]:
        """Failure domains of each tier the hosts take down."""
        state = self.new_state()
        for h in hosts:
            self.add(state, h)
        return {self.pools[i].tier: len(d) for i, d in state.items() if d}
