"""Prefect flows, one per sync or collection.

Prefect reads its settings when it is first imported, so the hub's defaults for it (a project-local
PREFECT_HOME, no telemetry) are set here, before any flow module imports Prefect.
"""

import hub.runtime.prefect_runtime  # noqa: F401
