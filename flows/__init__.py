"""Prefect flows, one per sync or collection.

Prefect reads its settings when it is first imported, so the hub's defaults for it (a project-local
PREFECT_HOME, no telemetry) are set here, before any flow module imports Prefect.
"""

import hub.runtime.prefect_runtime

# Every flow run of the hub ends when its work does (hub/runtime/prefect_runtime.py says why).
hub.runtime.prefect_runtime.stop_heartbeats_promptly()
