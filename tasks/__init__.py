"""Generic Prefect tasks (extract, map, validate, load, report).

Prefect reads its settings when it is first imported, so the hub's defaults for it (a project-local
PREFECT_HOME, no telemetry) are set here, before any task module imports Prefect. Every flow imports its
tasks from here (also when a worker loads it by entrypoint, which skips flows/__init__.py), so this is
also where the runtime plug-ins connectors know nothing of are installed: each connector call gets its
share of the integration's rate limit shared by all workers (hub/runtime/rate_limits.py; a no-op without a
Prefect server or without the limit), and a secret missing from the environment is read from its Prefect
Secret block (hub/runtime/secret_blocks.py).
"""

import hub.runtime.prefect_runtime  # noqa: F401
from hub.runtime.rate_limits import install as _install_shared_rate_limits
from hub.runtime.secret_blocks import install as _install_secret_blocks

_install_shared_rate_limits()
_install_secret_blocks()
