"""Loading scenario files: YAML with line numbers, JSON Schema validation, includes, path checks.

Every problem becomes one ScenarioError naming the file, line, column and field path
(`steps[3].ping.to`), which the CLI prints with exit code 2.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import yaml
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from emu.scenario import schema

Path = tuple[Any, ...]
MAX_INCLUDE_DEPTH = 8


class ScenarioError(Exception):
    """Bad input: `file:line:col: path: message`."""

    def __init__(self, file: str, message: str, *, line: int | None = None, col: int | None = None,
                 path: str = "") -> None:
        self.file, self.message, self.line, self.col, self.path = file, message, line, col, path
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}:{self.col}"
        return f"{where}: {self.path + ': ' if self.path else ''}{self.message}"


def format_path(path: Path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


@dataclass
class Source:
    """A parsed YAML file and where each value sits in it."""

    file: str
    data: Any
    marks: dict[Path, tuple[int, int]]

    def error(self, path: Path, message: str, *, shown: Path | None = None) -> ScenarioError:
        """An error at `path` (the nearest marked parent gives the line); `shown` overrides the printed path."""
        p = tuple(path)
        while p not in self.marks and p:
            p = p[:-1]
        line, col = self.marks.get(p, (None, None))
        return ScenarioError(self.file, message, line=line, col=col, path=format_path(path if shown is None else shown))


class _Recursive(Exception):
    def __init__(self, mark: yaml.Mark) -> None:
        self.mark = mark


def _marks(node: yaml.Node, path: Path, out: dict[Path, tuple[int, int]], active: set[int]) -> None:
    """Records the line and column of every value (and of every mapping key, under the key's path)."""
    if id(node) in active:
        raise _Recursive(node.start_mark)  # an anchor used inside itself
    out[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key: Any = k.value if isinstance(k, yaml.ScalarNode) else repr(k.value)
            if isinstance(k, yaml.ScalarNode) and k.tag.endswith(":int"):
                key = int(k.value)
            _marks(v, (*path, key), out, active)
            out[(*path, key)] = (k.start_mark.line + 1, k.start_mark.column + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _marks(v, (*path, i), out, active)
    active.discard(id(node))


def _not_finite(data: Any, path: Path = ()) -> Path | None:
    """The path of a NaN or infinite number (JSON Schema's bounds cannot reject NaN)."""
    if isinstance(data, float) and (data != data or data in (float("inf"), float("-inf"))):
        return path
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for k, v in items:
        found = _not_finite(v, (*path, k))
        if found is not None:
            return found
    return None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for k, _ in node.value:
            if not isinstance(k, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None, None, "mapping keys must be plain words, not lists or mappings", k.start_mark)
            if k.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {k.value!r}", k.start_mark)
            seen.add(k.value)
        return super().construct_mapping(node, deep)


def read_yaml(file: str, display: str | None = None) -> Source:
    """Reads and parses one YAML file; any failure is a ScenarioError."""
    shown = display or file
    try:
        with open(file, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ScenarioError(shown, "no such file") from None
    except IsADirectoryError:
        raise ScenarioError(shown, "is a directory, not a scenario file") from None
    except PermissionError:
        raise ScenarioError(shown, "cannot read the file: permission denied") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(shown, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ScenarioError(shown, f"cannot read the file: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "invalid YAML"
        raise ScenarioError(shown, f"YAML syntax error: {what}",
                            line=mark.line + 1 if mark else None, col=mark.column + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise ScenarioError(shown, f"YAML syntax error: {exc}") from None
    marks: dict[Path, tuple[int, int]] = {}
    if node is not None:
        try:
            _marks(node, (), marks, set())
        except _Recursive as exc:
            raise ScenarioError(shown, "an anchor is used inside itself (a recursive alias)",
                                line=exc.mark.line + 1, col=exc.mark.column + 1) from None
    src = Source(shown, data, marks)
    bad_number = _not_finite(data)
    if bad_number is not None:
        raise src.error(bad_number, "expected a finite number, got NaN or infinity")
    return src


_KIND_WORDS = {"integer": "an integer", "number": "a number", "string": "a string", "object": "a mapping",
               "array": "a list", "boolean": "true or false", "null": "null"}


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return {int: "integer", float: "number", str: "string", dict: "mapping", list: "list",
            type(None): "null"}.get(type(value), type(value).__name__)


def _message(err: ValidationError) -> str:
    """jsonschema's message in the words of this tool."""
    v, kind = err.instance, err.validator
    if kind == "additionalProperties":
        known = sorted(err.schema.get("properties", {}))
        extra = sorted(set(v) - set(known), key=str) if isinstance(v, dict) else []
        hint = f" (expected one of: {', '.join(known)})" if known else ""
        return f"unknown key {extra[0]!r}{hint}" if extra else err.message
    if kind == "required":
        return f"missing required key {err.message.split(chr(39))[1]!r}"
    if kind == "type":
        want = err.validator_value
        wants = [want] if isinstance(want, str) else want
        return f"expected {' or '.join(_KIND_WORDS.get(w, w) for w in wants)}, got {_type_name(v)} {v!r}"
    if kind == "format" and err.validator_value == "ipv4":
        return f"invalid IPv4 address {v!r}"
    if kind == "enum":
        return f"expected one of {', '.join(map(str, err.validator_value))}, got {v!r}"
    if kind == "const":
        return f"expected {err.validator_value!r}, got {v!r}"
    if kind == "pattern":
        if "/" in err.validator_value:
            return f"expected NAMESPACE/IFNAME, got {v!r}"
        if err.validator_value.startswith("^(eth"):
            return f"unknown frame field {v!r} (use eth.*, arp.*, ip.*, icmp.*, udp.*, tcp.* or vxlan.*)"
        return f"invalid name {v!r} (letters, digits, '.', '_' or '-', at most 64)"
    if kind in ("minimum", "exclusiveMinimum"):
        return f"{v!r} is below the minimum {err.validator_value}"
    if kind == "maximum":
        return f"{v!r} is above the maximum {err.validator_value}"
    if kind in ("minItems", "minLength", "minProperties"):
        return "must not be empty"
    if kind == "maxProperties":
        return "give one namespace per setup entry"
    if kind == "uniqueItems":
        dups = sorted({str(x) for x in v if v.count(x) > 1}) if isinstance(v, list) else []
        return f"has duplicate entries: {', '.join(dups)}" if dups else "has duplicate entries"
    if kind == "oneOf" and isinstance(v, dict) and err.schema is schema.STEP:
        kinds = [k for k in schema.STEPS if k in v]
        if not kinds:
            return f"a step needs one of: {', '.join(schema.STEPS)}"
        return f"a step has several kinds ({', '.join(kinds)}); give one per step"
    if kind == "oneOf":
        return f"invalid value {v!r}"
    return err.message


def validate(src: Source, schema_doc: dict[str, Any], base: Path = ()) -> None:
    """Raises the first schema error in document order."""
    validator = Draft202012Validator(schema_doc, format_checker=FormatChecker())
    errors = list(validator.iter_errors(src.data))
    if not errors:
        return

    def order(e: ValidationError) -> tuple[int, int, int]:
        p = tuple(e.absolute_path)
        while p not in src.marks and p:
            p = p[:-1]
        line, col = src.marks.get(p, (0, 0))
        return (line, col, -len(e.absolute_path))

    err = min(errors, key=order)
    # Inside a oneOf, the branch errors name the real problem when the kind is clear.
    if err.validator in ("oneOf", "anyOf") and err.context and not (
            isinstance(err.instance, dict) and err.schema is schema.STEP):
        err = min(err.context, key=lambda e: (-len(e.absolute_path), order(e)))
    path: Path = (*base, *err.absolute_path)
    at = path
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})), key=str)
        at = (*path, extra[0]) if extra else path  # point at the unknown key itself
    elif "propertyNames" in err.absolute_schema_path:
        at = (*path, err.instance)  # a bad key: point at the key itself
    raise src.error(at, _message(err), shown=path)


@dataclass
class Step:
    """One step: its kind, arguments, where it was written, and its display name."""

    index: int
    kind: str
    args: Any
    name: str
    source: Source
    path: Path

    def error(self, message: str, *sub: Any) -> ScenarioError:
        return self.source.error((*self.path, self.kind, *sub), message)

    @property
    def where(self) -> str:
        return format_path((*self.path, self.kind))


@dataclass
class Scenario:
    file: str
    source: Source
    name: str
    description: str
    seed: int
    namespaces: list[str]
    segments: list[str]
    nics: list[dict[str, str]]
    loopback: str
    setup: list[tuple[Path, str, str]]
    capture_points: list[str] | str
    capture_file: str | None
    steps: list[Step] = field(default_factory=list)
    cluster: dict[str, Any] | None = None
    dynamic: list[str] = field(default_factory=list)  # pods and nodes that steps create

    @property
    def known(self) -> list[str]:
        return self.namespaces + self.dynamic

    @property
    def directory(self) -> str:
        return os.path.dirname(os.path.abspath(self.file))

    def resolve(self, path: str) -> str:
        return path if os.path.isabs(path) else os.path.join(self.directory, path)


def load(file: str) -> Scenario:
    """Reads, validates and expands a scenario file."""
    src = read_yaml(file)
    if not isinstance(src.data, dict):
        raise ScenarioError(file, f"a scenario is a mapping with topology and steps, got {_type_name(src.data)}",
                            line=1, col=1)
    validate(src, schema.SCENARIO)
    d = src.data
    topo = d.get("topology", {})
    cluster = d.get("cluster")
    names = list(topo.get("namespaces", []))
    if cluster is not None:
        nodes = cluster.get("nodes", 2)
        node_names = [f"node{i}" for i in range(1, nodes + 1)] if isinstance(nodes, int) else list(nodes)
        for i, pod in enumerate(cluster.get("pods", [])):
            if "node" in pod and pod["node"] not in node_names:
                raise src.error(("cluster", "pods", i, "node"),
                                f"unknown node {pod['node']!r} (cluster nodes: {', '.join(node_names)})")
        names += [n for n in node_names + [p["name"] for p in cluster.get("pods", [])] if n not in names]
    segments = list(topo.get("segments", []))
    setup: list[tuple[Path, str, str]] = []
    for i, item in enumerate(topo.get("setup", [])):
        ((ns, cmds),) = item.items()
        _known(src, ("topology", "setup", i, ns), ns, names)
        for j, cmd in enumerate([cmds] if isinstance(cmds, str) else cmds):
            path = ("topology", "setup", i, ns) if isinstance(cmds, str) else ("topology", "setup", i, ns, j)
            setup.append((path, ns, cmd))
    for i, nic in enumerate(topo.get("nics", [])):
        _known(src, ("topology", "nics", i, "ns"), nic["ns"], names)
        if nic["segment"] not in segments:
            raise src.error(("topology", "nics", i, "segment"),
                            f"unknown segment {nic['segment']!r} (declare it under topology.segments)")
    cap = d.get("capture", {})
    points = cap.get("points", "all" if cap else [])
    if isinstance(points, list):
        for i, p in enumerate(points):
            _known(src, ("capture", "points", i), p.split("/")[0], names)
    sc = Scenario(file=file, source=src, name=d.get("name", os.path.splitext(os.path.basename(file))[0]),
                  description=d.get("description", ""), seed=d.get("seed", 0), namespaces=names,
                  segments=segments, nics=list(topo.get("nics", [])), loopback=topo.get("loopback", "up"),
                  setup=setup, capture_points=points, capture_file=cap.get("file"), cluster=cluster)
    sc.steps = _expand(sc, src, d.get("steps", []), ("steps",), depth=0, seen={os.path.abspath(file)})
    return sc


def _known(src: Source, path: Path, ns: str, names: list[str]) -> None:
    if ns not in names:
        raise src.error(path, f"unknown namespace {ns!r} (topology.namespaces has: {', '.join(names)})")


NS_FIELDS = {"exec": ("ns",), "ping": ("from",), "traceroute": ("from",), "listen": ("ns",), "udp": ("from",),
             "tcp": ("from",), "link": ("ns",), "cni": ("node",)}


def _expand(sc: Scenario, src: Source, steps: list[Any], base: Path, depth: int, seen: set[str]) -> list[Step]:
    out: list[Step] = []
    for i, raw in enumerate(steps):
        path = (*base, i)
        kind = next(k for k in schema.STEPS if k in raw)
        args = raw[kind]
        if kind in ("pod", "node") and ("create" in args or "join" in args):
            new = args["create"]["name"] if kind == "pod" else args["join"]
            sc.dynamic.append(new)  # a namespace from this step on
        if kind == "include":
            out.extend(_include(sc, src, args, (*path, "include"), depth, seen))
            continue
        for f in NS_FIELDS.get(kind, ()):
            _known(src, (*path, kind, f), args[f], sc.known)
        if kind == "expect":
            for key in ("counters", "frame"):
                if key in args:
                    _known(src, (*path, kind, key, "at"), args[key]["at"].split("/")[0], sc.known)
            if "table" in args:
                _known(src, (*path, kind, "table", "ns"), args["table"]["ns"], sc.known)
        if kind == "replay":
            _known(src, (*path, kind, "into"), args["into"].split("/")[0], sc.known)
            from emu.scenario.replay import check_file

            full = sc.resolve(args["file"]) if src.file == sc.file else os.path.join(
                os.path.dirname(os.path.abspath(src.file)), args["file"])
            problem = check_file(full, os.path.relpath(full))
            if problem:
                raise src.error((*path, kind, "file"), problem)
            args = {**args, "file": full}
        out.append(Step(len(out), kind, args, raw.get("name", ""), src, path))
    return out


def _include(sc: Scenario, src: Source, rel: str, path: Path, depth: int, seen: set[str]) -> list[Step]:
    full = rel if os.path.isabs(rel) else os.path.join(os.path.dirname(os.path.abspath(src.file)), rel)
    if depth >= MAX_INCLUDE_DEPTH or os.path.abspath(full) in seen:
        raise src.error(path, f"include {rel!r} would include itself")
    try:
        inc = read_yaml(full, display=os.path.relpath(full) if not os.path.isabs(rel) else full)
    except ScenarioError as exc:
        if exc.line is None:
            raise src.error(path, f"cannot include {rel!r}: {exc.message}") from None
        raise
    if inc.data is None:
        raise src.error(path, f"cannot include {rel!r}: the file is empty (expected a list of steps, or a "
                              "mapping with `steps`)")
    shape = schema.INCLUDED["oneOf"][0 if isinstance(inc.data, list) else 1]
    if not isinstance(inc.data, (list, dict)):
        raise inc.error((), f"expected a list of steps, or a mapping with `steps`, got {_type_name(inc.data)} "
                            f"{inc.data!r}")
    validate(inc, shape)
    steps = inc.data if isinstance(inc.data, list) else inc.data["steps"]
    base: Path = () if isinstance(inc.data, list) else ("steps",)
    return _expand(sc, inc, steps, base, depth + 1, seen | {os.path.abspath(full)})
