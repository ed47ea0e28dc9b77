"""CNI_ARGS (`K=V;K2=V2`), parsed as libcni's types.LoadArgs does.

Each key must name a field of the plugin's argument struct (`IgnoreUnknown` always does); unknown
keys are an error unless `IgnoreUnknown=1` (kubelet passes it, with K8S_POD_NAME and friends).
"""

from __future__ import annotations

from emu.cni import gojson
from emu.cni.errors import fail


def parse_bool(text: str) -> bool:
    """types.UnmarshallableBool."""
    low = text.lower()
    if low in ("1", "true"):
        return True
    if low in ("0", "false"):
        return False
    raise ValueError(f"boolean unmarshal error: invalid input {text}")


def split_args(args: str) -> list[tuple[str, str]]:
    """The pairs of CNI_ARGS, in order; a pair without exactly one `=` is an error."""
    pairs = []
    for pair in args.split(";") if args else []:
        kv = pair.split("=")
        if len(kv) != 2:
            raise fail(f"ARGS: invalid pair {gojson.quote(pair)}")
        pairs.append((kv[0], kv[1]))
    return pairs


def load_args(args: str, known: tuple[str, ...] = ()) -> dict[str, str]:
    """The values of the `known` keys; raises a plugin error (999) with LoadArgs's message."""
    out: dict[str, str] = {}
    unknown: list[str] = []
    ignore = False
    for key, value in split_args(args):
        if key == "IgnoreUnknown":
            try:
                ignore = parse_bool(value)
            except ValueError as exc:
                raise fail(f"ARGS: error parsing value of pair {gojson.quote(key + '=' + value)}: {exc}") from None
            continue
        if key not in known:
            unknown.append(f"{key}={value}")
            continue
        out[key] = value
    if unknown and not ignore:
        raise fail(f"ARGS: unknown args {gojson.quote_list(unknown)}")
    return out
