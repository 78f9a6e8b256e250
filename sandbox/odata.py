"""A generic SAP Gateway OData V2 server engine for sandbox simulators.

A service is a declaration, an :class:`ODataService`: its name, its root path, its namespace
and its entity types (:class:`EntityType` with :class:`Prop` and :class:`Nav`). An
:class:`ODataSandbox` serves one service the way SAP Gateway does:

* ``$metadata`` (EDMX, ``DataServiceVersion="2.0"``) generated from the declarations, and the
  service document;
* ``$filter`` (tokenizer, parser, type checker, compiler to row predicates), ``$select``,
  ``$expand``, ``$orderby``, ``$top``/``$skip``, server-driven paging with ``__next`` and an
  opaque ``$skiptoken``, a keyset seek for ``Key gt '...'`` filters, ``$inlinecount``, ``/$count``
  (text/plain whatever the Accept header says);
* Basic auth, OAuth2 client credentials at :data:`TOKEN_PATH`, the CSRF token protocol bound to
  a session cookie, ``PATCH``/``MERGE`` with ``If-Match`` (``428`` without, ``412`` when stale),
  ``POST`` creates with deep insert (``201`` with ``Location``, ``ETag`` and the created tree);
* ``$batch`` (``multipart/mixed``): retrieve parts and atomic change sets, one CSRF check for the batch,
  each part routed as a single request, a failed change set undone (``MAX_BATCH_PARTS`` requests at most);
* SAP's error envelope (JSON for JSON clients, the V2 XML error otherwise) and the fault
  responses of the Gateway, the ICM and API Management.

Rows live in one :class:`Table` per entity set as tuples of wire values, with navigation links
as row indices, so a page renders without conversions. A concrete service subclasses
:class:`ODataSandbox`, fills :attr:`ODataSandbox.tables`, and overrides :meth:`ODataSandbox.on_update`
and :meth:`ODataSandbox.on_create` for its write rules; ``sandbox/sap.py`` (``API_BUSINESS_PARTNER``)
is the worked example and ``docs/sandbox-sap.md`` explains how to add a second service.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import hmac
import json
import logging
import operator
import os
import re
import secrets
import uuid
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import cached_property
from operator import itemgetter
from typing import Any, Final
from urllib.parse import parse_qsl, quote
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr

from sandbox.core import (
    CONTROL_PREFIX,
    FaultSwitches,
    Headers,
    SandboxRequest,
    SandboxResponse,
    Simulator,
    control_json_body,
)

try:
    import orjson

    def dumps(payload: Any) -> bytes:
        """JSON bytes exactly as the engine renders responses (values it cannot render raise)."""
        return orjson.dumps(payload)

except ImportError:  # pragma: no cover - orjson ships with Prefect; plain json is the fallback

    def dumps(payload: Any) -> bytes:
        """JSON bytes exactly as the engine renders responses (values it cannot render raise)."""
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


logger = logging.getLogger(__name__)

#: SAP's OAuth2 token endpoint: one per system, shared by every OData service on it.
TOKEN_PATH: Final = "/sap/bc/sec/oauth2/token"
#: Environment variable with fault switches (a JSON object) for sandboxes started from the CLI.
FAULTS_ENV: Final = "DRYMIX_SANDBOX_FAULTS"

_REALM = 'Basic realm="SAP NetWeaver Application Server"'
_JSON_CT = "application/json; charset=utf-8"
_XML_CT = "application/xml; charset=utf-8"

# ============================================================================================
# EDM schema declarations
# ============================================================================================

#: EDM types the engine can store, filter, sort, validate and describe.
EDM_TYPES: Final = frozenset(
    {
        "Edm.String",
        "Edm.Boolean",
        "Edm.DateTime",
        "Edm.DateTimeOffset",
        "Edm.Time",
        "Edm.Guid",
        "Edm.Int32",
        "Edm.Decimal",
    }
)


@dataclass(frozen=True)
class Prop:
    """One EDM property."""

    name: str
    edm: str = "Edm.String"
    max_length: int | None = None
    nullable: bool = True
    updatable: bool = True
    date_only: bool = False
    #: May a create (``POST``) set it? ``None``: the same as ``updatable`` (keys are always creatable).
    creatable: bool | None = None

    @property
    def can_create(self) -> bool:
        """Whether a create's payload may set this property (``sap:creatable``)."""
        return self.updatable if self.creatable is None else self.creatable


@dataclass(frozen=True)
class Nav:
    """One navigation property; ``target`` is an entity set name."""

    name: str
    target: str
    many: bool


@dataclass
class EntityType:
    """An entity type together with the entity set that serves it.

    With ``has_etag`` the value of property ``etag_property`` is the entity's ETag: it is sent
    in ``__metadata.etag`` and the ``ETag`` header, and updates must quote it in ``If-Match``.
    An Edm.String property is sent as ``W/"'<value>'"``; an Edm.DateTimeOffset property (SAP's
    ``LastChangeDateTime`` with ``ConcurrencyMode="Fixed"``) as ``W/"datetimeoffset'<ISO>Z'"``.
    """

    name: str
    set_name: str
    props: tuple[Prop, ...]
    keys: tuple[str, ...]
    navs: tuple[Nav, ...] = ()
    has_etag: bool = False
    etag_property: str = "ETag"
    index: dict[str, int] = field(init=False)
    prop: dict[str, Prop] = field(init=False)
    nav: dict[str, Nav] = field(init=False)
    names: tuple[str, ...] = field(init=False)
    etag_at: int = field(init=False)
    _etag_is_dto: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {p.name: i for i, p in enumerate(self.props)}
        self.prop = {p.name: p for p in self.props}
        self.nav = {n.name: n for n in self.navs}
        self.names = tuple(p.name for p in self.props)
        unknown = sorted({p.edm for p in self.props} - EDM_TYPES)
        if unknown:
            raise ValueError(f"{self.name}: the engine does not serve {', '.join(unknown)}")
        missing = [k for k in self.keys if k not in self.index]
        if missing or not self.keys:
            raise ValueError(f"{self.name}: keys {missing or '()'} are not properties")
        if self.has_etag and self.etag_property not in self.index:
            raise ValueError(f"{self.name}: ETag property {self.etag_property!r} is not declared")
        self.etag_at = self.index[self.etag_property] if self.has_etag else -1
        self._etag_is_dto = self.has_etag and self.prop[self.etag_property].edm == "Edm.DateTimeOffset"

    def etag_of(self, row: Sequence[Any]) -> str:
        """The ETag of a row as sent in ``__metadata.etag`` and the ``ETag`` header."""
        value = row[self.etag_at]
        return dto_etag_header(value) if self._etag_is_dto else etag_header(value)


def string_prop(name: str, length: int, *, key: bool = False, ro: bool = False, create_only: bool = False) -> Prop:
    """Edm.String with a MaxLength; keys are not nullable and never updatable.

    ``create_only``: set when the entity is created, never changed afterwards (SAP's
    ``sap:updatable="false"`` without ``sap:creatable="false"``, e.g. a partner's category).
    """
    if create_only:
        return Prop(name, "Edm.String", length, updatable=False, creatable=True)
    return Prop(name, "Edm.String", length, nullable=not key, updatable=not (ro or key))


def bool_prop(name: str, *, ro: bool = False) -> Prop:
    """Edm.Boolean."""
    return Prop(name, "Edm.Boolean", updatable=not ro)


def date_prop(name: str, *, ro: bool = False) -> Prop:
    """Edm.DateTime holding a calendar day (``sap:display-format="Date"``)."""
    return Prop(name, "Edm.DateTime", updatable=not ro, date_only=True)


def time_prop(name: str, *, ro: bool = False) -> Prop:
    """Edm.Time (a time of day as an ISO-8601 duration)."""
    return Prop(name, "Edm.Time", updatable=not ro)


def dto_prop(name: str, *, ro: bool = False) -> Prop:
    """Edm.DateTimeOffset."""
    return Prop(name, "Edm.DateTimeOffset", updatable=not ro)


def guid_prop(name: str, *, ro: bool = False) -> Prop:
    """Edm.Guid."""
    return Prop(name, "Edm.Guid", updatable=not ro)


def int_prop(name: str, *, ro: bool = False) -> Prop:
    """Edm.Int32 (a JSON number on the wire)."""
    return Prop(name, "Edm.Int32", updatable=not ro)


def decimal_prop(name: str, *, ro: bool = False) -> Prop:
    """Edm.Decimal (a JSON string on the wire, as SAP sends amounts)."""
    return Prop(name, "Edm.Decimal", updatable=not ro)


@dataclass(frozen=True)
class ODataService:
    """One OData V2 service: where it lives, what it is called, and the entity types it serves.

    ``updatable`` names the entity sets that accept ``PATCH``/``MERGE`` on a single entity;
    ``creatable`` those that accept ``POST`` to the collection (a create, with deep insert of
    the children given under navigation properties);
    ``component_id`` and ``version`` appear in the error envelope (and the OAuth scope).
    """

    name: str
    root: str
    namespace: str
    entity_types: tuple[EntityType, ...]
    updatable: frozenset[str] = frozenset()
    component_id: str = "BC-ESI-ODATA"
    version: str = "0001"
    creatable: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not (self.root.startswith("/") and self.root.endswith("/")):
            raise ValueError("the service root must start and end with '/'")
        sets = {t.set_name for t in self.entity_types}
        if len(sets) != len(self.entity_types):
            raise ValueError(f"{self.name}: entity set names must be unique")
        dangling = sorted(f"{t.name}.{n.name}" for t in self.entity_types for n in t.navs if n.target not in sets)
        writable = self.updatable | self.creatable
        if dangling or not writable <= sets:
            raise ValueError(f"{self.name}: unknown target sets ({dangling or sorted(writable - sets)})")

    @cached_property
    def types_by_set(self) -> dict[str, EntityType]:
        """Entity type of each entity set."""
        return {t.set_name: t for t in self.entity_types}

    def qualified(self, etype: EntityType) -> str:
        """Namespace-qualified type name used in ``__metadata.type``."""
        return f"{self.namespace}.{etype.name}"

    @cached_property
    def metadata_xml(self) -> bytes:
        """The ``$metadata`` document (built once per service)."""
        return _metadata_xml(self).encode()


# ============================================================================================
# Wire formats (OData V2 verbose JSON)
# ============================================================================================

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MS_PER_DAY = 86_400_000
_date_cache: dict[int, str] = {}
_dto_cache: dict[int, str] = {}
_time_cache: dict[int, str] = {}


def wire_day(ordinal: int) -> str:
    """Edm.DateTime for a day given as ``date.toordinal()``: ``/Date(<ms at midnight UTC>)/``."""
    text = _date_cache.get(ordinal)
    if text is None:
        text = _date_cache[ordinal] = f"/Date({(ordinal - _EPOCH_ORDINAL) * _MS_PER_DAY})/"
    return text


def wire_dto_day(ordinal: int) -> str:
    """Edm.DateTimeOffset at midnight UTC of a day ordinal: ``/Date(<ms>+0000)/``."""
    text = _dto_cache.get(ordinal)
    if text is None:
        text = _dto_cache[ordinal] = f"/Date({(ordinal - _EPOCH_ORDINAL) * _MS_PER_DAY}+0000)/"
    return text


def wire_date(d: date) -> str:
    """Edm.DateTime for a calendar day: ``/Date(<ms at midnight UTC>)/``."""
    return wire_day(d.toordinal())


def wire_time(seconds: int) -> str:
    """Edm.Time as an ISO-8601 duration: ``PT14H30M05S``."""
    text = _time_cache.get(seconds)
    if text is None:
        h, rest = divmod(seconds, 3600)
        text = _time_cache[seconds] = f"PT{h:02d}H{rest // 60:02d}M{rest % 60:02d}S"
    return text


def parse_wire_datetime(text: str) -> int:
    """Milliseconds since the epoch from ``/Date(ms)/`` or ``/Date(ms+0000)/``."""
    inner = text[6 : text.index(")")]
    for sign in ("+", "-"):
        pos = inner.find(sign, 1)
        if pos > 0:
            offset = int(inner[pos + 1 : pos + 3]) * 60 + int(inner[pos + 3 : pos + 5])
            ms = int(inner[:pos])
            return ms - offset * 60_000 if sign == "+" else ms + offset * 60_000
    return int(inner)


def parse_wire_time(text: str) -> int:
    """Seconds of the day from an Edm.Time duration such as ``PT14H30M05S``."""
    match = _DURATION_RE.fullmatch(text)
    if not match:
        raise ValueError(f"not an Edm.Time value: {text!r}")
    h, m, s = (int(float(g)) if g else 0 for g in match.groups())
    return h * 3600 + m * 60 + s


_DURATION_RE = re.compile(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?")


def _parse_decimal(text: str) -> Decimal:
    """An Edm.Decimal wire value (a JSON string such as ``"2656.24"``)."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not an Edm.Decimal value: {text!r}") from None
    if not value.is_finite():
        raise ValueError(f"not an Edm.Decimal value: {text!r}")
    return value


def _ms_of(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def etag_header(etag_value: str) -> str:
    """The ``ETag`` header (and ``__metadata.etag``) for an ETag property value: ``W/"'<value>'"``."""
    return f"W/\"'{etag_value}'\""


def dto_etag_header(wire_value: str) -> str:
    """The ETag of an Edm.DateTimeOffset concurrency property, as SAP Gateway sends it.

    ``/Date(1130168212000+0000)/`` -> ``W/"datetimeoffset'2005-10-24T15%3A36%3A52.0000000Z'"``.
    """
    ms = parse_wire_datetime(wire_value)
    stamp = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return f"W/\"datetimeoffset'{stamp:%Y-%m-%dT%H%%3A%M%%3A%S}.{ms % 1000:03d}0000Z'\""


def make_etag(stamp: datetime, revision: int) -> str:
    """An ETag property value: change timestamp + revision counter (26 characters at most, like SAP's)."""
    return f"{stamp:%Y%m%d%H%M%S}{revision:07d}"


def next_etag(previous: str | None, stamp: datetime) -> str:
    """The ETag after a change at ``stamp``: the revision counter of ``previous`` plus one."""
    tail = (previous or "")[-7:]
    return make_etag(stamp, int(tail) + 1 if tail.isdigit() else 1)


def _defaults(etype: EntityType) -> list[Any]:
    """Initial values SAP reports for unset fields: "" for strings, False for flags, null otherwise."""
    row: list[Any] = []
    for prop in etype.props:
        if prop.edm == "Edm.String":
            row.append("")
        elif prop.edm == "Edm.Boolean":
            row.append(False)
        else:
            row.append(None)
    return row


def row_builder(
    etype: EntityType, fields: tuple[str, ...], constants: Mapping[str, Any] | None = None
) -> Callable[..., tuple[Any, ...]]:
    """Compile ``build(*values) -> row tuple`` placing ``values`` at ``fields``, defaults elsewhere.

    Generating one SAP business partner fills ~200 slots; a compiled list display is several times
    faster than copying a template and assigning slots by name.
    """
    constants = dict(constants or {})
    unknown = (set(fields) | constants.keys()) - etype.index.keys()
    if unknown:
        raise ValueError(f"{etype.name} has no properties {sorted(unknown)}")
    position = {name: i for i, name in enumerate(fields)}
    defaults = _defaults(etype)
    parts = []
    for i, prop in enumerate(etype.props):
        if prop.name in position:
            parts.append(f"v{position[prop.name]}")
        else:
            parts.append(repr(constants.get(prop.name, defaults[i])))
    args = ", ".join(f"v{i}" for i in range(len(fields)))
    namespace: dict[str, Any] = {}
    exec(f"def build({args}):\n    return ({', '.join(parts)},)\n", namespace)  # noqa: S102 - source built from the schema only
    build: Callable[..., tuple[Any, ...]] = namespace["build"]
    return build


# ============================================================================================
# Storage: one table per entity set, rows as tuples of wire values
# ============================================================================================


class Table:
    """Rows of one entity set (wire-format tuples), key lookup, navigation links, typed columns.

    A service appends rows (tuples in the order of ``etype.props``, values in wire format) and
    sets ``links[nav][row]`` to the target row index (single-valued, ``-1`` for none) or to a
    sequence of target row indices (collection-valued, :func:`span` for contiguous children).
    """

    def __init__(self, etype: EntityType, namespace: str = "") -> None:
        self.etype = etype
        #: Namespace-qualified type name for ``__metadata.type``.
        self.type_name = f"{namespace}.{etype.name}" if namespace else etype.name
        self.rows: list[tuple[Any, ...]] = []
        #: nav name -> per-row target index (single, -1 for none) or a sequence of indices (many)
        self.links: dict[str, list[Any]] = {nav.name: [] for nav in etype.navs}
        self._link_defaults: dict[str, Any] = {nav.name: () if nav.many else -1 for nav in etype.navs}
        self._by_key: dict[Any, int] | None = None
        self._typed: dict[str, list[Any]] = {}
        #: While a ``$batch`` change set runs: row index -> the row before its first replacement (for its undo).
        self.journal: dict[int, tuple[Any, ...]] | None = None
        positions = [etype.index[k] for k in etype.keys]
        self.key_of: Callable[[tuple[Any, ...]], Any] = (
            itemgetter(positions[0]) if len(positions) == 1 else itemgetter(*positions)
        )
        if len(positions) == 1:
            template = f"{etype.set_name}('{{}}')"
        else:
            template = f"{etype.set_name}(" + ",".join(f"{k}='{{}}'" for k in etype.keys) + ")"
        fmt = template.format
        key_of = self.key_of
        single = len(positions) == 1
        # Key values come from the service's own data (never from a request) and must be
        # URI-safe; escaping them on every rendered row would cost the hot path.
        self.key_path: Callable[[tuple[Any, ...]], str] = (
            (lambda row: fmt(key_of(row))) if single else (lambda row: fmt(*key_of(row)))
        )

    def invalidate(self) -> None:
        """Forget derived lookups after rows were added in bulk."""
        self._by_key = None
        self._typed.clear()

    def append(self, row: tuple[Any, ...]) -> int:
        """Add a row; returns its index."""
        index = len(self.rows)
        self.rows.append(row)
        for name, links in self.links.items():
            links.append(self._link_defaults[name])
        if self._by_key is not None:
            self._by_key[self.key_of(row)] = index
        self._typed.clear()
        return index

    def replace(self, index: int, row: tuple[Any, ...]) -> None:
        """Swap a row for an updated version (keys never change)."""
        if self.journal is not None and index not in self.journal:
            self.journal[index] = self.rows[index]
        self.rows[index] = row
        self._typed.clear()

    def delete(self, indices: Iterable[int]) -> Callable[[Any], Any]:
        """Remove rows (and their own navigation links); the rest keep their order, re-indexed.

        Returns ``remap(link)``, which turns a link into this table (a row index, ``-1``, a
        :func:`span` or a sequence of indices) into the link after the deletion: deleted targets
        are dropped (``-1`` for a single link), spans stay spans. Links from other tables into
        this one must be passed through it; :meth:`ODataSandbox.delete_rows` does that.
        """
        count = len(self.rows)
        gone = bytearray(count)
        for i in indices:
            if not 0 <= i < count:
                raise IndexError(f"{self.etype.set_name} has no row {i}")
            gone[i] = 1
        # removed_before[i]: deleted rows before row i, so a kept row i moves to i - removed_before[i].
        removed_before = [0] * (count + 1)
        removed = 0
        for i in range(count):
            removed_before[i] = removed
            removed += gone[i]
        removed_before[count] = removed
        if removed:
            self.rows = [row for i, row in enumerate(self.rows) if not gone[i]]
            for name, links in self.links.items():
                self.links[name] = [link for i, link in enumerate(links) if not gone[i]]
            self.invalidate()

        def remap(link: Any) -> Any:
            if isinstance(link, int):
                return -1 if link < 0 or gone[link] else link - removed_before[link]
            if isinstance(link, range):
                # Kept rows of a contiguous block stay contiguous after the compaction.
                return span(link.start - removed_before[link.start], link.stop - removed_before[link.stop])
            return [i - removed_before[i] for i in link if not gone[i]]

        return remap

    def find(self, key: tuple[str, ...]) -> int | None:
        """Row index for a key tuple (in the entity type's key order)."""
        if self._by_key is None:
            key_of = self.key_of
            self._by_key = {key_of(row): i for i, row in enumerate(self.rows)}
        return self._by_key.get(key[0] if len(key) == 1 else key)

    def typed_column(self, name: str) -> list[Any]:
        """Values of property ``name`` in comparable form (epoch ms, seconds, lower-case GUIDs, Decimals)."""
        column = self._typed.get(name)
        if column is None:
            prop = self.etype.prop[name]
            values = list(map(itemgetter(self.etype.index[name]), self.rows))
            if prop.edm in ("Edm.DateTime", "Edm.DateTimeOffset"):
                column = [_typed_or_none(parse_wire_datetime, v) for v in values]
            elif prop.edm == "Edm.Time":
                column = [_typed_or_none(parse_wire_time, v) for v in values]
            elif prop.edm == "Edm.Guid":
                column = [v.lower() if isinstance(v, str) else None for v in values]
            elif prop.edm == "Edm.Decimal":
                column = [_typed_or_none(_parse_decimal, v) for v in values]
            else:
                # Values of the wrong type (planted by a drill such as set_raw_field) compare as null.
                kind = {"Edm.Boolean": bool, "Edm.Int32": int}.get(prop.edm, str)
                column = [v if type(v) is kind else None for v in values]
            self._typed[name] = column
        return column


def _typed_or_none(parse: Callable[[str], Any], value: Any) -> Any:
    """Comparable form of a wire value; raw values planted by a drill compare as null."""
    if not isinstance(value, str):
        return None
    try:
        return parse(value)
    except ValueError:
        return None


# ============================================================================================
# OData errors (SAP Gateway's codes and envelope)
# ============================================================================================

_CODE_PARAMTYPE = "005056A509B11EE1BB8AF4A65EC3CA20"
_CODE_BAD_REQUEST = "/IWBEP/CM_MGW_RT/022"
_CODE_NOT_FOUND = "/IWBEP/CM_MGW_RT/020"
_CODE_METHOD = "/IWBEP/CM_MGW_RT/021"
_CODE_PRECONDITION = "/IWBEP/CM_MGW_RT/054"
_CODE_NOT_ACCEPTABLE = "/IWBEP/CM_MGW_RT/031"
_CODE_SERVER = "/IWFND/CM_BEC/026"
_SAP_TRANSACTION = (
    'For backend administrators: use ADT feed reader "SAP Gateway Error Log" or run transaction '
    "/IWFND/ERROR_LOG on SAP Gateway hub system and search for entries with the timestamp above "
    "for more details"
)
_SAP_NOTE = "See SAP Note 1797736 for error analysis (https://service.sap.com/sap/support/notes/1797736)"


class ODataError(Exception):
    """An OData error answer (status, SAP-style code and message).

    ``details`` become ``innererror.errordetails`` (each ``(code, message, target)``, the target
    naming the property, e.g. ``to_BusinessPartnerAddress[0]/Country``); without them the
    envelope repeats the main message there, as SAP Gateway does.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Iterable[tuple[str, str]] = (),
        details: Sequence[tuple[str, str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = list(headers)
        self.details = list(details)


def bad_request(message: str) -> ODataError:
    return ODataError(400, _CODE_BAD_REQUEST, message)


def _param_type_error(function: str, position: int) -> ODataError:
    return ODataError(
        400, _CODE_PARAMTYPE, f"Invalid parametertype used at function '{function}' (Position: {position})"
    )


# ============================================================================================
# $filter: tokenizer, parser, type checker and compiler to per-row predicates
# ============================================================================================

_TOKEN_RE = re.compile(
    r"""(?P<ws>\s+)
    |(?P<typed>(?:datetimeoffset|datetime|guid|time)'(?:[^']|'')*')
    |(?P<string>'(?:[^']|'')*')
    |(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[mMdDfFlL]?)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*)
    |(?P<open>\()
    |(?P<close>\))
    |(?P<comma>,)""",
    re.VERBOSE,
)
_COMPARISONS = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})
_NUMERIC = frozenset({"Edm.Int32", "Edm.Int64", "Edm.Decimal", "Edm.Double"})
_BOOL_FUNCS = {"substringof": 2, "startswith": 2, "endswith": 2}
_STRING_FUNCS = {"tolower": 1, "toupper": 1, "trim": 1}
_STRING_METHODS: dict[str, Callable[[str], str]] = {"tolower": str.lower, "toupper": str.upper, "trim": str.strip}
_DATE_PART_FUNCS = {"year", "month", "day", "hour", "minute", "second"}


@dataclass
class _Tok:
    kind: str
    text: str
    pos: int  # 1-based position in the $filter text, as SAP reports it


@dataclass
class _Node:
    kind: str  # lit | member | call | not | bin
    pos: int
    value: Any = None
    edm: str = ""
    name: str = ""
    args: list[_Node] = field(default_factory=list)


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            raise bad_request(f"Invalid token detected at position {pos + 1} in $filter")
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(_Tok(kind, match.group(), pos + 1))
        pos = match.end()
    return tokens


def _parse_datetime_literal(body: str, with_offset: bool, pos: int) -> int:
    text = body.strip()
    if with_offset:
        text = text.replace("Z", "+00:00")
    if "." in text:
        # Python parses at most 6 fractional digits; OData allows 7.
        head, _, tail = text.partition(".")
        digits = tail[: len(tail) - len(tail.lstrip("0123456789"))]  # the fraction, not the offset's digits
        rest = tail[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest}"
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise bad_request(f"Invalid literal '{body}' at position {pos} in $filter") from None
    if with_offset and value.tzinfo is None:
        raise bad_request(f"datetimeoffset literal without offset at position {pos} in $filter")
    if not with_offset and value.tzinfo is not None:
        raise bad_request(f"datetime literal must not carry an offset (position {pos}); use datetimeoffset")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return _ms_of(value)


def _literal(tok: _Tok) -> _Node:
    if tok.kind == "string":
        return _Node("lit", tok.pos, tok.text[1:-1].replace("''", "'"), "Edm.String")
    if tok.kind == "number":
        text = tok.text
        suffix = text[-1].lower() if text[-1].isalpha() else ""
        digits = text[:-1] if suffix else text
        if suffix == "m":
            # Exact, so that `Amount eq 0.1m` matches the stored "0.1".
            return _Node("lit", tok.pos, Decimal(digits), "Edm.Decimal")
        if suffix in ("d", "f") or "." in digits or "e" in digits.lower():
            return _Node("lit", tok.pos, float(digits), "Edm.Double")
        return _Node("lit", tok.pos, int(digits), "Edm.Int64" if suffix == "l" else "Edm.Int32")
    prefix, _, rest = tok.text.partition("'")
    body = rest[:-1].replace("''", "'")
    if prefix == "datetime":
        return _Node("lit", tok.pos, _parse_datetime_literal(body, False, tok.pos), "Edm.DateTime")
    if prefix == "datetimeoffset":
        return _Node("lit", tok.pos, _parse_datetime_literal(body, True, tok.pos), "Edm.DateTimeOffset")
    if prefix == "time":
        try:
            return _Node("lit", tok.pos, parse_wire_time(body), "Edm.Time")
        except ValueError:
            raise bad_request(f"Invalid literal '{body}' at position {tok.pos} in $filter") from None
    try:
        return _Node("lit", tok.pos, str(uuid.UUID(body)), "Edm.Guid")
    except ValueError:
        raise bad_request(f"Invalid literal '{body}' at position {tok.pos} in $filter") from None


class _FilterParser:
    """Recursive-descent parser for the OData V2 ``$filter`` subset the sandbox supports."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0

    def parse(self) -> _Node:
        if not self.tokens:
            raise bad_request("$filter is empty")
        node = self._or()
        if self.i < len(self.tokens):
            tok = self.tokens[self.i]
            raise bad_request(f"Invalid token '{tok.text}' at position {tok.pos} in $filter")
        return node

    def _peek(self) -> _Tok | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _keyword(self, *words: str) -> _Tok | None:
        tok = self._peek()
        if tok is not None and tok.kind == "ident" and tok.text in words:
            self.i += 1
            return tok
        return None

    def _expect(self, kind: str) -> _Tok:
        tok = self._peek()
        if tok is None or tok.kind != kind:
            where = f"position {tok.pos}" if tok else "the end"
            raise bad_request(f"Syntax error in $filter at {where}: expected '{_PUNCT.get(kind, kind)}'")
        self.i += 1
        return tok

    def _binary(self, sub: Callable[[], _Node], *ops: str) -> _Node:
        node = sub()
        while (tok := self._keyword(*ops)) is not None:
            node = _Node("bin", tok.pos, name=tok.text, args=[node, sub()])
        return node

    def _or(self) -> _Node:
        return self._binary(self._and, "or")

    def _and(self) -> _Node:
        return self._binary(self._equality, "and")

    def _equality(self) -> _Node:
        return self._binary(self._relational, "eq", "ne")

    def _relational(self) -> _Node:
        return self._binary(self._unary, "gt", "ge", "lt", "le")

    def _unary(self) -> _Node:
        tok = self._keyword("not")
        if tok is not None:
            return _Node("not", tok.pos, args=[self._unary()])
        return self._primary()

    def _primary(self) -> _Node:
        tok = self._peek()
        if tok is None:
            raise bad_request("Syntax error in $filter: unexpected end of expression")
        self.i += 1
        if tok.kind == "open":
            node = self._or()
            self._expect("close")
            return node
        if tok.kind in ("string", "number", "typed"):
            return _literal(tok)
        if tok.kind == "ident":
            if tok.text in ("true", "false"):
                return _Node("lit", tok.pos, tok.text == "true", "Edm.Boolean")
            if tok.text == "null":
                return _Node("lit", tok.pos, None, "null")
            nxt = self._peek()
            if nxt is not None and nxt.kind == "open" and "/" not in tok.text:
                self.i += 1
                args: list[_Node] = []
                if (after := self._peek()) is not None and after.kind == "close":
                    self.i += 1
                else:
                    args.append(self._or())
                    while (sep := self._peek()) is not None and sep.kind == "comma":
                        self.i += 1
                        args.append(self._or())
                    self._expect("close")
                return _Node("call", tok.pos, name=tok.text, args=args)
            return _Node("member", tok.pos, name=tok.text)
        raise bad_request(f"Invalid token '{tok.text}' at position {tok.pos} in $filter")


_PUNCT = {"close": ")", "open": "(", "comma": ","}
_Fn = Callable[[int], Any]


def _compatible(a: str, b: str) -> bool:
    if a == "null" or b == "null" or a == b:
        return True
    return a in _NUMERIC and b in _NUMERIC


def _date_part(name: str) -> Callable[[int], int]:
    attr = name

    def part(ms: int) -> int:
        value: int = getattr(datetime.fromtimestamp(ms / 1000, tz=UTC), attr)
        return value

    return part


class _FilterCompiler:
    """Type-checks a parsed ``$filter`` against an entity set and compiles it to ``row -> bool``."""

    def __init__(self, tables: Mapping[str, Table], table: Table) -> None:
        self.tables = tables
        self.table = table

    def compile(self, text: str) -> _Fn:
        """A predicate over row indices of ``self.table``."""
        node = _FilterParser(text).parse()
        edm, fn, _const = self._expr(node)
        if edm not in ("Edm.Boolean", "null"):
            raise bad_request("$filter must be a boolean expression")
        return fn

    def member(self, path: str, pos: int, what: str = "$filter") -> tuple[str, _Fn]:
        """Typed accessor for a property path (single-valued navigations allowed)."""
        table = self.table
        hops: list[list[Any]] = []
        segments = path.split("/")
        for segment in segments[:-1]:
            nav = table.etype.nav.get(segment)
            if nav is None:
                raise bad_request(f"Property '{segment}' is invalid in {what} (Position: {pos})")
            if nav.many:
                raise bad_request(f"Navigation property '{segment}' is not single-valued; it cannot be used in {what}")
            hops.append(table.links[segment])
            table = self.tables[nav.target]
        name = segments[-1]
        prop = table.etype.prop.get(name)
        if prop is None:
            kind = "Navigation property" if name in table.etype.nav else "Property"
            raise bad_request(f"{kind} '{name}' is invalid in {what} (Position: {pos})")
        column = table.typed_column(name)
        if not hops:
            return prop.edm, column.__getitem__
        if len(hops) == 1:
            links = hops[0]
            return prop.edm, lambda i: column[j] if (j := links[i]) >= 0 else None

        def walk(i: int) -> Any:
            j = i
            for links in hops:
                j = links[j]
                if j < 0:
                    return None
            return column[j]

        return prop.edm, walk

    def _expr(self, node: _Node) -> tuple[str, _Fn, tuple[bool, Any]]:
        """(edm type, accessor, (is_constant, constant value))."""
        if node.kind == "lit":
            value = node.value
            return node.edm, (lambda i: value), (True, value)
        if node.kind == "member":
            edm, fn = self.member(node.name, node.pos)
            return edm, fn, (False, None)
        if node.kind == "not":
            edm, fn, _ = self._expr(node.args[0])
            if edm != "Edm.Boolean":
                raise _param_type_error("not", node.pos)
            return "Edm.Boolean", lambda i: not fn(i), (False, None)
        if node.kind == "call":
            return self._call(node)
        return self._binary(node)

    def _binary(self, node: _Node) -> tuple[str, _Fn, tuple[bool, Any]]:
        op = node.name
        left_edm, left, left_const = self._expr(node.args[0])
        right_edm, right, right_const = self._expr(node.args[1])
        if op in ("and", "or"):
            if left_edm != "Edm.Boolean" or right_edm != "Edm.Boolean":
                raise _param_type_error(op, node.pos)
            if op == "and":
                return "Edm.Boolean", lambda i: bool(left(i)) and bool(right(i)), (False, None)
            return "Edm.Boolean", lambda i: bool(left(i)) or bool(right(i)), (False, None)
        if not _compatible(left_edm, right_edm):
            raise _param_type_error(op, node.pos)
        if left_const[0] and not right_const[0]:
            # Put the literal on the right: "datetime'..' le X" is "X ge datetime'..'".
            op = {"gt": "lt", "ge": "le", "lt": "gt", "le": "ge"}.get(op, op)
            left, right, left_const, right_const = right, left, right_const, left_const
        if right_const[0]:
            return "Edm.Boolean", _compare_const(op, left, right_const[1]), (False, None)
        return "Edm.Boolean", _compare_dynamic(op, left, right), (False, None)

    def _call(self, node: _Node) -> tuple[str, _Fn, tuple[bool, Any]]:
        name = node.name
        arity = (
            _BOOL_FUNCS.get(name)
            or _STRING_FUNCS.get(name)
            or (1 if name in _DATE_PART_FUNCS or name == "length" else None)
        )
        if arity is None:
            raise bad_request(f"Function '{name}' is not supported (Position: {node.pos})")
        if len(node.args) != arity:
            raise bad_request(f"Function '{name}' expects {arity} argument(s) (Position: {node.pos})")
        compiled = [self._expr(arg) for arg in node.args]
        if name in _DATE_PART_FUNCS:
            edm, fn, _ = compiled[0]
            if edm not in ("Edm.DateTime", "Edm.DateTimeOffset"):
                raise _param_type_error(name, node.pos)
            part = _date_part(name)
            return "Edm.Int32", lambda i: None if (v := fn(i)) is None else part(v), (False, None)
        if any(edm not in ("Edm.String", "null") for edm, _, _ in compiled):
            raise _param_type_error(name, node.pos)
        fns = [fn for _, fn, _ in compiled]
        if name == "length":
            only = fns[0]
            return "Edm.Int32", lambda i: None if (v := only(i)) is None else len(v), (False, None)
        if name in _STRING_FUNCS:
            only = fns[0]
            method = _STRING_METHODS[name]
            return "Edm.String", lambda i: None if (v := only(i)) is None else method(v), (False, None)
        a, b = fns
        if name == "substringof":
            return (
                "Edm.Boolean",
                lambda i: (x := a(i)) is not None and (y := b(i)) is not None and x in y,
                (False, None),
            )
        if name == "startswith":
            return (
                "Edm.Boolean",
                lambda i: (x := a(i)) is not None and (y := b(i)) is not None and x.startswith(y),
                (False, None),
            )
        return (
            "Edm.Boolean",
            lambda i: (x := a(i)) is not None and (y := b(i)) is not None and x.endswith(y),
            (False, None),
        )


def _compare_const(op: str, fn: _Fn, value: Any) -> _Fn:
    """Comparison with a literal; null compares equal only to null, and never orders."""
    if value is None:
        if op == "eq":
            return lambda i: fn(i) is None
        if op == "ne":
            return lambda i: fn(i) is not None
        return lambda i: False
    if op == "eq":
        return lambda i: fn(i) == value
    if op == "ne":
        return lambda i: fn(i) != value
    if op == "gt":
        return lambda i: (x := fn(i)) is not None and x > value
    if op == "ge":
        return lambda i: (x := fn(i)) is not None and x >= value
    if op == "lt":
        return lambda i: (x := fn(i)) is not None and x < value
    return lambda i: (x := fn(i)) is not None and x <= value


def _compare_dynamic(op: str, left: _Fn, right: _Fn) -> _Fn:
    if op == "eq":
        return lambda i: left(i) == right(i)
    if op == "ne":
        return lambda i: left(i) != right(i)
    compare: Callable[[Any, Any], bool] = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}[
        op
    ]
    return lambda i: (x := left(i)) is not None and (y := right(i)) is not None and compare(x, y)


# ============================================================================================
# $select / $expand shapes and rendering
# ============================================================================================


@dataclass
class _SelectNode:
    """Parsed ``$select`` for one entity type: ``star`` or named properties and navigations."""

    star: bool = False
    props: set[str] = field(default_factory=set)
    #: nav name -> None when selected by name (everything below), or the node for paths below it
    navs: dict[str, _SelectNode | None] = field(default_factory=dict)


@dataclass
class _Shape:
    """What to render for one entity type: property positions and navigation handling."""

    table: Table
    names: tuple[str, ...]
    positions: tuple[int, ...] | None  # None = every property in schema order
    navs: list[tuple[str, _Shape | None, bool]]  # (name, expanded shape or None=deferred, many)


def _parse_expand(text: str, etype: EntityType, tables: Mapping[str, Table]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            raise bad_request("Empty item in $expand")
        node, current = tree, etype
        for segment in item.split("/"):
            nav = current.nav.get(segment)
            if nav is None:
                raise bad_request(f"Navigation property '{segment}' is invalid in $expand for type '{current.name}'")
            node = node.setdefault(segment, {})
            current = tables[nav.target].etype
    return tree


def _parse_select(text: str, etype: EntityType, tables: Mapping[str, Table]) -> _SelectNode:
    root = _SelectNode()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            raise bad_request("Empty item in $select")
        node, current = root, etype
        segments = item.split("/")
        for depth, segment in enumerate(segments):
            last = depth == len(segments) - 1
            if last and segment == "*":
                node.star = True
            elif last and segment in current.prop:
                node.props.add(segment)
            elif segment in current.nav:
                if last:
                    node.navs[segment] = None
                    break
                existing = node.navs.get(segment, _SelectNode())
                if existing is None:
                    break  # already selected as a whole
                node.navs[segment] = existing
                node = existing
                current = tables[current.nav[segment].target].etype
            else:
                raise bad_request(f"Property '{segment}' is invalid in $select for type '{current.name}'")
    return root


def _build_shape(
    table: Table, select: _SelectNode | None, expand: Mapping[str, Any], tables: Mapping[str, Table]
) -> _Shape:
    etype = table.etype
    if select is None or select.star:
        names, positions = etype.names, None
    else:
        chosen = [p for p in etype.props if p.name in select.props]
        names = tuple(p.name for p in chosen)
        positions = tuple(etype.index[p.name] for p in chosen)
    navs: list[tuple[str, _Shape | None, bool]] = []
    for nav in etype.navs:
        if select is None or (select.star and nav.name not in select.navs):
            shown, below = True, None
        elif nav.name in select.navs:
            shown, below = True, select.navs[nav.name]
        else:
            shown, below = False, None
        if not shown:
            continue
        target = tables[nav.target]
        if nav.name in expand:
            navs.append((nav.name, _build_shape(target, below, expand[nav.name], tables), nav.many))
        elif below is not None:
            raise bad_request(f"Navigation property '{nav.name}' must be expanded to select properties below it")
        else:
            navs.append((nav.name, None, nav.many))
    return _Shape(table, names, positions, navs)


def _renderer(shape: _Shape, service_url: str) -> Callable[[int], dict[str, Any]]:
    """Compile a shape into ``render(row_index) -> dict`` for one response (absolute URIs)."""
    table = shape.table
    rows = table.rows
    key_path = table.key_path
    type_name = table.type_name
    names = shape.names
    positions = shape.positions
    getter: Callable[[tuple[Any, ...]], Any] | None
    if positions is None:
        getter = None
    elif len(positions) == 1:
        only = positions[0]
        getter = lambda row: (row[only],)  # noqa: E731 - itemgetter of one index returns a scalar
    elif positions:
        getter = itemgetter(*positions)
    else:
        getter = lambda row: ()  # noqa: E731
    etag_at = table.etype.etag_at
    etag_of = table.etype.etag_of
    navs = [
        (name, None if sub is None else _renderer(sub, service_url), many, table.links[name])
        for name, sub, many in shape.navs
    ]

    def render(i: int) -> dict[str, Any]:
        row = rows[i]
        uri = service_url + key_path(row)
        metadata = {"id": uri, "uri": uri, "type": type_name}
        if etag_at >= 0:
            metadata["etag"] = etag_of(row)
        out: dict[str, Any] = {"__metadata": metadata}
        out.update(zip(names, row if getter is None else getter(row), strict=False))
        for name, sub, many, links in navs:
            if sub is None:
                out[name] = {"__deferred": {"uri": f"{uri}/{name}"}}
            elif many:
                out[name] = {"results": [sub(j) for j in links[i]]}
            else:
                j = links[i]
                out[name] = sub(j) if j >= 0 else None
        return out

    return render


# ============================================================================================
# Query options
# ============================================================================================

_SYSTEM_OPTIONS = frozenset(
    {"$filter", "$select", "$expand", "$orderby", "$top", "$skip", "$skiptoken", "$inlinecount", "$format"}
)


@dataclass
class _Query:
    filter: str | None = None
    select: str | None = None
    expand: str | None = None
    orderby: str | None = None
    top: int | None = None
    skip: int = 0
    skiptoken: str | None = None
    inlinecount: bool = False


def _parse_query(req: SandboxRequest) -> _Query:
    query = _Query()
    seen: set[str] = set()
    for name, value in req.query:
        if not name.startswith("$"):
            continue  # custom options such as sap-client / sap-language
        if name not in _SYSTEM_OPTIONS:
            raise bad_request(f"System query option '{name}' is not supported")
        if name in seen:
            raise bad_request(f"System query option '{name}' is specified more than once")
        seen.add(name)
        if name in ("$top", "$skip"):
            if not value.isdigit():
                raise bad_request(f"Invalid value '{value}' for system query option '{name}'")
            if name == "$top":
                query.top = int(value)
            else:
                query.skip = int(value)
        elif name == "$inlinecount":
            if value not in ("allpages", "none"):
                raise bad_request(f"Invalid value '{value}' for system query option '$inlinecount'")
            query.inlinecount = value == "allpages"
        elif name == "$filter":
            query.filter = value.strip()
        elif name == "$select":
            query.select = value.strip() or None
        elif name == "$expand":
            query.expand = value.strip() or None
        elif name == "$orderby":
            query.orderby = value.strip() or None
        elif name == "$skiptoken":
            query.skiptoken = value
    return query


def _wants_json(req: SandboxRequest) -> bool:
    fmt = req.query_get("$format")
    if fmt is not None:
        return fmt.lower() == "json"
    return "application/json" in (req.headers.get("accept") or "").lower()


def _negotiate(req: SandboxRequest) -> None:
    """Data responses are JSON only: atom/XML requests get 406 (documented limitation)."""
    fmt = req.query_get("$format")
    if fmt is not None and fmt.lower() not in ("json", "atom", "xml"):
        raise bad_request(f"Invalid value '{fmt}' for system query option '$format'")
    if not _wants_json(req):
        raise ODataError(
            406,
            _CODE_NOT_ACCEPTABLE,
            "The sandbox serves OData JSON only: send $format=json or Accept: application/json",
        )


_KEY_SEEK_RE = re.compile(r"(?:(?P<rest>.+) and )?(?P<key>[A-Za-z_]\w*) gt '(?P<value>(?:[^']|'')*)'")
_RESOURCE_RE = re.compile(
    r"(?P<set>[A-Za-z_]\w*)(?:\((?P<key>(?:'(?:[^']|'')*'|[^()'])*)\))?(?:/(?P<nav>[A-Za-z_]\w*))?(?:/(?P<count>\$count))?/?"
)
_KEY_PAIR_RE = re.compile(r"\s*(?:(?P<name>[A-Za-z_]\w*)\s*=\s*)?'(?P<value>(?:[^']|'')*)'\s*")


def _parse_key(etype: EntityType, text: str) -> tuple[str, ...]:
    values: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        match = _KEY_PAIR_RE.match(text, pos)
        if match is None:
            raise bad_request(f"Invalid key predicate '({text})' for '{etype.set_name}'")
        name = match.group("name")
        if name is None:
            if len(etype.keys) != 1 or values:
                raise bad_request(f"Invalid key predicate '({text})' for '{etype.set_name}'")
            name = etype.keys[0]
        if name not in etype.keys or name in values:
            raise bad_request(f"Invalid key property '{name}' for '{etype.set_name}'")
        values[name] = match.group("value").replace("''", "'")
        pos = match.end()
        if pos < len(text):
            if text[pos] != ",":
                raise bad_request(f"Invalid key predicate '({text})' for '{etype.set_name}'")
            pos += 1
    if set(values) != set(etype.keys):
        raise bad_request(f"Key predicate '({text})' must name {', '.join(etype.keys)}")
    return tuple(values[k] for k in etype.keys)


_QUERY_SAFE = "$'(),:/*@!;"
_PATH_SAFE = "/()$,='"


def _encode_query(pairs: Iterable[tuple[str, str]]) -> str:
    return "&".join(f"{quote(k, safe='$')}={quote(v, safe=_QUERY_SAFE)}" for k, v in pairs)


# ============================================================================================
# The engine: one OData V2 service behind a simulated SAP Gateway
# ============================================================================================

_MODIFYING = frozenset({"POST", "PUT", "PATCH", "MERGE", "DELETE"})
#: Requests in one ``$batch`` (retrieve parts plus every change set's requests); more is a 400.
MAX_BATCH_PARTS: Final = 1000
_BOUNDARY_RE = re.compile(r'boundary\s*=\s*(?:"(?P<quoted>[^"]+)"|(?P<plain>[^;\s]+))', re.IGNORECASE)
_REQUEST_LINE_RE = re.compile(rb"(?P<method>[A-Z]+) (?P<url>\S+)(?: HTTP/1\.[01])?")
_REASONS: Final = {
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable", 409: "Conflict",
    412: "Precondition Failed", 428: "Precondition Required", 500: "Internal Server Error", 501: "Not Implemented",
}


@dataclass
class _BatchRequest:
    """One request of a ``$batch`` body (a retrieve part, or one request of a change set)."""

    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes
    content_id: str | None


def multipart_boundary(content_type: str) -> str:
    """The boundary of a ``multipart/mixed`` content type; 400 when it is not one."""
    media = content_type.split(";", 1)[0].strip().lower()
    match = _BOUNDARY_RE.search(content_type)
    if media != "multipart/mixed" or match is None:
        raise bad_request("A $batch request needs Content-Type: multipart/mixed; boundary=...")
    return match.group("quoted") or match.group("plain")


def _split_head(data: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """Header lines (until the first empty line) and what follows; CRLF or bare LF line ends."""
    if data.startswith((b"\r\n", b"\n")):
        return [], data[2:] if data.startswith(b"\r\n") else data[1:]
    ends = [(i, len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (i := data.find(sep)) >= 0]
    if not ends:
        head, rest = data, b""
    else:
        at, size = min(ends)
        head, rest = data[:at], data[at + size :]
    headers = []
    for line in head.decode("utf-8", "replace").splitlines():
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise bad_request(f"Malformed header line in $batch part: {line[:80]!r}")
        headers.append((name.strip(), value.strip()))
    return headers, rest


def multipart_parts(body: bytes, boundary: str) -> list[tuple[Headers, bytes]]:
    """The parts of a multipart body: each part's MIME headers and its content (RFC 2046 delimiters)."""
    delimiter = b"--" + boundary.encode()
    chunks = body.split(delimiter)
    parts: list[tuple[Headers, bytes]] = []
    closed = False
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            closed = True
            break
        line_end = chunk.find(b"\n")
        if line_end < 0 or chunk[:line_end].strip():
            raise bad_request("Malformed multipart body: a delimiter line must end after the boundary")
        content = chunk[line_end + 1 :]
        # The line break before the next delimiter belongs to the delimiter.
        if content.endswith(b"\r\n"):
            content = content[:-2]
        elif content.endswith(b"\n"):
            content = content[:-1]
        headers, rest = _split_head(content)
        parts.append((Headers(headers), rest))
    if not closed:
        raise bad_request(f"Malformed multipart body: the closing delimiter --{boundary}-- is missing")
    return parts


def _batch_request(part_headers: Headers, content: bytes) -> _BatchRequest:
    """An ``application/http`` part -> the request it carries."""
    ctype = (part_headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if ctype != "application/http":
        raise bad_request(f"A $batch request part must be application/http, not '{ctype or '(none)'}'")
    line_end = content.find(b"\n")
    first = (content if line_end < 0 else content[:line_end]).strip()
    match = _REQUEST_LINE_RE.fullmatch(first)
    if match is None:
        raise bad_request(f"Malformed request line in $batch part: {first[:80]!r}")
    headers, body = _split_head(content[line_end + 1 :] if line_end >= 0 else b"")
    inner = Headers(headers)
    length = inner.get("content-length")
    if length and length.isdigit():
        body = body[: int(length)]
    content_id = part_headers.get("content-id") or inner.get("content-id")
    return _BatchRequest(match.group("method").decode(), match.group("url").decode(), headers, body, content_id)


def _http_part(resp: SandboxResponse, content_id: str | None = None) -> bytes:
    """A response as an ``application/http`` part (MIME headers, status line, headers, body)."""
    mime = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    if content_id:
        mime += f"Content-ID: {content_id}\r\n"
    lines = [f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Unknown')}"]
    lines += [f"{k}: {v}" for k, v in resp.headers if k.lower() not in ("content-length", "set-cookie")]
    lines.append(f"Content-Length: {len(resp.body)}")
    return (mime + "\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode() + resp.body


def _multipart(boundary: str, parts: Sequence[bytes]) -> bytes:
    out = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return out + b"--" + boundary.encode() + b"--\r\n"


_RESULT_CACHE_SIZE = 32
_ICF_404 = (
    "<html><head><title>Service cannot be reached</title></head><body>"
    "<h2>404 Not Found</h2><p>Service cannot be reached. What has happened? "
    "URL call was terminated because the corresponding service is not available.</p></body></html>"
)
_DATE_WIRE_RE = re.compile(r"/Date\(-?\d+\)/")
_DTO_WIRE_RE = re.compile(r"/Date\(-?\d+(?:[+-]\d{4})?\)/")


@dataclass
class _Session:
    """A CSRF session: token bound to a session cookie and the user who fetched it."""

    token: str
    user: str
    expires_at: float


@dataclass
class _AccessToken:
    client_id: str
    user: str
    expires_at: float


class ODataSandbox(Simulator):
    """Serves one :class:`ODataService` the way SAP Gateway does; a service subclasses it.

    The subclass fills :attr:`tables` (and calls :meth:`data_changed` when it changes rows
    outside a request), overrides :meth:`on_update` for its write rules, and may add control
    routes under ``/_sandbox/<name>/`` with :attr:`control_actions` and :meth:`control_post`.
    ``seed`` only makes the error envelope's transaction ids reproducible.
    """

    name = "odata"
    #: POST actions under ``/_sandbox/<name>/`` that :meth:`control_post` answers.
    control_actions: tuple[str, ...] = ()
    #: What a control route's ``KeyError`` names in its 404 ("unknown <subject> <key>").
    control_subject = "entity"

    def __init__(
        self,
        service: ODataService,
        *,
        seed: int = 0,
        max_page_size: int = 1000,
        username: str = "DRYMIX_INT",
        password: str = "sandbox-secret",
        client_id: str = "drymix-hub",
        client_secret: str = "sandbox-client-secret",
        token_ttl_s: int = 3600,
        csrf_ttl_s: int = 1800,
        clock: Callable[[], datetime] | None = None,
        faults: FaultSwitches | Mapping[str, Any] | None = None,
        sap_client: str = "100",
        system_id: str = "S4H",
    ) -> None:
        super().__init__(faults=faults)
        if max_page_size < 1:
            raise ValueError("max_page_size must be >= 1")
        self.service = service
        self.service_root = service.root
        self.seed = seed
        self.max_page_size = max_page_size
        self.username = username
        self.password = password
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl_s = token_ttl_s
        self.csrf_ttl_s = csrf_ttl_s
        self.sap_client = sap_client
        self.session_cookie = f"SAP_SESSIONID_{system_id}_{sap_client}"
        self._clock = clock or (lambda: datetime.now(UTC))
        self._clock_offset = timedelta(0)
        self.tables: dict[str, Table] = {t.set_name: Table(t, service.namespace) for t in service.entity_types}
        self._version = 0
        self._results: OrderedDict[tuple[Any, ...], list[int] | range] = OrderedDict()
        self._tokens: dict[str, _AccessToken] = {}
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._metadata = service.metadata_xml
        self._txn = 0
        #: The primary service when this one runs as another service of its SAP system (join_system).
        self._system: ODataSandbox | None = None

    # -- clock, tokens, data version -----------------------------------------------------------

    def now(self) -> datetime:
        """The sandbox clock (aware UTC), including any offset set through the control API."""
        current = self._clock()
        if current.tzinfo is None:
            raise ValueError("the sandbox clock must return timezone-aware datetimes")
        return current.astimezone(UTC) + self._clock_offset

    def advance_clock(self, seconds: float) -> datetime:
        """Move the sandbox clock forward (token and CSRF expiry drills); returns the new now."""
        if self._system is not None:
            self._system.advance_clock(seconds)  # one system, one clock
            return self.now()
        with self.lock:
            self._clock_offset += timedelta(seconds=seconds)
            return self.now()

    def expire_tokens(self, kind: str = "all") -> dict[str, int]:
        """Invalidate issued OAuth access tokens and/or CSRF sessions right now."""
        if kind not in ("all", "oauth", "csrf"):
            raise ValueError("kind must be 'all', 'oauth' or 'csrf'")
        with self.lock:
            expired = {"oauth_tokens": 0, "csrf_sessions": 0}
            if kind in ("all", "oauth"):
                expired["oauth_tokens"] = len(self._tokens)
                self._tokens.clear()
            if kind in ("all", "csrf"):
                expired["csrf_sessions"] = len(self._sessions)
                self._sessions.clear()
            logger.info("%s sandbox: expired %s", self.service.name, expired)
            return expired

    @property
    def data_version(self) -> int:
        """Counter of data changes; cached ``$filter``/``$orderby`` results are keyed by it."""
        return self._version

    def data_changed(self) -> None:
        """Call after changing rows outside a request: bumps the version and drops cached results."""
        self._version += 1
        self._results.clear()

    def join_system(self, primary: ODataSandbox) -> None:
        """Serve as another service of ``primary``'s SAP system (see :class:`ODataSystem`).

        One system has one logon: the same users and OAuth client, one token store behind the one
        token endpoint, one set of CSRF sessions (the session cookie names the system and client),
        one clock and one fault layer.
        """
        if (self.sap_client, self.session_cookie) != (primary.sap_client, primary.session_cookie):
            raise ValueError("services of one system share the SAP client and the system id")
        self.username, self.password = primary.username, primary.password
        self.client_id, self.client_secret = primary.client_id, primary.client_secret
        self.token_ttl_s, self.csrf_ttl_s = primary.token_ttl_s, primary.csrf_ttl_s
        self._tokens = primary._tokens
        self._sessions = primary._sessions
        self._clock = primary.now
        self._clock_offset = timedelta(0)
        self._system = primary
        self.faults = primary.faults
        self.lock = primary.lock

    def delete_rows(self, set_name: str, indices: Iterable[int]) -> None:
        """Remove rows of one entity set and re-point every navigation link into that set.

        Links to a deleted row disappear (a single-valued one becomes ``-1``); the deleted rows'
        own links go with them. Children are not deleted: a service deletes them explicitly
        (each set with its own call), as a composition in SAP deletes its items.
        """
        remap = self.tables[set_name].delete(indices)
        for table in self.tables.values():
            for nav in table.etype.navs:
                if nav.target == set_name:
                    table.links[nav.name] = [remap(link) for link in table.links[nav.name]]
        self.data_changed()

    # -- hooks for a service -------------------------------------------------------------------

    def on_update(self, table: Table, index: int, row: list[Any], changes: Mapping[str, Any], user: str) -> None:
        """Service write rules, called with the type-checked ``changes`` already applied to ``row``.

        Raise :class:`ODataError` (e.g. :func:`bad_request`) to refuse the update; derive
        dependent fields (in ``row`` or in other tables) and stamp the change here. The default
        bumps the ETag so that ``If-Match`` with the old one fails afterwards.
        """
        etag_at = table.etype.etag_at
        if etag_at >= 0:
            row[etag_at] = next_etag(row[etag_at], self.now())

    def on_create(self, entity: NewEntity, user: str) -> None:
        """Service create rules, called with the type-checked tree of a ``POST`` (deep insert).

        Assign the keys the service numbers (``entity.values[...] = ...``, children too; child
        keys named like a parent property are filled from the parent afterwards), stamp and
        derive fields, add children SAP creates implicitly, or refuse with :class:`ODataError`.
        Nothing is stored until the hook returns. The default stores the tree as given.
        """

    def control_post(self, action: str, body: Mapping[str, Any]) -> SandboxResponse:
        """Answer ``POST /_sandbox/<name>/<action>`` for an action in :attr:`control_actions`.

        ``KeyError`` becomes 404 and ``ValueError``/``TypeError`` 400, with the message.
        """
        raise ValueError(f"no control action {action!r}")

    def control_get(self, action: str) -> SandboxResponse | None:
        """Answer ``GET /_sandbox/<name>/<action>`` besides ``info``, or ``None`` when unknown."""
        return None

    def info(self) -> dict[str, Any]:
        """What ``GET /_sandbox/<name>/info`` shows."""
        return {
            "simulator": self.name,
            "service": self.service.name,
            "service_root": self.service_root,
            "token_path": TOKEN_PATH,
            "entities": {name: len(table.rows) for name, table in self.tables.items()},
            "seed": self.seed,
            "max_page_size": self.max_page_size,
            "username": self.username,
            "client_id": self.client_id,
            "sap_client": self.sap_client,
            "session_cookie": self.session_cookie,
            "now": self.now().isoformat(),
            "data_version": self._version,
            "faults": self.faults.switches.active(),
        }

    # -- control routes ------------------------------------------------------------------------

    def control_routes(self) -> list[str]:
        """The engine's control routes (listed by ``GET /_sandbox``)."""
        prefix = f"{CONTROL_PREFIX}/{self.name}"
        return [
            f"GET {prefix}/info",
            f'POST {prefix}/expire-tokens {{"kind": "all" | "oauth" | "csrf"}}',
            f'POST {prefix}/clock {{"advance_s": seconds}}',
        ]

    def handle_control(self, req: SandboxRequest) -> SandboxResponse | None:
        """``/_sandbox/<name>/*`` routes: the engine's and the service's."""
        route = req.path.rstrip("/")
        prefix = f"{CONTROL_PREFIX}/{self.name}/"
        if not route.startswith(prefix):
            return None
        action = route[len(prefix) :]
        if req.method == "GET":
            return SandboxResponse.json(200, self.info()) if action == "info" else self.control_get(action)
        if req.method != "POST" or action not in ("expire-tokens", "clock", *self.control_actions):
            return None
        body, error = control_json_body(req)
        if error is not None:
            return error
        try:
            if action == "expire-tokens":
                return SandboxResponse.json(200, {"expired": self.expire_tokens(str(body.get("kind", "all")))})
            if action == "clock":
                advance = body.get("advance_s", 0)
                if not isinstance(advance, int | float) or isinstance(advance, bool):
                    raise ValueError("advance_s must be a number of seconds")
                return SandboxResponse.json(200, {"now": self.advance_clock(float(advance)).isoformat()})
            return self.control_post(action, body)
        except KeyError as exc:
            return SandboxResponse.json(404, {"error": f"unknown {self.control_subject} {exc}"})
        except (TypeError, ValueError) as exc:
            return SandboxResponse.json(400, {"error": str(exc)})

    # -- fault responses in SAP's shapes -------------------------------------------------------

    def unauthorized_response(self, req: SandboxRequest) -> SandboxResponse:
        """401 exactly like a failed logon (used by the ``expire_tokens`` fault too)."""
        if req.path == TOKEN_PATH:
            return SandboxResponse.json(
                401,
                {"error": "invalid_client", "error_description": "Bad client credentials"},
                [("www-authenticate", _REALM)],
            )
        return self._unauthorized(bearer=(req.headers.get("authorization") or "").lower().startswith("bearer"))

    def commits(self, req: SandboxRequest, resp: SandboxResponse) -> bool:
        """A successful write to the service; fetching an OAuth token changes no data."""
        return req.path != TOKEN_PATH and super().commits(req, resp)

    def rate_limited_response(self, req: SandboxRequest, retry_after: str | None) -> SandboxResponse:
        """429 as SAP API Management (in front of the backend) answers a spike arrest."""
        headers = [("retry-after", retry_after)] if retry_after is not None else []
        return SandboxResponse.json(
            429,
            {
                "fault": {
                    "faultstring": "Rate limit quota violation. Quota limit exceeded. Identifier : _default",
                    "detail": {"errorcode": "policies.ratelimit.QuotaViolation"},
                }
            },
            headers,
        )

    def server_error_response(self, req: SandboxRequest, status: int, retry_after: str | None) -> SandboxResponse:
        """500 from the Gateway (OData error body); 502/503/504 from the ICM / web dispatcher (HTML)."""
        headers = [("retry-after", retry_after)] if retry_after is not None else []
        if status == 500:
            resp = self._error_body(
                req,
                ODataError(
                    500, _CODE_SERVER, "In the context of Data Services an unknown internal server error occurred"
                ),
            )
            resp.headers.extend(headers)
            return resp
        reason = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}.get(status, "Server Error")
        html = (
            f"<html><head><title>{status} {reason}</title></head><body><h2>{status} {reason}</h2>"
            "<p>The request was rejected by the HTTP filter or the ICM could not reach the application "
            "server. Contact your SAP administrator.</p></body></html>"
        )
        return SandboxResponse.text(status, html, "text/html; charset=utf-8", headers)

    # -- request handling ----------------------------------------------------------------------

    def handle(self, req: SandboxRequest) -> SandboxResponse:
        """Answer one API request (auth, CSRF, OData routes, token endpoint)."""
        if req.path == TOKEN_PATH:
            return self._token_endpoint(req)
        root = self.service_root
        if req.path.startswith(root) or req.path == root[:-1]:
            return self._odata(req)
        return SandboxResponse.text(404, _ICF_404, "text/html; charset=utf-8")

    def _odata(self, req: SandboxRequest) -> SandboxResponse:
        method = req.method
        if method == "POST" and req.headers.get("x-http-method"):
            method = (req.headers.get("x-http-method") or "").upper()
        user = self._authenticate(req)
        if isinstance(user, SandboxResponse):
            return user
        root = self.service_root
        rel = req.path[len(root) :] if req.path.startswith(root) else ""
        try:
            if method in _MODIFYING:
                denied = self._check_csrf(req, user)
                if denied is not None:
                    return denied
            resp = self._route(req, method, rel, user)
        except ODataError as exc:
            resp = self._error_body(req, exc)
        if method in ("GET", "HEAD") and (req.headers.get("x-csrf-token") or "").lower() == "fetch":
            resp.headers.extend(self._csrf_fetch(req, user))
        if method == "HEAD":
            resp.body = b""
        resp.headers.append(("dataserviceversion", "2.0"))
        return resp

    def _route(self, req: SandboxRequest, method: str, rel: str, user: str) -> SandboxResponse:
        if method not in ("GET", "HEAD", "PATCH", "MERGE", "PUT", "POST", "DELETE"):
            raise ODataError(405, _CODE_METHOD, f"Method '{method}' is not allowed")
        if rel in ("", "/"):
            self._only_reads(method)
            return self._service_document(req)
        if rel == "$metadata":
            self._only_reads(method)
            return SandboxResponse(200, [("content-type", _XML_CT)], self._metadata)
        if rel == "$batch":
            if method != "POST":
                raise ODataError(405, _CODE_METHOD, f"Method '{method}' is not allowed on $batch")
            return self._batch(req, user)
        match = _RESOURCE_RE.fullmatch(rel)
        if match is None:
            raise ODataError(404, _CODE_NOT_FOUND, f"Resource not found for segment '{rel.split('/')[0]}'")
        table = self.tables.get(match.group("set"))
        if table is None:
            raise ODataError(404, _CODE_NOT_FOUND, f"Resource not found for segment '{match.group('set')}'")
        key_text, nav_name, count = match.group("key"), match.group("nav"), match.group("count")
        if method == "POST" and key_text is None and nav_name is None and not count:
            if table.etype.set_name not in self.service.creatable:
                raise ODataError(405, _CODE_METHOD, f"Entity set '{table.etype.set_name}' does not support creates")
            return self._create(req, table, user)
        if method in ("PATCH", "MERGE"):
            updatable = self.service.updatable
            if table.etype.set_name not in updatable or key_text is None or nav_name or count:
                targets = " and ".join(f"{name}('<id>')" for name in sorted(updatable)) or "no entity set"
                raise ODataError(405, _CODE_METHOD, f"Updates are supported on {targets} only, not on '{rel}'")
            return self._update(req, table, _parse_key(table.etype, key_text), user)
        self._only_reads(method)
        if not count:  # SAP Gateway answers $count as text/plain whatever the Accept header says
            _negotiate(req)
        query = _parse_query(req)
        if key_text is None:
            if nav_name is not None:
                raise ODataError(404, _CODE_NOT_FOUND, f"Resource not found for segment '{nav_name}'")
            return self._count(req, table, None, query) if count else self._collection(req, table, None, query)
        index = table.find(_parse_key(table.etype, key_text))
        if index is None:
            raise ODataError(404, _CODE_NOT_FOUND, f"Resource not found for segment '{table.etype.name}'")
        if nav_name is None:
            if count:
                raise bad_request("$count is only allowed on collections")
            return self._entity(req, table, index, query)
        nav = table.etype.nav.get(nav_name)
        if nav is None:
            raise ODataError(404, _CODE_NOT_FOUND, f"Resource not found for segment '{nav_name}'")
        target = self.tables[nav.target]
        link = table.links[nav_name][index]
        if nav.many:
            base = list(link)
            return self._count(req, target, base, query) if count else self._collection(req, target, base, query)
        if count:
            raise bad_request("$count is only allowed on collections")
        if link < 0:
            raise ODataError(404, _CODE_NOT_FOUND, f"Resource not found for segment '{nav_name}'")
        return self._entity(req, target, link, query)

    @staticmethod
    def _only_reads(method: str) -> None:
        if method not in ("GET", "HEAD"):
            raise ODataError(405, _CODE_METHOD, f"Method '{method}' is not allowed on this resource")

    # -- reads ---------------------------------------------------------------------------------

    def _service_document(self, req: SandboxRequest) -> SandboxResponse:
        names = sorted(self.tables)
        if _wants_json(req):
            return SandboxResponse(200, [("content-type", _JSON_CT)], dumps({"d": {"EntitySets": names}}))
        base = quoteattr(req.base_url + self.service_root)
        collections = "".join(
            f'<app:collection href="{n}"><atom:title>{n}</atom:title></app:collection>' for n in names
        )
        xml = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<app:service xml:base={base} xmlns:app="http://www.w3.org/2007/app" xmlns:atom="http://www.w3.org/2005/Atom">'
            f"<app:workspace><atom:title>Data</atom:title>{collections}</app:workspace></app:service>"
        )
        return SandboxResponse.text(200, xml, _XML_CT)

    def _shape(self, table: Table, query: _Query) -> _Shape:
        select = _parse_select(query.select, table.etype, self.tables) if query.select else None
        expand = _parse_expand(query.expand, table.etype, self.tables) if query.expand else {}
        return _build_shape(table, select, expand, self.tables)

    def _entity(self, req: SandboxRequest, table: Table, index: int, query: _Query) -> SandboxResponse:
        shape = self._shape(table, query)
        body = {"d": _renderer(shape, req.base_url + self.service_root)(index)}
        headers = [("content-type", _JSON_CT)]
        if table.etype.has_etag:
            headers.append(("etag", table.etype.etag_of(table.rows[index])))
        return SandboxResponse(200, headers, dumps(body))

    def _count(self, req: SandboxRequest, table: Table, base: list[int] | None, query: _Query) -> SandboxResponse:
        return SandboxResponse.text(200, str(len(self._resolve(table, base, query.filter, None))))

    def _collection(self, req: SandboxRequest, table: Table, base: list[int] | None, query: _Query) -> SandboxResponse:
        with gc_paused():
            return self._collection_page(req, table, base, query)

    def _collection_page(
        self, req: SandboxRequest, table: Table, base: list[int] | None, query: _Query
    ) -> SandboxResponse:
        shape = self._shape(table, query)
        ids = self._resolve(table, base, query.filter, query.orderby)
        total = len(ids)
        limit = total if query.top is None else min(total, query.skip + query.top)
        start = min(query.skip, total)
        if query.skiptoken is not None:
            start = self._decode_skiptoken(table, ids, query.skiptoken)
        end = max(start, min(limit, start + self.max_page_size))
        render = _renderer(shape, req.base_url + self.service_root)
        payload: dict[str, Any] = {}
        if query.inlinecount:
            payload["__count"] = str(total)
        payload["results"] = [render(i) for i in ids[start:end]]
        if end < limit:
            payload["__next"] = self._next_link(req, table, ids, end)
        return SandboxResponse(200, [("content-type", _JSON_CT)], dumps({"d": payload}))

    def _resolve(
        self, table: Table, base: list[int] | None, filter_text: str | None, orderby: str | None
    ) -> list[int] | range:
        """Row indices matching ``$filter`` in ``$orderby`` order (cached per data version)."""
        if base is None and not filter_text and not orderby:
            return range(len(table.rows))
        if base is None and filter_text:
            seek = self._key_seek(table, filter_text, orderby)
            if seek is not None:
                return seek
        key = (table.etype.set_name, filter_text, orderby, self._version, len(table.rows))
        if base is None:
            cached = self._results.get(key)
            if cached is not None:
                self._results.move_to_end(key)
                return cached
        ids: list[int] = list(range(len(table.rows))) if base is None else list(base)
        compiler = _FilterCompiler(self.tables, table)
        if filter_text:
            predicate = compiler.compile(filter_text)
            ids = [i for i in ids if predicate(i)]
        if orderby:
            self._sort(compiler, ids, orderby)
        if base is None:
            self._results[key] = ids
            while len(self._results) > _RESULT_CACHE_SIZE:
                self._results.popitem(last=False)
        return ids

    def _key_seek(self, table: Table, filter_text: str, orderby: str | None) -> list[int] | None:
        """`[(<filter>) and ]<Key> gt '<k>'` ordered by the key: seek in the cached result, as an index would.

        Keyset paging sends a new `$filter` for every page; evaluating it row by row would cost the
        simulator a full scan per page, which a real SAP's database does not pay.
        """
        keys = table.etype.keys
        if len(keys) != 1 or (orderby or "").replace(" asc", "").strip() != keys[0]:
            return None
        match = _KEY_SEEK_RE.fullmatch(filter_text)
        if match is None or match.group("key") != keys[0]:
            return None
        rest = match.group("rest")
        if rest is not None:
            root = _FilterParser(filter_text).parse()
            right = root.args[1] if root.kind == "bin" and root.name == "and" else None
            if right is None or right.kind != "bin" or right.name != "gt" or right.args[0].kind != "member":
                return None  # `a or b and K gt 'x'` does not split at its last `and`
        ids = self._resolve(table, None, rest, orderby)
        after = match.group("value").replace("''", "'")
        key_of = table.key_of
        rows = table.rows
        return list(ids[bisect_right(ids, after, key=lambda i: key_of(rows[i])) :])

    @staticmethod
    def _sort(compiler: _FilterCompiler, ids: list[int], orderby: str) -> None:
        keys = []
        for item in orderby.split(","):
            parts = item.split()
            if not parts or len(parts) > 2 or (len(parts) == 2 and parts[1] not in ("asc", "desc")):
                raise bad_request(f"Invalid $orderby item '{item.strip()}'")
            _edm, accessor = compiler.member(parts[0], 0, "$orderby")
            keys.append((accessor, len(parts) == 2 and parts[1] == "desc"))
        # Stable sorts from the least significant key; the row order (key order) breaks ties.
        # Nulls sort first ascending and last descending, as HANA does.
        for accessor, descending in reversed(keys):
            values = [accessor(i) for i in ids]
            if None in values:
                decorated = sorted(
                    zip([(v is not None, v) for v in values], ids, strict=True), key=itemgetter(0), reverse=descending
                )
            else:
                decorated = sorted(zip(values, ids, strict=True), key=itemgetter(0), reverse=descending)
            ids[:] = [i for _, i in decorated]

    def _next_link(self, req: SandboxRequest, table: Table, ids: Sequence[int], end: int) -> str:
        anchor = table.key_path(table.rows[ids[end - 1]])
        token = base64.urlsafe_b64encode(f"{end}|{anchor}".encode()).decode().rstrip("=")
        pairs = [(k, v) for k, v in req.query if k != "$skiptoken"]
        pairs.append(("$skiptoken", token))
        return f"{req.base_url}{quote(req.path, safe=_PATH_SAFE)}?{_encode_query(pairs)}"

    def _decode_skiptoken(self, table: Table, ids: Sequence[int], token: str) -> int:
        """Offset to resume at; if rows moved since the token was made, resume after its anchor row."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            offset_text, _, anchor = raw.partition("|")
            offset = int(offset_text)
        except (ValueError, UnicodeDecodeError):
            raise bad_request(f"Invalid $skiptoken '{token}'") from None
        if offset < 0:
            raise bad_request(f"Invalid $skiptoken '{token}'")
        if 0 < offset <= len(ids) and table.key_path(table.rows[ids[offset - 1]]) == anchor:
            return offset
        for position, i in enumerate(ids):
            if table.key_path(table.rows[i]) == anchor:
                return position + 1
        return min(offset, len(ids))

    # -- writes --------------------------------------------------------------------------------

    def _update(self, req: SandboxRequest, table: Table, key: tuple[str, ...], user: str) -> SandboxResponse:
        etype = table.etype
        index = table.find(key)
        if index is None:
            raise ODataError(404, _CODE_NOT_FOUND, f"Resource not found for segment '{etype.name}'")
        row = list(table.rows[index])
        etag_at = etype.etag_at
        if etag_at >= 0:
            # SAP: when an entity has an ETag, updates must quote it.
            if_match = req.headers.get("if-match")
            if not if_match:
                raise ODataError(
                    428, _CODE_PRECONDITION, "Precondition required: send the entity's ETag in the If-Match header"
                )
            if not _etag_matches(if_match, etype.etag_of(row)):
                raise ODataError(
                    412,
                    _CODE_PRECONDITION,
                    "Precondition failed: the entity was changed by someone else (ETag mismatch)",
                )
        try:
            payload = req.json()
        except ValueError:
            raise bad_request("The request body is not valid JSON") from None
        if isinstance(payload, dict) and set(payload) == {"d"} and isinstance(payload["d"], dict):
            payload = payload["d"]
        if not isinstance(payload, dict):
            raise bad_request("The request body must be a JSON object with the properties to change")
        changes = _validate_changes(etype, row, payload)
        if changes:
            for name, value in changes.items():
                row[etype.index[name]] = value
            self.on_update(table, index, row, changes, user)
            table.replace(index, tuple(row))
            self._version += 1
        return SandboxResponse(204, [("etag", etype.etag_of(row))] if etag_at >= 0 else [])

    def _create(self, req: SandboxRequest, table: Table, user: str) -> SandboxResponse:
        """``POST <set>``: validate the tree, let the service number and check it, store it, answer 201."""
        payload = _payload_object(req, "the properties of the new entity")
        entity = _parse_new_entity(self.tables, table, payload, "")
        self.on_create(entity, user)
        _inherit_keys(entity)
        _check_new_keys(entity, {})
        self._stamp_fresh_etags(entity)
        self._store_new(entity)
        self._version += 1
        service_url = req.base_url + self.service_root
        shape = _build_shape(table, None, _expand_tree(entity), self.tables)
        body = {"d": _renderer(shape, service_url)(entity.index)}
        row = table.rows[entity.index]
        headers = [("content-type", _JSON_CT), ("location", service_url + table.key_path(row))]
        if table.etype.has_etag:
            headers.append(("etag", table.etype.etag_of(row)))
        return SandboxResponse(201, headers, dumps(body))

    def _stamp_fresh_etags(self, entity: NewEntity) -> None:
        """New entities with an ETag get one now, unless the service assigned it."""
        etype = entity.table.etype
        if etype.has_etag and not entity.values.get(etype.etag_property):
            now = self.now()
            if etype.prop[etype.etag_property].edm == "Edm.DateTimeOffset":
                entity.values[etype.etag_property] = f"/Date({_ms_of(now)}+0000)/"
            else:
                entity.values[etype.etag_property] = make_etag(now, 1)
        for children in entity.children.values():
            for child in children:
                self._stamp_fresh_etags(child)

    def _store_new(self, entity: NewEntity) -> int:
        """Append a new entity's row, then its children's, and link them; returns its row index."""
        table = entity.table
        etype = table.etype
        row = _defaults(etype)
        for name, value in entity.values.items():
            row[etype.index[name]] = value
        entity.index = table.append(tuple(row))
        for nav_name, children in entity.children.items():
            indices = tuple(self._store_new(child) for child in children)
            table.links[nav_name][entity.index] = indices if etype.nav[nav_name].many else (indices or (-1,))[0]
        return entity.index

    # -- $batch --------------------------------------------------------------------------------

    def _batch(self, req: SandboxRequest, user: str) -> SandboxResponse:
        """``POST $batch``: retrieve parts and change sets, answered ``202`` with a part each, in order.

        The outer request was authenticated and its CSRF token checked (inner parts carry none).
        A change set is atomic: the first failing request undoes the set's earlier changes and is
        the set's whole answer; the batch's other parts still run.
        """
        boundary = multipart_boundary(req.headers.get("content-type") or "")
        items: list[_BatchRequest | list[_BatchRequest]] = []
        for part_headers, content in multipart_parts(req.body, boundary):
            ctype = part_headers.get("content-type") or ""
            if ctype.split(";", 1)[0].strip().lower() == "multipart/mixed":
                changeset = [_batch_request(h, c) for h, c in multipart_parts(content, multipart_boundary(ctype))]
                for inner in changeset:
                    if inner.method not in _MODIFYING:
                        raise bad_request(f"A change set holds modifying requests only, not {inner.method} {inner.url}")
                items.append(changeset)
            else:
                single = _batch_request(part_headers, content)
                if single.method != "GET":
                    raise bad_request(f"{single.method} {single.url} must be sent inside a change set")
                items.append(single)
        total = sum(len(item) if isinstance(item, list) else 1 for item in items)
        if total > MAX_BATCH_PARTS:
            raise bad_request(f"A $batch holds at most {MAX_BATCH_PARTS} requests; this one holds {total}")
        answer_boundary = f"batch_{uuid.uuid4()}"
        parts: list[bytes] = []
        for item in items:
            if isinstance(item, list):
                parts.append(self._changeset(req, item, user))
            else:
                parts.append(_http_part(self._batch_dispatch(req, item, user, {})))
        return SandboxResponse(202, [("content-type", f"multipart/mixed; boundary={answer_boundary}")], _multipart(answer_boundary, parts))

    def _changeset(self, req: SandboxRequest, requests: Sequence[_BatchRequest], user: str) -> bytes:
        """Run one change set all or nothing; its answer part (a nested multipart, or the one error)."""
        lengths = {name: len(table.rows) for name, table in self.tables.items()}
        for table in self.tables.values():
            table.journal = {}
        answers: list[tuple[SandboxResponse, str | None]] = []
        locations: dict[str, str] = {}
        failed: SandboxResponse | None = None
        failed_id: str | None = None
        try:
            for inner in requests:
                resp = self._batch_dispatch(req, inner, user, locations)
                if resp.status >= 400:
                    failed, failed_id = resp, inner.content_id
                    break
                location = resp.header("location")
                if inner.content_id and location:
                    locations[inner.content_id] = location
                answers.append((resp, inner.content_id))
        except BaseException:
            self._undo(lengths)
            raise
        finally:
            journals = {name: table.journal for name, table in self.tables.items()}
            for table in self.tables.values():
                table.journal = None
        if failed is not None:
            self._undo(lengths, journals)
            return _http_part(failed, failed_id)
        boundary = f"changeset_{uuid.uuid4()}"
        nested = _multipart(boundary, [_http_part(resp, content_id) for resp, content_id in answers])
        return f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n".encode() + nested

    def _undo(self, lengths: Mapping[str, int], journals: Mapping[str, dict[int, tuple[Any, ...]] | None] | None = None) -> None:
        """Put the tables back as a change set found them: replaced rows restored, appended rows removed."""
        for name, table in self.tables.items():
            journal = (journals or {}).get(name) if journals is not None else table.journal
            for index, row in (journal or {}).items():
                if index < lengths[name]:
                    table.rows[index] = row
            table.invalidate()
        for name, table in self.tables.items():
            if len(table.rows) > lengths[name]:
                self.delete_rows(name, range(lengths[name], len(table.rows)))
        self.data_changed()

    def _batch_dispatch(
        self, req: SandboxRequest, inner: _BatchRequest, user: str, locations: Mapping[str, str]
    ) -> SandboxResponse:
        """One request of a batch through the same routes as a single request (the outer request's logon)."""
        url = inner.url
        if url.startswith("$") and url[1:].split("/", 1)[0] in locations:
            # A change set refers to an entity created earlier in it by its Content-ID.
            ref, _, rest = url[1:].partition("/")
            url = locations[ref] + ("/" + rest if rest else "")
        root = self.service_root
        full_prefix = req.base_url + root
        if url.startswith(full_prefix):
            url = url[len(full_prefix) :]
        elif url.startswith(root):
            url = url[len(root) :]
        path, _, query = url.partition("?")
        headers = list(inner.headers)
        names = {k.lower() for k, _v in headers}
        for name in ("accept", "accept-language", "sap-client"):
            value = req.headers.get(name)
            if name not in names and value is not None:
                headers.append((name, value))
        sub = SandboxRequest(
            inner.method, root + path, parse_qsl(query, keep_blank_values=True), Headers(headers), inner.body,
            scheme=req.scheme, host=req.host,
        )
        try:
            return self._route(sub, inner.method, path, user)
        except ODataError as exc:
            return self._error_body(sub, exc)

    # -- authentication, OAuth, CSRF -----------------------------------------------------------

    def _authenticate(self, req: SandboxRequest) -> str | SandboxResponse:
        """The logged-on user, or the 401 answer."""
        client = req.query_get("sap-client")
        header = req.headers.get("authorization") or ""
        scheme, _, credentials = header.partition(" ")
        scheme = scheme.lower()
        if client is not None and client != self.sap_client:
            return self._unauthorized(bearer=scheme == "bearer")
        if scheme == "basic":
            try:
                user, _, password = base64.b64decode(credentials.strip(), validate=True).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return self._unauthorized()
            if _same(user.upper(), self.username.upper()) and _same(password, self.password):
                return self.username
            return self._unauthorized()
        if scheme == "bearer":
            entry = self._tokens.get(credentials.strip())
            if entry is not None and entry.expires_at > self.now().timestamp():
                return entry.user
            return self._unauthorized(bearer=True)
        return self._unauthorized()

    def _unauthorized(self, bearer: bool = False) -> SandboxResponse:
        headers = [("www-authenticate", _REALM)]
        if bearer:
            headers.append(
                (
                    "www-authenticate",
                    'Bearer error="invalid_token", error_description="The access token is invalid or has expired"',
                )
            )
        html = (
            '<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
            "<title>Logon Error Message</title></head><body><h2>401 Unauthorized</h2>"
            "<p>Logon failed. The user name or password (or access token) is incorrect, or the account is locked.</p>"
            f"<p>Server time: {self.now():%Y-%m-%d %H:%M:%S} UTC</p></body></html>"
        )
        return SandboxResponse.text(401, html, "text/html; charset=utf-8", headers)

    def _token_endpoint(self, req: SandboxRequest) -> SandboxResponse:
        no_store = [("cache-control", "no-store"), ("pragma", "no-cache")]
        if req.method != "POST":
            return SandboxResponse.json(405, {"error": "invalid_request", "error_description": "use POST"}, no_store)
        form = dict(parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True))
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        header = req.headers.get("authorization") or ""
        if header.lower().startswith("basic "):
            try:
                client_id, _, client_secret = (
                    base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
                )
            except (ValueError, UnicodeDecodeError):
                client_id = client_secret = ""
        if not (_same(client_id, self.client_id) and _same(client_secret, self.client_secret)):
            return SandboxResponse.json(
                401,
                {"error": "invalid_client", "error_description": "Bad client credentials"},
                [("www-authenticate", _REALM), *no_store],
            )
        if form.get("grant_type") != "client_credentials":
            return SandboxResponse.json(
                400,
                {"error": "unsupported_grant_type", "error_description": "grant_type must be client_credentials"},
                no_store,
            )
        now = self.now().timestamp()
        if len(self._tokens) > 1000:
            self._tokens = {t: e for t, e in self._tokens.items() if e.expires_at > now}
        token = secrets.token_urlsafe(32)
        self._tokens[token] = _AccessToken(client_id, self.username, now + self.token_ttl_s)
        body = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.token_ttl_s,
            "scope": f"{self.service.name}_{self.service.version}",
        }
        return SandboxResponse.json(200, body, no_store)

    def _session_from_cookie(self, req: SandboxRequest) -> tuple[str | None, _Session | None]:
        for header in req.headers.get_all("cookie"):
            for part in header.split(";"):
                name, _, value = part.strip().partition("=")
                if name == self.session_cookie:
                    return value, self._sessions.get(value)
        return None, None

    def _csrf_fetch(self, req: SandboxRequest, user: str) -> list[tuple[str, str]]:
        now = self.now().timestamp()
        sid, session = self._session_from_cookie(req)
        if session is None or session.user != user or session.expires_at <= now:
            sid = secrets.token_urlsafe(24)
            session = _Session(base64.b64encode(secrets.token_bytes(16)).decode(), user, now + self.csrf_ttl_s)
            self._sessions[sid] = session
            while len(self._sessions) > 10_000:
                self._sessions.popitem(last=False)
        return [
            ("x-csrf-token", session.token),
            ("set-cookie", f"{self.session_cookie}={sid}; path=/; HttpOnly"),
            ("set-cookie", f"sap-usercontext=sap-client={self.sap_client}; path=/"),
        ]

    def _check_csrf(self, req: SandboxRequest, user: str) -> SandboxResponse | None:
        token = req.headers.get("x-csrf-token") or ""
        _sid, session = self._session_from_cookie(req)
        valid = (
            session is not None
            and token.lower() != "fetch"
            and _same(token, session.token)
            and session.user == user
            and session.expires_at > self.now().timestamp()
        )
        if valid:
            return None
        return SandboxResponse.text(403, "CSRF token validation failed", headers=[("x-csrf-token", "Required")])

    # -- errors --------------------------------------------------------------------------------

    def _error_body(self, req: SandboxRequest, exc: ODataError) -> SandboxResponse:
        """SAP Gateway error body: JSON for JSON clients, the V2 XML error otherwise."""
        self._txn += 1
        stamp = self.now()
        txn = _transaction_id(f"{self.seed}:{self._txn}:{exc.message}")
        timestamp = f"{stamp:%Y%m%d%H%M%S}.{stamp.microsecond:06d}0"
        if _wants_json(req):
            body = {
                "error": {
                    "code": exc.code,
                    "message": {"lang": "en", "value": exc.message},
                    "innererror": {
                        "application": {
                            "component_id": self.service.component_id,
                            "service_namespace": "/SAP/",
                            "service_id": self.service.name,
                            "service_version": self.service.version,
                        },
                        "transactionid": txn,
                        "timestamp": timestamp,
                        "Error_Resolution": {"SAP_Transaction": _SAP_TRANSACTION, "SAP_Note": _SAP_NOTE},
                        "errordetails": [
                            {"code": code, "message": message, "propertyref": "", "severity": "error", "target": target}
                            for code, message, target in (exc.details or [(exc.code, exc.message, "")])
                        ],
                    },
                }
            }
            return SandboxResponse(exc.status, [("content-type", _JSON_CT), *exc.headers], dumps(body))
        xml = (
            '<?xml version="1.0" encoding="utf-8"?>'
            '<error xmlns="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata">'
            f'<code>{xml_escape(exc.code)}</code><message xml:lang="en">{xml_escape(exc.message)}</message>'
            f"<innererror><transactionid>{txn}</transactionid><timestamp>{timestamp}</timestamp></innererror></error>"
        )
        return SandboxResponse(exc.status, [("content-type", _XML_CT), *exc.headers], xml.encode())


def value_problem(name: str, prop: Prop, value: Any) -> str | None:
    """Why ``value`` does not fit property ``prop`` (its type, length or nullability), or ``None``."""
    if value is None:
        return None if prop.nullable else f"Property '{name}' must not be null"
    if prop.edm == "Edm.Boolean":
        if not isinstance(value, bool):
            return f"Invalid value for property '{name}': expected true or false"
    elif prop.edm == "Edm.String":
        if not isinstance(value, str) or any(ord(ch) < 32 for ch in value):
            return f"Invalid value for property '{name}': expected a string"
        if prop.max_length is not None and len(value) > prop.max_length:
            return f"Value for property '{name}' is longer than {prop.max_length} characters"
    elif prop.edm == "Edm.DateTime":
        if not isinstance(value, str) or not _DATE_WIRE_RE.fullmatch(value):
            return f"Invalid value for property '{name}': expected \"/Date(<ms>)/\""
    elif prop.edm == "Edm.DateTimeOffset":
        if not isinstance(value, str) or not _DTO_WIRE_RE.fullmatch(value):
            return f"Invalid value for property '{name}': expected \"/Date(<ms>+0000)/\""
    elif prop.edm == "Edm.Int32":
        if isinstance(value, bool) or not isinstance(value, int) or not -(2**31) <= value < 2**31:
            return f"Invalid value for property '{name}': expected a 32-bit integer"
    elif prop.edm == "Edm.Decimal":
        if not isinstance(value, str) or _typed_or_none(_parse_decimal, value) is None:
            return f"Invalid value for property '{name}': expected a decimal number as a string"
    elif prop.edm == "Edm.Time":
        if not isinstance(value, str) or _typed_or_none(parse_wire_time, value) is None:
            return f"Invalid value for property '{name}': expected a duration such as \"PT14H30M00S\""
    elif prop.edm == "Edm.Guid":
        if not isinstance(value, str) or _typed_or_none(uuid.UUID, value) is None:
            return f"Invalid value for property '{name}': expected a GUID"
    return None


def _validate_changes(etype: EntityType, row: Sequence[Any], payload: Mapping[str, Any]) -> dict[str, Any]:
    """The properties an update really changes, each checked against its declaration (else 400)."""
    changes: dict[str, Any] = {}
    for name, value in payload.items():
        if name == "__metadata":
            continue
        if name in etype.nav:
            raise bad_request(f"Deep update of navigation property '{name}' is not supported")
        prop = etype.prop.get(name)
        if prop is None:
            raise bad_request(f"Property '{name}' is invalid")
        current = row[etype.index[name]]
        if not prop.updatable:
            if value != current:
                raise bad_request(f"Property '{name}' is read-only and cannot be changed")
            continue
        problem = value_problem(name, prop, value)
        if problem is not None:
            raise bad_request(problem)
        if value != current:
            changes[name] = value
    return changes


# ============================================================================================
# Creates: a POST's payload as a tree of new entities (deep insert)
# ============================================================================================


@dataclass
class NewEntity:
    """One entity of a create (``POST``), before it is stored; children come from a deep insert.

    ``values`` holds the properties the payload set (type-checked) and those the service's
    :meth:`ODataSandbox.on_create` assigns; every other property gets SAP's initial value.
    ``children`` maps a navigation property to the entities created under it (at most one for
    a single-valued navigation). ``path`` names the entity in error targets, for example
    ``to_BusinessPartnerAddress[0]``; ``index`` is its row once stored.
    """

    table: Table
    values: dict[str, Any]
    children: dict[str, list[NewEntity]] = field(default_factory=dict)
    path: str = ""
    index: int = -1

    def get(self, name: str) -> Any:
        """A property's value: set by the payload or the service, else its initial value."""
        if name in self.values:
            return self.values[name]
        etype = self.table.etype
        return _defaults(etype)[etype.index[name]]

    def kids(self, nav: str) -> list[NewEntity]:
        """The entities created under navigation ``nav`` (empty when none were given)."""
        return self.children.get(nav, [])

    def target(self, name: str) -> str:
        """Error target for one of this entity's properties: ``to_X[0]/Name``."""
        return f"{self.path}/{name}" if self.path else name


def _payload_object(req: SandboxRequest, what: str) -> dict[str, Any]:
    """A request body as a JSON object, unwrapped from ``{"d": {...}}``."""
    try:
        payload = req.json()
    except ValueError:
        raise bad_request("The request body is not valid JSON") from None
    if isinstance(payload, dict) and set(payload) == {"d"} and isinstance(payload["d"], dict):
        payload = payload["d"]
    if not isinstance(payload, dict):
        raise bad_request(f"The request body must be a JSON object with {what}")
    return payload


def _parse_new_entity(tables: Mapping[str, Table], table: Table, payload: Mapping[str, Any], path: str) -> NewEntity:
    """Type-check a create's payload against the declarations, children included (else 400).

    A collection-valued navigation takes a JSON array or ``{"results": [...]}`` (SAP Gateway
    accepts both); a single-valued one takes an object or ``null``.
    """
    etype = table.etype
    entity = NewEntity(table, {}, path=path)
    for name, value in payload.items():
        if name == "__metadata":
            continue
        where = f"{path}/{name}" if path else name
        nav = etype.nav.get(name)
        if nav is not None and isinstance(value, dict) and set(value) == {"__deferred"}:
            continue  # a read echoed back: the navigation is not part of the create
        if nav is not None:
            items: Any = value
            if nav.many and isinstance(value, dict) and set(value) == {"results"}:
                items = value["results"]
            if not nav.many:
                items = [] if value is None else [value]
            if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
                shape = "an array of objects or {\"results\": [...]}" if nav.many else "an object"
                message = f"Invalid value for navigation property '{name}': expected {shape}"
                raise ODataError(400, _CODE_BAD_REQUEST, message, details=[(_CODE_BAD_REQUEST, message, where)])
            target = tables[nav.target]
            entity.children[name] = [
                _parse_new_entity(tables, target, item, f"{where}[{n}]" if nav.many else where)
                for n, item in enumerate(items)
            ]
            continue
        prop = etype.prop.get(name)
        if prop is None:
            message = f"Property '{name}' is invalid for entity type '{etype.name}'"
            raise ODataError(400, _CODE_BAD_REQUEST, message, details=[(_CODE_BAD_REQUEST, message, where)])
        problem = value_problem(name, prop, value)
        if problem is None and not (prop.can_create or name in etype.keys) and value not in ("", None, False):
            problem = f"Property '{name}' is read-only and cannot be set on create"
        if problem is not None:
            raise ODataError(400, _CODE_BAD_REQUEST, problem, details=[(_CODE_BAD_REQUEST, problem, where)])
        entity.values[name] = value
    return entity


_URI_SAFE_KEY_RE = re.compile(r"[A-Za-z0-9_.:-]*")


def _inherit_keys(entity: NewEntity) -> None:
    """Children take key properties named like a property of their parent (``BusinessPartner``,
    ``AddressID``, ``SalesOrder``) from it, as SAP's deep insert fills the foreign key."""
    for children in entity.children.values():
        for child in children:
            for key in child.table.etype.keys:
                if key not in entity.table.etype.index:
                    continue
                inherited = entity.get(key)
                given = child.values.get(key)
                if given in (None, ""):
                    child.values[key] = inherited
                elif inherited not in (None, "") and given != inherited:
                    message = f"Key property '{key}' must be '{inherited}' like its parent's, not '{given}'"
                    raise ODataError(
                        400, _CODE_BAD_REQUEST, message, details=[(_CODE_BAD_REQUEST, message, child.target(key))]
                    )
            _inherit_keys(child)


def _check_new_keys(entity: NewEntity, seen: dict[str, set[Any]]) -> None:
    """Every new entity has a complete, URI-safe key that no row (old or new) has yet."""
    table = entity.table
    etype = table.etype
    key: list[Any] = []
    for name in etype.keys:
        value = entity.get(name)
        if not isinstance(value, str) or not _URI_SAFE_KEY_RE.fullmatch(value):
            message = f"Key property '{name}' of '{etype.name}' is missing or has characters a key cannot have"
            raise ODataError(400, _CODE_BAD_REQUEST, message, details=[(_CODE_BAD_REQUEST, message, entity.target(name))])
        key.append(value)
    taken = seen.setdefault(etype.set_name, set())
    lookup = tuple(key)
    if table.find(lookup) is not None or lookup in taken:
        text = ",".join(f"{k}='{v}'" for k, v in zip(etype.keys, key, strict=True))
        message = f"{etype.name}({text}) already exists"
        raise ODataError(400, _CODE_BAD_REQUEST, message, details=[(_CODE_BAD_REQUEST, message, entity.path)])
    taken.add(lookup)
    for children in entity.children.values():
        for child in children:
            _check_new_keys(child, seen)


def _expand_tree(entity: NewEntity) -> dict[str, Any]:
    """``$expand`` tree of the navigations a create filled, so the answer shows what was created."""
    tree: dict[str, Any] = {}
    for nav, children in entity.children.items():
        below = tree.setdefault(nav, {})
        for child in children:
            below.update(_expand_tree(child))
    return tree


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while a page is rendered.

    A page is tens of thousands of fresh, acyclic dicts; reference counting frees them, but
    the cyclic collector would traverse them again and again (~40% of the render time).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


_NO_ROWS = range(0)


def span(start: int, stop: int) -> range:
    """Row indices of children stored contiguously (a collection-valued link).

    Ranges are not tracked by the cyclic GC and need no int objects per element, unlike tuples.
    """
    return range(start, stop) if stop > start else _NO_ROWS


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _etag_matches(if_match: str, current: str) -> bool:
    candidates = [c.strip() for c in if_match.split(",")]
    bare = current[2:] if current.startswith("W/") else current
    return any(c == "*" or c == current or (c[2:] if c.startswith("W/") else c) == bare for c in candidates)


def _transaction_id(text: str) -> str:
    """Deterministic, SAP-looking 32-hex-digit transaction id."""
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest().upper()


# ============================================================================================
# $metadata
# ============================================================================================


def _metadata_xml(service: ODataService) -> str:
    """A small but valid EDMX (OData V2) describing exactly what the sandbox serves."""
    ns = service.namespace
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<edmx:Edmx Version="1.0" xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx" '
        'xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata" '
        'xmlns:sap="http://www.sap.com/Protocols/SAPData">',
        ' <edmx:DataServices m:DataServiceVersion="2.0">',
        f'  <Schema Namespace="{ns}" xml:lang="en" sap:schema-version="1" xmlns="http://schemas.microsoft.com/ado/2008/09/edm">',
    ]
    associations: list[tuple[str, EntityType, Nav]] = []
    for etype in service.entity_types:
        out.append(f'   <EntityType Name="{etype.name}" sap:content-version="1">')
        out.append("    <Key>" + "".join(f'<PropertyRef Name="{k}"/>' for k in etype.keys) + "</Key>")
        for prop in etype.props:
            attrs = [f'Name="{prop.name}"', f'Type="{prop.edm}"']
            if not prop.nullable:
                attrs.append('Nullable="false"')
            if prop.max_length is not None:
                attrs.append(f'MaxLength="{prop.max_length}"')
            if prop.edm in ("Edm.DateTime", "Edm.Time"):
                attrs.append('Precision="0"')
            elif prop.edm == "Edm.DateTimeOffset":
                attrs.append('Precision="7"')
            if prop.date_only:
                attrs.append('sap:display-format="Date"')
            if etype.has_etag and prop.name == etype.etag_property:
                attrs.append('ConcurrencyMode="Fixed"')
            if prop.name not in etype.keys:
                if not prop.can_create:
                    attrs.append('sap:creatable="false"')
                if not prop.updatable:
                    attrs.append('sap:updatable="false"')
            out.append(f"    <Property {' '.join(attrs)}/>")
        for nav in etype.navs:
            assoc = f"assoc_{etype.set_name}_{nav.name}"
            associations.append((assoc, etype, nav))
            out.append(
                f'    <NavigationProperty Name="{nav.name}" Relationship="{ns}.{assoc}" '
                f'FromRole="FromRole_{assoc}" ToRole="ToRole_{assoc}"/>'
            )
        out.append("   </EntityType>")
    for assoc, etype, nav in associations:
        target = service.types_by_set[nav.target]
        out.append(
            f'   <Association Name="{assoc}" sap:content-version="1">'
            f'<End Type="{ns}.{etype.name}" Multiplicity="1" Role="FromRole_{assoc}"/>'
            f'<End Type="{ns}.{target.name}" Multiplicity="{"*" if nav.many else "0..1"}" Role="ToRole_{assoc}"/>'
            "</Association>"
        )
    out.append(
        f'   <EntityContainer Name="{ns}_Entities" m:IsDefaultEntityContainer="true" sap:supported-formats="json">'
    )
    for etype in service.entity_types:
        updatable = "true" if etype.set_name in service.updatable else "false"
        creatable = "true" if etype.set_name in service.creatable else "false"
        out.append(
            f'    <EntitySet Name="{etype.set_name}" EntityType="{ns}.{etype.name}" sap:creatable="{creatable}" '
            f'sap:updatable="{updatable}" sap:deletable="false" sap:content-version="1"/>'
        )
    for assoc, etype, nav in associations:
        out.append(
            f'    <AssociationSet Name="{assoc}" Association="{ns}.{assoc}" sap:creatable="false" '
            'sap:updatable="false" sap:deletable="false" sap:content-version="1">'
            f'<End EntitySet="{etype.set_name}" Role="FromRole_{assoc}"/>'
            f'<End EntitySet="{nav.target}" Role="ToRole_{assoc}"/></AssociationSet>'
        )
    out += ["   </EntityContainer>", "  </Schema>", " </edmx:DataServices>", "</edmx:Edmx>"]
    return "\n".join(out) + "\n"


# ============================================================================================
# Serving from the command line
# ============================================================================================


def faults_with_env(faults: Mapping[str, Any] | None = None) -> FaultSwitches:
    """Fault switches from ``$DRYMIX_SANDBOX_FAULTS`` (a JSON object) overlaid by ``faults``."""
    merged: dict[str, Any] = {}
    env = os.environ.get(FAULTS_ENV, "").strip()
    if env:
        try:
            loaded = json.loads(env)
        except ValueError as exc:
            raise ValueError(f"{FAULTS_ENV} must be a JSON object: {exc}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{FAULTS_ENV} must be a JSON object")
        merged.update(loaded)
    merged.update(faults or {})
    return FaultSwitches.from_value(merged)


# ============================================================================================
# Several services on one SAP system
# ============================================================================================


class ODataSystem(Simulator):
    """Several OData services on one SAP system (one host and port), as SAP Gateway serves them.

    The first service is the primary; the others :meth:`~ODataSandbox.join_system` it, so a
    token from the one token endpoint or a CSRF session fetched on one service is good on every
    service, and the clock and ``/_sandbox/faults`` are the system's. A request goes to the
    service whose root starts its path (anything else to the primary, which answers the token
    endpoint and the ICF 404); ``/_sandbox/<name>/...`` goes to the service named ``<name>``.
    """

    def __init__(self, services: Sequence[ODataSandbox], name: str | None = None) -> None:
        if not services:
            raise ValueError("a system serves at least one service")
        roots = [service.service_root for service in services]
        names = [service.name for service in services]
        if len(set(roots)) != len(roots) or len(set(names)) != len(names):
            raise ValueError("services of one system need distinct roots and names")
        super().__init__()
        self.primary = services[0]
        self.services = tuple(services)
        self.name = name or self.primary.name
        for service in self.services[1:]:
            service.join_system(self.primary)
        self.faults = self.primary.faults
        self.lock = self.primary.lock

    def service_for(self, path: str) -> ODataSandbox:
        """The service that answers ``path``."""
        for service in self.services:
            root = service.service_root
            if path.startswith(root) or path == root[:-1]:
                return service
        return self.primary

    def handle(self, req: SandboxRequest) -> SandboxResponse:
        return self.service_for(req.path).handle(req)

    def handle_control(self, req: SandboxRequest) -> SandboxResponse | None:
        for service in self.services:
            resp = service.handle_control(req)
            if resp is not None:
                return resp
        return None

    def control_routes(self) -> list[str]:
        return [route for service in self.services for route in service.control_routes()]

    def unauthorized_response(self, req: SandboxRequest) -> SandboxResponse:
        return self.service_for(req.path).unauthorized_response(req)

    def rate_limited_response(self, req: SandboxRequest, retry_after: str | None) -> SandboxResponse:
        return self.service_for(req.path).rate_limited_response(req, retry_after)

    def server_error_response(self, req: SandboxRequest, status: int, retry_after: str | None) -> SandboxResponse:
        return self.service_for(req.path).server_error_response(req, status, retry_after)
