"""Host groups of a Kolla-Ansible INI inventory, and the services that change hosts between releases.

The rehearsal renders the inventory of both releases (:mod:`cloudplan.manifests`)
and compares what each group resolves to, through ``[group:children]``, as
Ansible does: a service whose group lands on other hosts needs steps of its
own (Cinder's volumes are owned by the service host that created them).
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel, Field

# Groups whose hosts own state a move must carry over.
MOVABLE_GROUPS = ("cinder-volume", "cinder-backup")


def parse_groups(text: str) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(hosts listed directly, child groups) per group of an INI inventory."""
    hosts: dict[str, set[str]] = {}
    children: dict[str, set[str]] = {}
    section: tuple[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            name, _, kind = line[1:-1].partition(":")
            section = (name, kind)
            if kind != "vars":
                (children if kind == "children" else hosts).setdefault(name, set())
            continue
        if section is None or section[1] == "vars":
            continue
        token = line.split()[0]
        (children if section[1] == "children" else hosts).setdefault(section[0], set()).add(token)
    return hosts, children


def resolve(text: str) -> dict[str, set[str]]:
    """Every group's hosts, through its children."""
    hosts, children = parse_groups(text)
    memo: dict[str, set[str]] = {}

    def members(group: str, seen: frozenset[str] = frozenset()) -> set[str]:
        if group in memo:
            return memo[group]
        out = set(hosts.get(group, ()))
        for child in children.get(group, ()):
            if child not in seen:
                out |= members(child, seen | {group})
        memo[group] = out
        return out

    return {g: members(g) for g in set(hosts) | set(children)}


class ServiceMove(BaseModel):
    """A service group that runs on other hosts in the new release's inventory."""

    group: str = Field(description="Kolla-Ansible group, e.g. cinder-volume")
    old_hosts: list[str] = Field(description="hosts of the group in the running release's inventory")
    new_hosts: list[str] = Field(description="hosts of the group in the new release's inventory")

    @property
    def leaving(self) -> list[str]:
        return sorted(set(self.old_hosts) - set(self.new_hosts))


def service_moves(before: str, after: str, groups: tuple[str, ...] = MOVABLE_GROUPS) -> list[ServiceMove]:
    """The ``groups`` whose hosts differ between the ``before`` and ``after`` inventories."""
    a, b = resolve(before), resolve(after)
    out = []
    for g in groups:
        old, new = sorted(a.get(g, set())), sorted(b.get(g, set()))
        if old != new:
            out.append(ServiceMove(group=g, old_hosts=old, new_hosts=new))
    return out


def cinder_backends(globals_text: str) -> tuple[list[str], str]:
    """(Cinder backend names, cinder_cluster_name) of a rendered globals.yml."""
    try:
        data: Any = yaml.safe_load(globals_text) or {}
    except yaml.YAMLError:
        return [], ""
    if not isinstance(data, dict):
        return [], ""
    names = [str(b["name"]) for b in data.get("cinder_ceph_backends") or [] if isinstance(b, dict) and "name" in b]
    return names, str(data.get("cinder_cluster_name") or "")
