"""Generic Prefect tasks (extract, map, validate, load, report).

Prefect reads its settings when it is first imported, so the hub's defaults for it (a project-local
PREFECT_HOME, no telemetry) are set here, before any task module imports Prefect.
"""

import hub.prefect_runtime  # noqa: F401
