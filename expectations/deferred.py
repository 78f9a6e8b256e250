"""Keep the modules Great Expectations imports but the hub's suites never call out of memory until one is used.

Importing GX 1.x also imports SciPy's ``scipy.stats`` (~61 MB resident, ~490 modules) and Altair
(~25 MB with narwhals) at module level, only for its distribution expectations (KS test, KL
divergence) and their charts. No suite of ours uses them, yet every sync process paid ~86 MB for
them: two thirds of GX's import. GX has no setting to skip them, and the standard library's
``importlib.util.LazyLoader`` does not help on Python 3.11 (the import system reads ``__spec__``
from the module it finds, which makes a lazy module load at once), hence this small stand-in.

:func:`defer` puts a :class:`DeferredModule` into ``sys.modules`` for each name, so GX's
``from scipy import stats`` and ``import altair as alt`` bind the stand-in. The first attribute
read on it (``stats.kstest(...)``, ``alt.Chart(...)``) imports the real module, which then takes
its place in ``sys.modules`` and on its parent package; the stand-in forwards every later read. A
module already imported is left alone, so nothing changes for a process that uses it before.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any, Final

#: What GX imports at module level for expectations and renderers no suite of ours uses.
GX_UNUSED_AT_IMPORT: Final = ("scipy.stats", "altair")

_LOCK = threading.RLock()


class DeferredModule(types.ModuleType):
    """Stands in ``sys.modules`` for a module that is imported on its first use."""

    def __init__(self, spec: Any) -> None:
        super().__init__(spec.name)
        self.__spec__ = spec
        self.__loader__ = spec.loader
        self.__package__ = spec.parent

    @property
    def loaded(self) -> bool:
        return "_real_module" in self.__dict__

    def __getattr__(self, name: str) -> Any:  # only for names the stand-in itself lacks
        return getattr(self.load(), name)

    def load(self) -> types.ModuleType:
        real = self.__dict__.get("_real_module")
        if real is not None:
            return real  # type: ignore[no-any-return]
        with _LOCK:
            real = self.__dict__.get("_real_module")
            if real is None:
                if sys.modules.get(self.__name__) is self:
                    del sys.modules[self.__name__]
                real = importlib.import_module(self.__name__)
                self.__dict__["_real_module"] = real
        return real  # type: ignore[no-any-return]


def defer(names: tuple[str, ...] = GX_UNUSED_AT_IMPORT) -> list[str]:
    """Put stand-ins for ``names`` that are installed but not imported yet; return the names deferred."""
    deferred = []
    with _LOCK:
        for name in names:
            if name in sys.modules:
                continue
            try:
                spec = importlib.util.find_spec(name)  # imports the parent package (``scipy``: under 1 MB)
            except ImportError:
                continue
            if spec is None or spec.loader is None:
                continue
            sys.modules[name] = DeferredModule(spec)
            deferred.append(name)
    return deferred
