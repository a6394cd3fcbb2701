"""How much a Ceph tier holds when CRUSH places its data, computed without the MILP.

A pool of ``size`` copies (or k+m chunks) puts each copy on a distinct failure
domain. With domain capacities c_i, the pool holds S per copy when

    n * S <= sum_i min(c_i, S)

(a domain can hold at most one copy of each object, so a domain larger than S
helps with S only). The largest S is min over j < n of (sum of all but the j
largest c_i) / (n - j): capping the j largest domains at S is the tightest of
those inequalities. "N+1" means the demand still fits with the largest domain
gone, so the cluster can heal into the rest.

This module is the independent check of what the sizing MILP models as linear
constraints, and what the capacity table reports.
"""

from __future__ import annotations

from collections.abc import Sequence


def max_per_copy(capacities: Sequence[float], n: int) -> float:
    """The largest S with n * S <= sum_i min(c_i, S); 0 with fewer than n domains."""
    caps = sorted((c for c in capacities if c > 0), reverse=True)
    if n <= 0 or len(caps) < n:
        return 0.0
    tail = sum(caps)
    best = float("inf")
    for j in range(n):
        best = min(best, tail / (n - j))
        tail -= caps[j]
    return best


def without_largest(capacities: Sequence[float]) -> list[float]:
    """The domains left after losing the largest one (the worst single loss for CRUSH)."""
    caps = sorted(capacities, reverse=True)
    return caps[1:]


def holds(capacities: Sequence[float], n: int, per_copy: float, tol: float = 1e-9) -> bool:
    """Whether domains ``capacities`` hold ``per_copy`` on each of ``n`` distinct domains."""
    return n * per_copy <= sum(min(c, per_copy) for c in capacities) + tol * max(1.0, n * per_copy)


# Without a sizing policy to follow, a tier's CRUSH rule spreads copies over racks once its
# hosts span this many racks (one per copy of a 3x pool), else over hosts.
RACK_DOMAIN_MIN_RACKS = 3


def rule_domain(racks: int, policy_domain: str | None = None, rack_min: int = RACK_DOMAIN_MIN_RACKS) -> str:
    """The failure domain of a tier's CRUSH rule: the sizing policy's (``host`` or ``rack``) when
    there is one, since the capacity was sized to survive the loss of that; without one, ``rack``
    when the tier's hosts span ``rack_min`` racks, else ``host``."""
    if policy_domain is not None:
        return str(getattr(policy_domain, "value", policy_domain))
    return "rack" if racks >= rack_min else "host"
