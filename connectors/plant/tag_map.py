"""The site tag map: which OPC UA nodes a plant collects, under which ERP tag names, and where its batch records live.

A TOML file under ``config/plant/`` (``plant_opcua.tag_map``), validated by pydantic when loaded. Every error
names the file and the line of the offending key or table: tomllib keeps no positions, so the line is found
again in the text from the error's location (tomlkit, which keeps them, is not a dependency of the hub).

Namespaces are named by URI, never by index: the map's ``[namespaces]`` table gives each URI an alias, NodeIds
are written ``alias:s=...`` or ``nsu=<uri>;s=...`` and resolved against the server's NamespaceArray at connect.
See docs/plant.md for every key and one example per layout.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Kind = Literal["analog", "state", "counter", "text"]
Sampling = Literal["read", "subscription"]
Deadband = Literal["none", "absolute", "percent"]

#: Batch-record fields the hub knows (keys of ``[batches.fields]``), in the order of a record.
BATCH_FIELDS: tuple[str, ...] = (
    "seq",
    "batch_id",
    "product_code",
    "recipe_code",
    "mixer",
    "started_at",
    "ended_at",
    "mixing_time_s",
    "components",
    "target_kg",
    "actual_kg",
)
REQUIRED_BATCH_FIELDS: dict[str, tuple[str, ...]] = {
    "ring": ("seq", "batch_id", "started_at", "ended_at"),
    "structure": ("batch_id", "started_at", "ended_at"),
    "events": ("batch_id",),  # ended_at defaults to the event's Time
}

_ALIAS = r"[A-Za-z_][A-Za-z0-9_-]*"
_NODE_ID = re.compile(rf"^(?:nsu=(?P<uri>[^;]+);|(?P<alias>{_ALIAS}):)?(?P<type>[isgb])=(?P<ident>.+)$", re.DOTALL)
_BY_INDEX = re.compile(r"^ns=\d+;")
_PLACEHOLDER = re.compile(r"\{(\d+)\}")


class TagMapError(ValueError):
    """A tag map that cannot be used; ``problems`` are ``file:line: where: what`` lines."""

    def __init__(self, path: Path, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = list(problems)
        super().__init__(f"tag map {path} is not valid:\n  " + "\n  ".join(self.problems))


@dataclass(frozen=True)
class NodeRef:
    """A NodeId as the map writes it: namespace by URI (or by alias), identifier type and identifier."""

    namespace_uri: str | None  # None: namespace 0 (the OPC UA base namespace)
    id_type: str  # i | s | g | b
    identifier: str

    def __str__(self) -> str:
        return f"nsu={self.namespace_uri};{self.id_type}={self.identifier}" if self.namespace_uri else f"{self.id_type}={self.identifier}"


def parse_node_ref(text: str, namespaces: dict[str, str]) -> NodeRef:
    """``alias:s=Plant.X``, ``nsu=urn:x;i=12`` or ``i=2253`` -> a :class:`NodeRef`; ``ns=<index>;`` is refused."""
    text = text.strip()
    if _BY_INDEX.match(text):
        raise ValueError(f"{text!r} names its namespace by index: write it with an alias of [namespaces] or nsu=<uri>; (indexes change between servers)")
    match = _NODE_ID.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a NodeId: write alias:s=<name>, alias:i=<number> or nsu=<uri>;s=<name>")
    uri = match["uri"]
    if match["alias"]:
        if match["alias"] not in namespaces:
            raise ValueError(f"{text!r} uses the namespace alias {match['alias']!r}, which [namespaces] does not define")
        uri = namespaces[match["alias"]]
    if match["type"] == "i" and not match["ident"].isdigit():
        raise ValueError(f"{text!r}: a numeric NodeId (i=) needs a number")
    return NodeRef(namespace_uri=uri, id_type=match["type"], identifier=match["ident"])


def looks_like_node_id(text: str) -> bool:
    return bool(_NODE_ID.match(text.strip()) or _BY_INDEX.match(text.strip()))


@dataclass(frozen=True)
class BrowseSegment:
    """One step of a folder path: a browse name, pinned to a namespace when written ``alias:Name``."""

    name: str
    namespace_uri: str | None  # None: any namespace


def parse_folder(text: str, namespaces: dict[str, str]) -> tuple[BrowseSegment, ...]:
    """``plant:Plant/Mixers`` -> browse segments below Objects (no wildcards in a folder)."""
    segments: list[BrowseSegment] = []
    for raw in text.strip().strip("/").split("/"):
        if not raw:
            raise ValueError(f"folder {text!r} has an empty step")
        if any(c in raw for c in "*?["):
            raise ValueError(f"folder {text!r}: wildcards belong in `path`, the folder is the fixed part")
        alias, sep, name = raw.partition(":")
        if sep and re.fullmatch(_ALIAS, alias):
            if alias not in namespaces:
                raise ValueError(f"folder {text!r} uses the namespace alias {alias!r}, which [namespaces] does not define")
            segments.append(BrowseSegment(name=name, namespace_uri=namespaces[alias]))
        else:
            segments.append(BrowseSegment(name=raw, namespace_uri=None))
    return tuple(segments)


def folder_key(segments: Sequence[BrowseSegment]) -> str:
    """The folder's path of browse names (what drift reports and ``ignore`` patterns see)."""
    return "/".join(s.name for s in segments)


def match_path(pattern: str, path: str) -> list[str] | None:
    """Match a relative browse path against a pattern (``*`` one level, ``**`` any levels, fnmatch within a
    level); the captures (one per wildcard step) or None."""
    return _match(pattern.strip("/").split("/"), path.split("/"))


def _match(pattern: list[str], parts: list[str]) -> list[str] | None:
    if not pattern:
        return [] if not parts else None
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        for take in range(len(parts) + 1):
            tail = _match(rest, parts[take:])
            if tail is not None:
                return ["/".join(parts[:take]), *tail]
        return None
    if not parts or not fnmatch.fnmatchcase(parts[0], head):
        return None
    tail = _match(rest, parts[1:])
    if tail is None:
        return None
    return [parts[0], *tail] if any(c in head for c in "*?[") else tail


def wildcards(pattern: str) -> int:
    return sum(1 for step in pattern.strip("/").split("/") if any(c in step for c in "*?["))


def render(template: str, captures: Sequence[str], leaf: str) -> str:
    """``Mixers/{1}/MotorCurrentA`` with the path's captures; ``{0}`` is the matched leaf name."""
    values = [leaf, *captures]
    return _PLACEHOLDER.sub(lambda m: values[int(m.group(1))], template)


# --------------------------------------------------------------------------- the file's shape


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TagRule(_Strict):
    """One ``[[tags]]`` entry: a browse-path pattern under a folder, or one explicit NodeId."""

    folder: str | None = Field(None, description="browse path below Objects, e.g. plant:Plant or Channel1/Mixing")
    path: str | None = Field(None, description="pattern below the folder: * one level, ** any levels")
    node_id: str | None = Field(None, description="explicit NodeId: alias:s=..., alias:i=..., nsu=<uri>;s=...")
    tag: str = Field(..., min_length=1, description="ERP tag name; {1}.. are the path's wildcard captures, {0} the leaf")
    equipment: str | None = Field(None, description="ERP equipment (template as tag); default: the tag's parent path")
    kind: Kind = "analog"
    unit: str | None = Field(None, description="unit when the server publishes no EngineeringUnits")
    sampling: Sampling = "read"
    deadband: Deadband = "none"
    deadband_value: float = Field(0.0, ge=0.0)

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip("/") or "//" in value):
            raise ValueError("path must name at least one level below the folder, without empty steps")
        return value


class BatchSection(_Strict):
    """``[batches]``: where the site keeps its completed-batch records."""

    kind: Literal["ring", "structure", "events"]
    folder: str = Field(..., description="browse path below Objects of the ring (Counter, Records), of the structure, or of the event notifier")
    counter: str | None = Field(None, description="ring: the counter variable below the folder (seq of the last completed batch)")
    records: str | None = Field(None, description="ring: the folder of record slots below the folder")
    event_type: str | None = Field(None, description="events: NodeId of the batch-completed event type (alias:i=... / alias:s=...)")
    fields: dict[str, str] = Field(..., description="hub field -> browse name below a slot / the structure / of the event field, or a NodeId")

    @field_validator("fields")
    @classmethod
    def _known(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(BATCH_FIELDS))
        if unknown:
            raise ValueError(f"unknown batch field(s) {', '.join(unknown)}; the hub knows {', '.join(BATCH_FIELDS)}")
        return value


class TagMapFile(_Strict):
    """The whole file."""

    name: str = Field(..., min_length=1)
    description: str = ""
    namespaces: dict[str, str] = Field(..., description="alias -> namespace URI")
    ignore: list[str] = Field(default_factory=list, description="browse paths (patterns) that are not tags: never reported as unmapped")
    tags: list[TagRule] = Field(..., min_length=1)
    batches: BatchSection | None = None

    @field_validator("namespaces")
    @classmethod
    def _aliases(cls, value: dict[str, str]) -> dict[str, str]:
        for alias, uri in value.items():
            if not re.fullmatch(_ALIAS, alias):
                raise ValueError(f"alias {alias!r}: letters, digits, _ and - only, starting with a letter")
            if not uri.strip():
                raise ValueError(f"alias {alias!r} has an empty namespace URI")
        return value


# --------------------------------------------------------------------------- the loaded map


@dataclass(frozen=True)
class ResolvedRule:
    """A rule with its folder and NodeId parsed (namespace still by URI: the server resolves it)."""

    index: int
    rule: TagRule
    folder: tuple[BrowseSegment, ...] | None
    node: NodeRef | None
    line: int = 0  # of its [[tags]] header in the file

    @property
    def where(self) -> str:
        return f"tags[{self.index}], line {self.line}" if self.line else f"tags[{self.index}]"

    @property
    def describe(self) -> str:
        return f"{folder_key(self.folder)}/{self.rule.path}" if self.folder is not None else str(self.node)


@dataclass(frozen=True)
class BatchSource:
    """The ``[batches]`` section resolved: folder steps, and each field as a relative path or a NodeId."""

    kind: str
    folder: tuple[BrowseSegment, ...]
    counter: str | None
    records: str | None
    fields: dict[str, str | NodeRef]
    event_type: NodeRef | None = None


@dataclass(frozen=True)
class TagMap:
    path: Path
    spec: TagMapFile
    rules: tuple[ResolvedRule, ...]
    batches: BatchSource | None

    @property
    def name(self) -> str:
        return self.spec.name

    @cached_property
    def folders(self) -> dict[str, tuple[BrowseSegment, ...]]:
        """Every folder a pattern rule browses, by its path of browse names."""
        return {folder_key(r.folder): r.folder for r in self.rules if r.folder is not None}

    def ignored(self, full_path: str) -> bool:
        return any(match_path(p, full_path) is not None for p in self.spec.ignore)


def load_tag_map(path: str | Path) -> TagMap:
    """Read and validate a tag map; a :class:`TagMapError` lists every problem with its file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TagMapError(path, [f"{path}: cannot be read ({exc.strerror or exc})"]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None) or _line_of_decode_error(str(exc))
        raise TagMapError(path, [f"{path}:{line}: not valid TOML: {exc}"]) from exc
    lines = text.splitlines()
    try:
        spec = TagMapFile.model_validate(data)
    except ValidationError as exc:
        raise TagMapError(path, [_problem(path, lines, tuple(err["loc"]), err["msg"]) for err in exc.errors()]) from exc
    problems: list[str] = []
    rules: list[ResolvedRule] = []
    for i, rule in enumerate(spec.tags):
        folder: tuple[BrowseSegment, ...] | None = None
        node: NodeRef | None = None
        if (rule.node_id is None) == (rule.path is None):
            problems.append(_problem(path, lines, ("tags", i), "give either `folder` + `path` (a browse pattern) or `node_id`, not both or neither"))
            continue
        if rule.node_id is not None:
            if rule.folder is not None:
                problems.append(_problem(path, lines, ("tags", i, "folder"), "an explicit node_id takes no folder"))
            try:
                node = parse_node_ref(rule.node_id, spec.namespaces)
            except ValueError as err:
                problems.append(_problem(path, lines, ("tags", i, "node_id"), str(err)))
            captures = 0
        else:
            if rule.folder is None:
                problems.append(_problem(path, lines, ("tags", i), "a browse `path` needs the `folder` it is below"))
                continue
            try:
                folder = parse_folder(rule.folder, spec.namespaces)
            except ValueError as err:
                problems.append(_problem(path, lines, ("tags", i, "folder"), str(err)))
            captures = wildcards(rule.path or "")
        for key in ("tag", "equipment"):
            template = getattr(rule, key)
            if template is None:
                continue
            used = [int(n) for n in _PLACEHOLDER.findall(template)]
            if any(n > captures for n in used):
                problems.append(_problem(path, lines, ("tags", i, key),
                                         f"{template!r} uses {{{max(used)}}} but the rule has {captures} wildcard step(s)"))
        if rule.deadband != "none" and rule.sampling != "subscription":
            problems.append(_problem(path, lines, ("tags", i, "deadband"), "a deadband applies to sampling = \"subscription\" only"))
        if rule.deadband == "percent" and rule.deadband_value > 100.0:
            problems.append(_problem(path, lines, ("tags", i, "deadband_value"), "a percent deadband is 0..100"))
        rules.append(ResolvedRule(index=i, rule=rule, folder=folder, node=node, line=locate(lines, ("tags", i))))
    for i, pattern in enumerate(spec.ignore):
        if not pattern.strip("/"):
            problems.append(_problem(path, lines, ("ignore", i), "an empty ignore pattern"))
    batches = _batch_source(path, lines, spec, problems)
    if problems:
        raise TagMapError(path, problems)
    return TagMap(path=path, spec=spec, rules=tuple(rules), batches=batches)


def _batch_source(path: Path, lines: list[str], spec: TagMapFile, problems: list[str]) -> BatchSource | None:
    section = spec.batches
    if section is None:
        return None
    try:
        folder = parse_folder(section.folder, spec.namespaces)
    except ValueError as err:
        problems.append(_problem(path, lines, ("batches", "folder"), str(err)))
        folder = ()
    missing = [f for f in REQUIRED_BATCH_FIELDS[section.kind] if f not in section.fields]
    if missing:
        problems.append(_problem(path, lines, ("batches", "fields"), f"a {section.kind} needs the field(s) {', '.join(missing)}"))
    if section.kind == "ring":
        for key in ("counter", "records"):
            if not getattr(section, key):
                problems.append(_problem(path, lines, ("batches",), f"a ring needs `{key}` (below the folder)"))
    event_type: NodeRef | None = None
    if section.kind == "events":
        if not section.event_type:
            problems.append(_problem(path, lines, ("batches",), "events need `event_type`, the NodeId of the batch-completed event type"))
        else:
            try:
                event_type = parse_node_ref(section.event_type, spec.namespaces)
            except ValueError as err:
                problems.append(_problem(path, lines, ("batches", "event_type"), str(err)))
    elif section.event_type:
        problems.append(_problem(path, lines, ("batches", "event_type"), "event_type belongs to kind = \"events\" only"))
    fields: dict[str, str | NodeRef] = {}
    for name, where in section.fields.items():
        if looks_like_node_id(where):
            if section.kind != "structure":
                problems.append(_problem(path, lines, ("batches", "fields", name),
                                         f"{section.kind} fields are browse names ({'below each slot' if section.kind == 'ring' else 'of the event'}), not NodeIds"))
                continue
            try:
                fields[name] = parse_node_ref(where, spec.namespaces)
            except ValueError as err:
                problems.append(_problem(path, lines, ("batches", "fields", name), str(err)))
        else:
            fields[name] = where.strip("/")
    return BatchSource(kind=section.kind, folder=folder, counter=section.counter, records=section.records, fields=fields,
                       event_type=event_type)


# --------------------------------------------------------------------------- line numbers


def _line_of_decode_error(message: str) -> int:
    found = re.search(r"line (\d+)", message)
    return int(found.group(1)) if found else 1


def _problem(path: Path, lines: list[str], loc: tuple[Any, ...], message: str) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc)) or "(top level)"
    return f"{path}:{locate(lines, loc)}: {where}: {message}"


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")


def _split_key(dotted: str) -> list[str]:
    return [part.strip().strip('"').strip("'") for part in dotted.split(".")]


def locate(lines: Sequence[str], loc: tuple[Any, ...]) -> int:
    """The 1-based line of a key or table of the file, from a pydantic/our error location.

    Tables are tracked by their headers (``[[tags]]`` counts the array's elements); within the innermost table
    that contains ``loc`` the line of its next key is searched, else the table's header line is returned.
    """
    tables: list[tuple[int, tuple[Any, ...]]] = [(1, ())]
    counts: dict[tuple[str, ...], int] = {}
    for number, line in enumerate(lines, 1):
        header = _HEADER.match(line)
        if header is None:
            continue
        names = _split_key(header.group(2))
        resolved: list[Any] = []
        for depth, name in enumerate(names):
            resolved.append(name)
            prefix = tuple(names[: depth + 1])
            is_last = depth == len(names) - 1
            if header.group(1) == "[[" and is_last:
                counts[prefix] = counts.get(prefix, 0) + 1
                resolved.append(counts[prefix] - 1)
            elif prefix in counts and not is_last:
                resolved.append(counts[prefix] - 1)
        tables.append((number, tuple(resolved)))
    best_index = 0
    for index, (_, table) in enumerate(tables):
        if loc[: len(table)] == table and len(table) >= len(tables[best_index][1]):
            best_index = index
    start, table = tables[best_index]
    end = tables[best_index + 1][0] - 1 if best_index + 1 < len(tables) else len(lines)
    rest = loc[len(table):]
    if rest and isinstance(rest[0], str):
        key = re.compile(rf"^\s*[\"']?{re.escape(rest[0])}[\"']?\s*=")
        for number in range(start if table == () else start + 1, end + 1):
            if number - 1 < len(lines) and key.match(lines[number - 1]):
                return number
        # a key of an inline table or a sub-table written on one line: the parent's line
        if table == () and rest[0] in ("tags", "batches", "namespaces"):
            for number, (_, t) in ((n, tb) for n, tb in tables):
                if t[:1] == (rest[0],):
                    return number
    return start if table != () else _first_content_line(lines)


def _first_content_line(lines: Sequence[str]) -> int:
    for number, line in enumerate(lines, 1):
        if line.strip() and not line.lstrip().startswith("#"):
            return number
    return 1
