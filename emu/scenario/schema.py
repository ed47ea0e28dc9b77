"""The scenario file format, as a JSON Schema (validated with jsonschema; messages are reworded in loader.py)."""

from __future__ import annotations

from typing import Any

NS = {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{1,64}$"}
POINT = {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{1,64}/[^/\s]{1,15}$"}
IPV4 = {"type": "string", "format": "ipv4"}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
COMMAND = {"type": "string", "minLength": 1}
TEXT_LINES = {"type": "array", "items": {"type": "string"}}
DROP_REASONS = [
    "NO_ROUTE", "BLACKHOLE", "UNREACHABLE", "PROHIBIT", "TTL_EXPIRED", "NO_NEIGH", "FILTERED", "NO_LISTENER",
    "MALFORMED", "BAD_CHECKSUM", "IFACE_DOWN", "NOT_FOR_US", "FORWARDING_OFF", "FRAG_NEEDED", "RP_FILTER",
    "MARTIAN", "UNSUPPORTED", "NO_CARRIER", "REASM_TIMEOUT", "HAIRPIN", "ARP_IGNORED", "QUEUE_FULL",
]


def obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required or [], "additionalProperties": False}


OUTPUT_EXPECT = obj({
    "rc": {"type": "integer", "minimum": 0, "maximum": 255},
    "stdout": TEXT_LINES,       # exact lines, or /regex/ lines, in order
    "contains": TEXT_LINES,     # substrings that must appear
    "not_contains": TEXT_LINES,
    "stderr": TEXT_LINES,
})
POD = obj({"name": NS, "node": NS, "ports": {"type": "array", "items": PORT}}, ["name"])
OUTCOME = {"oneOf": [{"const": "delivered"}, obj({"dropped": {"enum": DROP_REASONS}}, ["dropped"])]}

STEPS: dict[str, dict[str, Any]] = {
    "exec": obj({"ns": NS, "cmd": COMMAND, "expect": OUTPUT_EXPECT}, ["ns", "cmd"]),
    "ping": obj({
        "from": NS, "to": IPV4, "count": {"type": "integer", "minimum": 1, "maximum": 10000},
        "interval": {"type": "number", "exclusiveMinimum": 0}, "size": {"type": "integer", "minimum": 0,
                                                                        "maximum": 65507},
        "ttl": {"type": "integer", "minimum": 1, "maximum": 255},
        "expect": obj({"received": {"type": "integer", "minimum": 0}, "ttl": {"type": "integer"},
                       "error": {"type": "string"}, "outcome": OUTCOME}),
    }, ["from", "to"]),
    "traceroute": obj({"from": NS, "to": IPV4, "max_hops": {"type": "integer", "minimum": 1, "maximum": 255},
                       "expect": obj({"hops": {"type": "array", "items": {"anyOf": [IPV4, {"const": "*"}]}}})},
                      ["from", "to"]),
    "listen": obj({"ns": NS, "proto": {"enum": ["udp", "tcp"]}, "port": PORT,
                   "reply": {"type": "string"}}, ["ns", "proto", "port"]),
    "udp": obj({"from": NS, "to": IPV4, "port": PORT, "sport": PORT, "data": {"type": "string"},
                "timeout": {"type": "number", "exclusiveMinimum": 0},
                "expect": obj({"reply": {"type": ["string", "null"]}, "outcome": OUTCOME})}, ["from", "to", "port"]),
    "tcp": obj({"from": NS, "to": IPV4, "port": PORT, "data": {"type": "string"},
                "timeout": {"type": "number", "exclusiveMinimum": 0},
                "expect": obj({"reply": {"type": "string"}, "error": {"type": ["string", "null"]}})},
               ["from", "to", "port"]),
    "wait": {"type": "number", "minimum": 0, "maximum": 86400},
    "link": obj({"ns": NS, "dev": {"type": "string", "minLength": 1}, "state": {"enum": ["up", "down"]}},
                ["ns", "dev", "state"]),
    "replay": obj({"file": {"type": "string", "minLength": 1}, "into": POINT,
                   "direction": {"enum": ["in", "out"]}, "timing": {"enum": ["keep", "burst"]},
                   "select": obj({"interface": POINT, "direction": {"enum": ["in", "out"]}})},
                  ["file", "into"]),
    "expect": obj({
        "drops": {"type": "object", "propertyNames": {"enum": DROP_REASONS},
                  "additionalProperties": {"type": "integer", "minimum": 0}},
        "counters": obj({"at": POINT, "rx_packets": {"type": "integer"}, "tx_packets": {"type": "integer"},
                         "rx_dropped": {"type": "integer"}, "tx_dropped": {"type": "integer"}}, ["at"]),
        "table": obj({"ns": NS, "cmd": COMMAND, "contains": TEXT_LINES, "not_contains": TEXT_LINES}, ["ns", "cmd"]),
        "frame": obj({"at": POINT, "direction": {"enum": ["in", "out"]},
                      "match": {"type": "object", "minProperties": 1,
                                "propertyNames": {"pattern": r"^(eth|arp|ip|icmp|udp|tcp|vxlan)\.[a-z_]+$"},
                                "additionalProperties": {"type": ["string", "integer", "boolean"]}},
                      "count": {"type": "integer", "minimum": 0}}, ["at", "match"]),
        "outcome": OUTCOME,
    }),
    "include": {"type": "string", "minLength": 1},
    "kubectl": obj({"cmd": COMMAND, "expect": OUTPUT_EXPECT}, ["cmd"]),
    "pod": {"oneOf": [obj({"create": POD}, ["create"]),
                      obj({"delete": NS}, ["delete"])]},
    "node": {"oneOf": [obj({"join": NS}, ["join"]), obj({"leave": NS}, ["leave"])]},
    "cni": obj({"node": NS, "command": {"enum": ["ADD", "DEL", "CHECK"]}, "container": {"type": "string",
                "minLength": 1}, "netns": NS, "ifname": {"type": "string", "minLength": 1},
                "config": {"type": "object"}, "expect": OUTPUT_EXPECT},
               ["node", "command", "container", "netns", "config"]),
}

STEP = {
    "type": "object",
    "properties": {"name": {"type": "string", "minLength": 1}, **STEPS},
    "additionalProperties": False,
    "oneOf": [{"required": [k]} for k in STEPS],
}

SCENARIO: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "description": {"type": "string"},
        "seed": {"type": "integer", "minimum": 0},
        "topology": obj({
            "namespaces": {"type": "array", "items": NS, "uniqueItems": True, "minItems": 1},
            "segments": {"type": "array", "items": NS, "uniqueItems": True},
            "nics": {"type": "array", "items": obj({"ns": NS, "dev": {"type": "string", "minLength": 1},
                                                    "segment": NS}, ["ns", "dev", "segment"])},
            "loopback": {"enum": ["up", "down"]},
            "setup": {"type": "array", "items": {
                "type": "object", "minProperties": 1, "maxProperties": 1,
                "propertyNames": NS,
                "additionalProperties": {"oneOf": [COMMAND, {"type": "array", "items": COMMAND, "minItems": 1}]},
            }},
        }),
        "cluster": obj({
            "nodes": {"oneOf": [{"type": "integer", "minimum": 1, "maximum": 500},
                                {"type": "array", "items": NS, "minItems": 1, "uniqueItems": True}]},
            "network": {"type": "string"}, "underlay": {"type": "string"},
            "subnets": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "backend": {"enum": ["vxlan", "host-gw"]}, "subnet_mgr": {"enum": ["kube", "etcd"]},
            "ip_masq": {"type": "boolean"}, "net_conf": {"type": "string"},
            "pods": {"type": "array", "items": POD},
        }),
        "capture": obj({"points": {"oneOf": [{"const": "all"}, {"type": "array", "items": POINT, "minItems": 1}]},
                        "file": {"type": "string", "minLength": 1}}),
        "steps": {"type": "array", "items": STEP},
    },
    "anyOf": [{"required": ["topology"]}, {"required": ["cluster"]}],
    "additionalProperties": False,
}

INCLUDED: dict[str, Any] = {  # an included file: a list of steps, or a mapping with `steps`
    "oneOf": [{"type": "array", "items": STEP},
              {"type": "object", "properties": {"steps": {"type": "array", "items": STEP}},
               "required": ["steps"], "additionalProperties": False}],
}
