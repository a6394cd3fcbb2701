"""Day-2 operations on a running cloud: capacity and when to buy.

Built on what cloudplan already has (the blueprint's policy, the CRUSH
capacity rule the sizing uses, the report renderer), reading the live cloud
only through the JSON its own CLIs print, so nothing here needs credentials.
"""

from cloudplan.day2.capacity import CapacityReport, ResourceForecast, forecast
from cloudplan.day2.snapshot import SNAPSHOT_FILES, Snapshot, load_snapshot

__all__ = ["CapacityReport", "ResourceForecast", "SNAPSHOT_FILES", "Snapshot", "forecast", "load_snapshot"]
