"""Day-2 operations on a running cloud: capacity and when to buy, rolling maintenance, node replacement.

Built on what cloudplan already has (the blueprint's policy, the CRUSH
capacity rule the sizing uses, the upgrade rehearsal's drain check and
Ceph-safe batches, the report renderer), reading the live cloud only through
the JSON its own CLIs print, so nothing here needs credentials.
"""

from cloudplan.day2.capacity import CapacityReport, ResourceForecast, forecast
from cloudplan.day2.maintenance import MaintenancePlan, plan_maintenance
from cloudplan.day2.replace import Replacement, check_replacement, write_replacement
from cloudplan.day2.snapshot import SNAPSHOT_FILES, Snapshot, load_snapshot

__all__ = ["SNAPSHOT_FILES", "CapacityReport", "MaintenancePlan", "Replacement", "ResourceForecast", "Snapshot",
           "check_replacement", "forecast", "load_snapshot", "plan_maintenance", "write_replacement"]
